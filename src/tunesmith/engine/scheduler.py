"""Dynamic batching: one decode thread steps every in-flight request together.

Requests are queued as prepared `DecodeJob` s. When the decoder is idle, the first arrival
waits up to a short collection window for company; after that, queued requests join the
running batch at the next step (up to ``max_batch``), and a request that finishes leaves it
without stalling the others. Each request keeps its own duration, seed and sampling params.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from tunesmith.engine.decoder import DecodeJob, FastDecoder
from tunesmith.errors import GenerationFailed, ModelNotReady

__all__ = ["BatchScheduler", "Ticket"]

log = logging.getLogger(__name__)

StepCallback = Callable[[int, int], None]


class Ticket:
    """A queued job: `wait` blocks until its codes are complete (or raises its error)."""

    def __init__(self, job: DecodeJob, progress: StepCallback | None) -> None:
        self.job = job
        self.progress = progress
        self._done = threading.Event()
        self._error: BaseException | None = None

    def _finish(self, error: BaseException | None = None) -> None:
        self._error = error
        self._done.set()

    def _report(self) -> None:
        if self.progress is not None:
            try:
                self.progress(self.job.t, self.job.steps)
            except Exception:  # a broken progress display must not stop the batch
                log.exception("progress callback failed")
                self.progress = None

    def wait(self) -> DecodeJob:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self.job


class BatchScheduler:
    """Runs `FastDecoder.step` over the in-flight jobs in a background thread."""

    def __init__(self, decoder: FastDecoder, max_batch: int = 8, window: float = 0.02) -> None:
        self.decoder = decoder
        self.max_batch = max_batch
        self.window = window
        self._pending: deque[Ticket] = deque()
        self._active: list[Ticket] = []
        self._cond = threading.Condition()
        self._closed = False
        self.steps_run = 0
        self.batch_sizes: dict[int, int] = {}  # batch size -> steps run at that size
        self._thread = threading.Thread(target=self._run, name="tunesmith-decode", daemon=True)
        self._thread.start()

    @property
    def in_flight(self) -> int:
        with self._cond:
            return len(self._pending) + len(self._active)

    def submit(self, job: DecodeJob, progress: StepCallback | None = None) -> Ticket:
        ticket = Ticket(job, progress)
        with self._cond:
            if self._closed:
                raise ModelNotReady("the engine is shutting down", retry_after=30)
            self._pending.append(ticket)
            self._cond.notify()
        return ticket

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=60)

    def _admit(self) -> bool:
        """Move pending tickets into the batch; False when closed. Holds the condition."""
        while not self._closed and not self._pending and not self._active:
            self._cond.wait()
        if self._closed:
            return False
        if not self._active and self.window > 0:
            deadline = time.monotonic() + self.window
            while len(self._pending) < self.max_batch and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
        while self._pending and len(self._active) < self.max_batch:
            self._active.append(self._pending.popleft())
        return not self._closed

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._admit():
                    break
                batch = list(self._active)
            try:
                self.decoder.step([ticket.job for ticket in batch])
            except Exception as exc:
                log.exception("decode step failed for a batch of %d", len(batch))
                error = GenerationFailed(f"generation failed: {exc}")
                with self._cond:
                    self._active = [t for t in self._active if t not in batch]
                for ticket in batch:
                    ticket._finish(error)
                continue
            self.steps_run += 1
            self.batch_sizes[len(batch)] = self.batch_sizes.get(len(batch), 0) + 1
            finished = []
            for ticket in batch:
                ticket._report()
                if ticket.job.done:
                    finished.append(ticket)
            if finished:
                with self._cond:
                    self._active = [t for t in self._active if not t.job.done]
                for ticket in finished:
                    ticket._finish()
        with self._cond:
            leftovers = list(self._pending) + self._active
            self._pending.clear()
            self._active = []
        for ticket in leftovers:
            ticket._finish(ModelNotReady("the engine shut down", retry_after=30))
