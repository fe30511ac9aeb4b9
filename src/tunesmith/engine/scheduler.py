"""Dynamic batching: one decode thread steps every in-flight request together.

Requests are queued as prepared jobs (`StepJob`, e.g. `tunesmith.engine.musicgen.model.DecodeJob`).
When the decoder is idle, the first arrival waits up to a short collection window for company;
after that, queued requests join the running batch at the next step (up to ``max_batch``), and
a request that finishes leaves it without stalling the others. Each request keeps its own
duration, seed and sampling params. A step that raises is run again job by job, so only a
request that fails alone fails. A ticket whose `cancel` event is set leaves the batch before
the next step and fails with `Canceled`.

The decode thread is also the engine's only compute thread: `call` runs other work there
(encoding a prompt, a chunk of EnCodec decoding), one task between two steps. Every thread
that runs a parallel torch operator or kernel keeps its own OpenMP team alive, and libgomp
counts those teams' threads: once they outnumber the CPUs it spins ~100 times instead of
~300,000 before a waiting thread sleeps, and every one of a step's ~170 parallel regions then
pays for waking a sleeping thread: one compute thread keeps the steps fast.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from tunesmith.errors import Canceled, GenerationFailed, ModelNotReady

__all__ = ["BatchScheduler", "StepDecoder", "StepJob", "Ticket"]

log = logging.getLogger(__name__)

StepCallback = Callable[[int, int], None]
T = TypeVar("T")


class StepJob(Protocol):
    """What the scheduler reads of a job: its position, its length, whether it is done."""

    @property
    def t(self) -> int: ...
    @property
    def steps(self) -> int: ...
    @property
    def done(self) -> bool: ...


class StepDecoder(Protocol):
    """What the scheduler drives: one step of every job it is given (`FastDecoder`).

    `step` advances each job by one position, never a job that is `done`. A step that raises
    leaves every job either advanced by exactly one or as it was, ready to be stepped again:
    `FastDecoder` rewrites the cache slot of the position it is at and moves a job's `t` last,
    once its token is written, so a failure in the shared forward pass advances no job and one
    in a job's sampling advances only the jobs sampled before it. The scheduler reads which
    jobs moved, and steps each of the others alone to find out which of them fails by itself.
    """

    def step(self, jobs: list[Any]) -> None: ...


class _Task:
    """A function to run on the decode thread, and its outcome."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # handed to the caller, who raises it
            self.error = exc
        finally:
            self.done.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()


