"""The batch scheduler against a fake decoder: windows, batch limits, joining, leaving, errors.

The fake implements the step protocol (`StepDecoder` / `StepJob`) and records which jobs each
successful step held. Its gate lets a test stop the decode thread inside a chosen step, so
what happens between two steps is decided by the test, not by thread timing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import pytest

from tunesmith.engine.scheduler import BatchScheduler, Ticket
from tunesmith.errors import Canceled, GenerationFailed, ModelNotReady

T = TypeVar("T")
TIMEOUT = 5.0  # bounds every wait: a scheduler bug fails the test instead of hanging it


@dataclass(eq=False)
class FakeJob:
    name: str
    steps: int
    t: int = 0

    @property
    def done(self) -> bool:
        return self.t >= self.steps


class FakeDecoder:
    """Advances each job by one per step and records the names of the jobs in each step.

    `poison` maps a job's name to the position from which stepping it raises. By default the
    step raises before advancing any job (a failed forward pass); with `late`, jobs are advanced
    one by one and the poisoned one raises with those before it already advanced (a failure in
    `FastDecoder`'s per-job sampling). `fail_batched` batched steps raise before advancing.
    `hold` makes every step wait at a gate until `release` lets it through."""

    def __init__(
        self, poison: dict[str, int] | None = None, late: bool = False, fail_batched: int = 0
    ) -> None:
        self.poison = poison or {}
        self.late = late
        self.fail_batched = fail_batched
        self.steps: list[list[str]] = []  # the jobs of each step that did not raise
        self.started: list[float] = []  # when each step call began
        self.violations: list[str] = []  # protocol breaches seen; checked after every test
        self.entered = 0  # step calls begun, including one waiting at the gate
        self.in_step = False
        self._cond = threading.Condition()
        self._permits: int | None = None  # steps allowed through the gate; None: all

    def hold(self) -> None:
        with self._cond:
            self._permits = 0

    def release(self, steps: int | None = None) -> None:
        """Let `steps` more steps through the gate (all of them when None)."""
        with self._cond:
            self._permits = None if steps is None else (self._permits or 0) + steps
            self._cond.notify_all()

    def wait_entered(self, calls: int) -> None:
        """Until step call number `calls` has begun (every earlier one is over)."""
        with self._cond:
            assert self._cond.wait_for(lambda: self.entered >= calls, TIMEOUT), self.entered

    def step(self, jobs: list[FakeJob]) -> None:
        with self._cond:
            self.entered += 1
            self.in_step = True
            self.started.append(time.monotonic())
            self._cond.notify_all()
            if not self._cond.wait_for(lambda: self._permits is None or self._permits > 0, TIMEOUT):
                self.violations.append("a step waited at the gate until it timed out")
            if self._permits:
                self._permits -= 1
        try:
            self._step(jobs)
        finally:
            with self._cond:
                self.in_step = False

    def _step(self, jobs: list[FakeJob]) -> None:
        for job in jobs:
            if job.done:
                self.violations.append(f"{job.name} was stepped when done")
        if self.fail_batched and len(jobs) > 1:
            self.fail_batched -= 1
            raise RuntimeError("out of memory for the batch")
        if not self.late:
            for job in jobs:
                self._check(job)
        for job in jobs:
            if self.late:
                self._check(job)
            job.t += 1
        self.steps.append([job.name for job in jobs])

    def _check(self, job: FakeJob) -> None:
        if job.name in self.poison and job.t >= self.poison[job.name]:
            raise RuntimeError(f"{job.name} is poisoned")


Factory = Callable[..., tuple[BatchScheduler, FakeDecoder]]


@pytest.fixture
def make() -> Iterator[Factory]:
    """`make(decoder=None, max_batch=8, window=0.0)`: a scheduler, closed after the test."""
    made: list[tuple[BatchScheduler, FakeDecoder]] = []

    def factory(
        decoder: FakeDecoder | None = None, *, max_batch: int = 8, window: float = 0.0
    ) -> tuple[BatchScheduler, FakeDecoder]:
        decoder = decoder or FakeDecoder()
        scheduler = BatchScheduler(decoder, max_batch=max_batch, window=window)
        made.append((scheduler, decoder))
        return scheduler, decoder

    yield factory
    for scheduler, decoder in made:
        decoder.release()
        scheduler.close()
        assert decoder.violations == []


def in_thread(fn: Callable[[], T]) -> Future[T]:
    """`fn()` in a thread of its own; read its outcome with ``result(TIMEOUT)``."""
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:  # handed to whoever reads the future
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return future


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def queued_tasks(scheduler: BatchScheduler) -> int:
    with scheduler._cond:
        return len(scheduler._tasks)


@contextmanager
def decode_thread_held(scheduler: BatchScheduler) -> Iterator[None]:
    """Keep the decode thread busy in a `call`, so what is submitted meanwhile waits together."""
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        release.wait(TIMEOUT)

    outcome = in_thread(lambda: scheduler.call(hold))
    assert entered.wait(TIMEOUT)
    try:
        yield
    finally:
        release.set()
        outcome.result(TIMEOUT)


def submit(scheduler: BatchScheduler, *jobs: FakeJob) -> list[Ticket]:
    return [scheduler.submit(job) for job in jobs]


def finish(tickets: list[Ticket]) -> None:
    for ticket in tickets:
        ticket.wait(TIMEOUT)


def steps_of(decoder: FakeDecoder, job: FakeJob) -> list[int]:
    return [i for i, names in enumerate(decoder.steps) if job.name in names]


def assert_ran_consecutively(decoder: FakeDecoder, job: FakeJob) -> None:
    at = steps_of(decoder, job)
    assert at == list(range(at[0], at[0] + job.steps)), (job.name, decoder.steps)
    assert job.t == job.steps


# the collection window ---------------------------------------------------------------------


def test_requests_arriving_within_the_window_share_the_first_step(make: Factory) -> None:
    scheduler, decoder = make(window=0.3)
    jobs = [FakeJob(name, 2) for name in "abc"]
    finish(submit(scheduler, *jobs))
    assert decoder.steps == [["a", "b", "c"]] * 2


def test_a_lone_request_waits_for_the_window_and_no_longer(make: Factory) -> None:
    window = 0.15
    scheduler, decoder = make(window=window)
    submitted = time.monotonic()
    finish(submit(scheduler, FakeJob("a", 1)))
    waited = decoder.started[0] - submitted
    assert window * 0.99 <= waited < window + 1.0  # generous above: a loaded machine is slow


def test_a_full_batch_ends_the_window_at_once(make: Factory) -> None:
    scheduler, decoder = make(window=60, max_batch=3)
    finish(submit(scheduler, *(FakeJob(name, 1) for name in "abc")))  # long before 60 s
    assert decoder.steps == [["a", "b", "c"]]


def test_a_call_during_the_window_runs_at_once_and_the_window_goes_on(make: Factory) -> None:
    scheduler, decoder = make(window=60, max_batch=2)
    first = scheduler.submit(FakeJob("a", 1))
    assert in_thread(lambda: scheduler.call(lambda: decoder.entered)).result(TIMEOUT) == 0
    second = scheduler.submit(FakeJob("b", 1))  # fills the batch the window was collecting
    finish([first, second])
    assert decoder.steps == [["a", "b"]]


# batch size --------------------------------------------------------------------------------


def test_no_batch_exceeds_max_batch_and_queued_jobs_take_freed_slots(make: Factory) -> None:
    scheduler, decoder = make(max_batch=2)
    jobs = [FakeJob("j1", 2), FakeJob("j2", 4), FakeJob("j3", 3), FakeJob("j4", 1)]
    jobs.append(FakeJob("j5", 2))
    with decode_thread_held(scheduler):
        tickets = submit(scheduler, *jobs)
        assert scheduler.in_flight == 5
    finish(tickets)
    assert decoder.steps == [
        ["j1", "j2"],
        ["j1", "j2"],  # j1 is done: j3 takes its slot
        ["j2", "j3"],
        ["j2", "j3"],  # j2 is done: j4 takes its slot
        ["j3", "j4"],  # both done: j5 runs alone
        ["j5"],
        ["j5"],
    ]
    for job in jobs:
        assert_ran_consecutively(decoder, job)
    assert scheduler.in_flight == 0
    assert scheduler.steps_run == 7
    assert scheduler.batch_sizes == {2: 5, 1: 2}


# joining and leaving -----------------------------------------------------------------------


def test_a_job_joins_a_running_batch_at_the_next_step(make: Factory) -> None:
    decoder = FakeDecoder()
    decoder.hold()
    scheduler, _ = make(decoder)
    long, short = FakeJob("long", 6), FakeJob("short", 2)
    first = scheduler.submit(long)
    decoder.release(2)
    decoder.wait_entered(3)  # held inside the third step
    second = scheduler.submit(short)
    decoder.release()
    finish([first, second])
    assert decoder.steps == [["long"]] * 3 + [["long", "short"]] * 2 + [["long"]]
    assert_ran_consecutively(decoder, long)
    assert_ran_consecutively(decoder, short)


def test_a_finished_job_leaves_and_its_wait_returns_while_the_others_run(
    make: Factory,
) -> None:
    decoder = FakeDecoder()
    scheduler, _ = make(decoder)
    long, short = FakeJob("long", 5), FakeJob("short", 2)
    decoder.hold()
    with decode_thread_held(scheduler):
        long_ticket, short_ticket = submit(scheduler, long, short)
    decoder.release(2)
    assert short_ticket.wait(TIMEOUT) is short  # while the third step is held at the gate
    decoder.wait_entered(3)
    with pytest.raises(TimeoutError):
        long_ticket.wait(0)
    assert long.t == 2
    assert scheduler.in_flight == 1
    decoder.release()
    assert long_ticket.wait(TIMEOUT) is long
    assert decoder.steps == [["long", "short"]] * 2 + [["long"]] * 3


def test_a_canceled_job_leaves_at_the_next_step_and_the_others_run_on(make: Factory) -> None:
    decoder = FakeDecoder()
    decoder.hold()
    scheduler, _ = make(decoder)
    keep, drop = FakeJob("keep", 5), FakeJob("drop", 5)
    cancel = threading.Event()
    with decode_thread_held(scheduler):
        kept = scheduler.submit(keep)
        dropped = scheduler.submit(drop, cancel=cancel)
    decoder.release(2)
    decoder.wait_entered(3)  # held inside the third step, which holds both
    cancel.set()
    decoder.release()
    with pytest.raises(Canceled):
        dropped.wait(TIMEOUT)
    assert kept.wait(TIMEOUT) is keep
    assert drop.t == 3  # the step it was in finished; no step after it ran it
    assert decoder.steps == [["keep", "drop"]] * 3 + [["keep"]] * 2
    assert scheduler.in_flight == 0


def test_a_job_canceled_while_queued_never_steps(make: Factory) -> None:
    scheduler, decoder = make(max_batch=1)
    first, queued = FakeJob("first", 3), FakeJob("queued", 3)
    cancel = threading.Event()
    with decode_thread_held(scheduler):
        tickets = [scheduler.submit(first), scheduler.submit(queued, cancel=cancel)]
        cancel.set()
    with pytest.raises(Canceled):
        tickets[1].wait(TIMEOUT)
    assert tickets[0].wait(TIMEOUT) is first
    assert queued.t == 0
    assert all("queued" not in names for names in decoder.steps)


# errors --------------------------------------------------------------------------------------


def test_a_failing_job_fails_alone_and_its_batch_mates_finish(make: Factory) -> None:
    decoder = FakeDecoder(poison={"bad": 1})  # its second step raises
    scheduler, _ = make(decoder)
    a, bad, c = FakeJob("a", 3), FakeJob("bad", 3), FakeJob("c", 3)
    progress: list[tuple[int, int]] = []
    with decode_thread_held(scheduler):
        tickets = [
            scheduler.submit(a, lambda t, n: progress.append((t, n))),
            scheduler.submit(bad),
            scheduler.submit(c),
        ]
    with pytest.raises(GenerationFailed, match="bad is poisoned"):
        tickets[1].wait(TIMEOUT)
    assert tickets[0].wait(TIMEOUT) is a
    assert tickets[2].wait(TIMEOUT) is c
    assert bad.t == 1
    # the batched step raised and ran nobody; each job then stepped once alone
    assert decoder.steps == [["a", "bad", "c"], ["a"], ["c"], ["a", "c"]]
    assert (a.t, c.t) == (3, 3)
    assert progress == [(1, 3), (2, 3), (3, 3)]
    # and the scheduler serves on
    late = FakeJob("late", 2)
    assert scheduler.submit(late).wait(TIMEOUT) is late
    assert scheduler.in_flight == 0


def test_a_step_that_fails_after_advancing_some_jobs_runs_none_of_them_again(
    make: Factory,
) -> None:
    # as FastDecoder's per-job sampling: the jobs before the failing one have moved on
    decoder = FakeDecoder(poison={"bad": 1}, late=True)
    scheduler, _ = make(decoder)
    early, bad, after = FakeJob("early", 2), FakeJob("bad", 3), FakeJob("after", 3)
    progress: dict[str, list[int]] = {"early": [], "after": []}
    with decode_thread_held(scheduler):
        tickets = [
            scheduler.submit(early, lambda t, n: progress["early"].append(t)),
            scheduler.submit(bad),
            scheduler.submit(after, lambda t, n: progress["after"].append(t)),
        ]
    assert tickets[0].wait(TIMEOUT) is early  # done by the step that raised: not stepped again
    with pytest.raises(GenerationFailed, match="bad is poisoned"):
        tickets[1].wait(TIMEOUT)
    assert tickets[2].wait(TIMEOUT) is after
    assert progress == {"early": [1, 2], "after": [1, 2, 3]}
    assert decoder.steps == [["early", "bad", "after"], ["after"], ["after"]]


def test_a_batch_that_fails_as_a_whole_fails_no_job_that_steps_alone(make: Factory) -> None:
    decoder = FakeDecoder(fail_batched=1)  # as a batch running out of memory once
    scheduler, _ = make(decoder)
    a, b = FakeJob("a", 2), FakeJob("b", 2)
    with decode_thread_held(scheduler):
        tickets = submit(scheduler, a, b)
    finish(tickets)
    assert decoder.steps == [["a"], ["b"], ["a", "b"]]
    assert scheduler.batch_sizes == {1: 2, 2: 1}


def test_a_lone_job_that_fails_leaves_the_scheduler_serving(make: Factory) -> None:
    scheduler, decoder = make(FakeDecoder(poison={"bad": 0}))
    with pytest.raises(GenerationFailed, match="bad is poisoned"):
        scheduler.submit(FakeJob("bad", 2)).wait(TIMEOUT)
    good = FakeJob("good", 2)
    assert scheduler.submit(good).wait(TIMEOUT) is good
    assert decoder.steps == [["good"]] * 2
    assert scheduler.in_flight == 0


# work on the decode thread -----------------------------------------------------------------


def test_calls_run_on_the_decode_thread_one_between_two_steps(make: Factory) -> None:
    decoder = FakeDecoder()
    decoder.hold()
    scheduler, _ = make(decoder)
    job = FakeJob("a", 4)
    ticket = scheduler.submit(job)
    decoder.release(1)
    decoder.wait_entered(2)  # held inside the second step

    def probe() -> tuple[str, int, bool]:
        return threading.current_thread().name, len(decoder.steps), decoder.in_step

    calls = [in_thread(lambda: scheduler.call(probe)) for _ in range(2)]
    wait_until(lambda: queued_tasks(scheduler) == 2)
    decoder.release()
    seen = sorted(call.result(TIMEOUT) for call in calls)
    # each ran outside a step, and a step ran between them: a queue of calls does not stall
    # the batch
    assert seen == [("tunesmith-decode", 2, False), ("tunesmith-decode", 3, False)]
    assert ticket.wait(TIMEOUT) is job
    assert_ran_consecutively(decoder, job)


def test_a_calls_result_and_error_reach_the_caller(make: Factory) -> None:
    scheduler, _ = make()
    assert scheduler.call(lambda: threading.current_thread().name) == "tunesmith-decode"
    with pytest.raises(ZeroDivisionError):
        scheduler.call(lambda: 1 // 0)
    # work on the decode thread may call again: it runs there and then, without queueing
    assert scheduler.call(lambda: scheduler.call(lambda: 7)) == 7
    job = FakeJob("a", 2)
    assert scheduler.submit(job).wait(TIMEOUT) is job  # the error hurt nothing


def test_close_fails_running_and_queued_work_with_model_not_ready(make: Factory) -> None:
    decoder = FakeDecoder()
    decoder.hold()
    scheduler, _ = make(decoder, max_batch=1)
    running = scheduler.submit(FakeJob("running", 3))
    decoder.wait_entered(1)
    queued = scheduler.submit(FakeJob("queued", 3))  # no free slot: waits in the queue
    task = in_thread(lambda: scheduler.call(lambda: "never run"))
    wait_until(lambda: queued_tasks(scheduler) == 1)
    closing = in_thread(scheduler.close)
    wait_until(lambda: scheduler._closed)
    decoder.release()
    closing.result(TIMEOUT)
    for ticket in (running, queued):
        with pytest.raises(ModelNotReady):
            ticket.wait(TIMEOUT)
    with pytest.raises(ModelNotReady):
        task.result(TIMEOUT)
    assert decoder.steps == [["running"]]
    with pytest.raises(ModelNotReady):
        scheduler.submit(FakeJob("after", 1))
    with pytest.raises(ModelNotReady):
        scheduler.call(lambda: None)


# progress ----------------------------------------------------------------------------------


def test_progress_is_reported_after_each_step(make: Factory) -> None:
    scheduler, decoder = make()
    seen: list[tuple[int, int, int, str]] = []

    def on_step(t: int, steps: int) -> None:
        seen.append((t, steps, len(decoder.steps), threading.current_thread().name))

    scheduler.submit(FakeJob("a", 3), on_step).wait(TIMEOUT)
    assert seen == [(t, 3, t, "tunesmith-decode") for t in (1, 2, 3)]


def test_a_progress_callback_that_raises_does_not_stop_the_batch(make: Factory) -> None:
    scheduler, decoder = make()
    broken, fine = FakeJob("broken", 3), FakeJob("fine", 3)
    calls: list[int] = []
    progress: list[int] = []

    def explode(t: int, steps: int) -> None:
        calls.append(t)
        raise ValueError("display gone")

    with decode_thread_held(scheduler):
        tickets = [
            scheduler.submit(broken, explode),
            scheduler.submit(fine, lambda t, n: progress.append(t)),
        ]
    assert tickets[0].wait(TIMEOUT) is broken
    assert tickets[1].wait(TIMEOUT) is fine
    assert calls[0] == 1
    assert progress == [1, 2, 3]
    assert decoder.steps == [["broken", "fine"]] * 3