class Ticket:
    """A queued job: `wait` blocks until its codes are complete (or raises its error)."""

    def __init__(
        self, job: StepJob, progress: StepCallback | None, cancel: threading.Event | None = None
    ) -> None:
        self.job = job
        self.progress = progress
        self.cancel = cancel
        self._done = threading.Event()
        self._error: BaseException | None = None

    def _finish(self, error: BaseException | None = None) -> None:
        self._error = error
        self._done.set()

    @property
    def canceled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def _report(self) -> None:
        if self.progress is not None:
            try:
                self.progress(self.job.t, self.job.steps)
            except Exception:  # a broken progress display must not stop the batch
                log.exception("progress callback failed")
                self.progress = None

    def wait(self, timeout: float | None = None) -> StepJob:
        """The finished job; raises its error, or `TimeoutError` after `timeout` seconds."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"the job did not finish within {timeout} s")
        if self._error is not None:
            raise self._error
        return self.job


class BatchScheduler:
    """Runs `StepDecoder.step` over the in-flight jobs, and the engine's other compute
    (`call`), in one background thread."""

    def __init__(self, decoder: StepDecoder, max_batch: int = 8, window: float = 0.02) -> None:
        self.decoder = decoder
        self.max_batch = max_batch
        self.window = window
        self._pending: deque[Ticket] = deque()
        self._tasks: deque[_Task] = deque()
        self._active: list[Ticket] = []
        self._cond = threading.Condition()
        self._closed = False
        self._deadline: float | None = None  # end of an idle decoder's collection window
        self.steps_run = 0
        self.batch_sizes: dict[int, int] = {}  # batch size -> steps run at that size
        self._thread = threading.Thread(target=self._run, name="tunesmith-decode", daemon=True)
        self._thread.start()

    @property
    def in_flight(self) -> int:
        with self._cond:
            return len(self._pending) + len(self._active)

    def submit(
        self,
        job: StepJob,
        progress: StepCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Ticket:
        """Queue `job`; `progress` gets ``(t, steps)`` after each of its steps, on this
        scheduler's thread. Setting `cancel` drops the job before its next step."""
        ticket = Ticket(job, progress, cancel)
        with self._cond:
            if self._closed:
                raise ModelNotReady("the engine is shutting down", retry_after=30)
            self._pending.append(ticket)
            self._cond.notify()
        return ticket

    def call(self, fn: Callable[[], T]) -> T:
        """`fn()`, run on the decode thread between two steps (blocking; raises its error)."""
        if threading.current_thread() is self._thread:
            return fn()
        task = _Task(fn)
        with self._cond:
            if self._closed:
                raise ModelNotReady("the engine is shutting down", retry_after=30)
            self._tasks.append(task)
            self._cond.notify()
        task.done.wait()
        if task.error is not None:
            raise task.error
        result: T = task.result
        return result

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=60)

    def _admit(self) -> bool:
        """Move pending tickets into the batch; False when closed. Holds the condition.

        An idle decoder's collection window is cut short by a task: the task runs (often the
        prompt of a request about to join) and the window resumes where it was."""
        while not self._closed and not self._pending and not self._active and not self._tasks:
            self._cond.wait()
        if self._closed:
            return False
        if not self._active and self._pending and self.window > 0:
            if self._deadline is None:
                self._deadline = time.monotonic() + self.window
            while len(self._pending) < self.max_batch and not self._closed and not self._tasks:
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            window_left = time.monotonic() < self._deadline
            if self._tasks and len(self._pending) < self.max_batch and window_left:
                return not self._closed  # the window goes on after the task
        self._deadline = None
        while self._pending and len(self._active) < self.max_batch:
            self._active.append(self._pending.popleft())
        return not self._closed

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._admit():
                    break
                task = self._tasks.popleft() if self._tasks else None
                batch = list(self._active)
            if task is not None:
                task.run()
            if batch:
                self._step(batch)
        with self._cond:
            leftovers = list(self._pending) + self._active
            tasks = list(self._tasks)
            self._pending.clear()
            self._tasks.clear()
            self._active = []
        for ticket in leftovers:
            ticket._finish(ModelNotReady("the engine shut down", retry_after=30))
        for task in tasks:
            task.fail(ModelNotReady("the engine shut down", retry_after=30))

    def _step(self, batch: list[Ticket]) -> None:
        """One decode step of `batch`; finished, failed or canceled tickets leave it."""
        canceled = [ticket for ticket in batch if ticket.canceled]
        if canceled:
            with self._cond:
                self._active = [t for t in self._active if t not in canceled]
            for ticket in canceled:
                ticket._finish(Canceled("the request was canceled"))
            batch = [ticket for ticket in batch if ticket not in canceled]
            if not batch:
                return
        stepped, failed = self._advance(batch)
        finished = []
        for ticket in stepped:
            ticket._report()
            if ticket.job.done:
                finished.append(ticket)
        leaving = finished + [ticket for ticket, _ in failed]
        if leaving:
            with self._cond:
                self._active = [t for t in self._active if t not in leaving]
        for ticket, error in failed:
            ticket._finish(error)
        for ticket in finished:
            ticket._finish()

    def _advance(
        self, batch: list[Ticket]
    ) -> tuple[list[Ticket], list[tuple[Ticket, GenerationFailed]]]:
        """Step `batch` once: the tickets that advanced, and those that failed with their error.

        When a batched step raises, the jobs it left where they were are stepped one by one,
        so a job that cannot be decoded fails alone and the others keep their step."""
        before = [ticket.job.t for ticket in batch]
        try:
            self.decoder.step([ticket.job for ticket in batch])
        except Exception as exc:
            if len(batch) == 1:
                log.exception("decode step failed")
                return [], [(batch[0], GenerationFailed(f"generation failed: {exc}"))]
            log.warning(
                "decode step failed for a batch of %d (%s): stepping its jobs alone",
                len(batch),
                exc,
            )
            stepped: list[Ticket] = []
            failed: list[tuple[Ticket, GenerationFailed]] = []
            for ticket, t in zip(batch, before, strict=True):
                if ticket.job.t != t:  # advanced before the step raised: not to be run twice
                    stepped.append(ticket)
                    continue
                ok, errors = self._advance([ticket])
                stepped += ok
                failed += errors
            return stepped, failed
        self.steps_run += 1
        self.batch_sizes[len(batch)] = self.batch_sizes.get(len(batch), 0) + 1
        return batch, []
