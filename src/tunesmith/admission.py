"""Bounded admission: at most `limit` requests in flight, and a bounded queue before them.

The one place both HTTP tiers (`tunesmith serve` and `tunesmith endpoint`) count requests.
`admit` takes a slot or refuses at once (`Overloaded`, 503); `queued` waits its turn, first
come first served, for up to `timeout` seconds, behind at most `waiting` others. Its refusals
carry a ``Retry-After`` worked out from the queue: the requests ahead, in turns of `limit`, at
the average time a request has held its slot.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import anyio

from tunesmith.errors import Overloaded

__all__ = ["Admission"]

_POLL = 0.01  # seconds between a waiting request's looks at the queue


class Admission:
    """Counts requests in flight, and the queue waiting for them (thread-safe)."""

    def __init__(
        self, limit: int, *, waiting: int = 0, timeout: float = 0.0, retry_after: int = 30
    ) -> None:
        self.limit = limit
        self.max_waiting = waiting
        self.timeout = timeout
        self.retry_after = retry_after  # until a request has been timed
        self._in_flight = 0
        self._queue: deque[object] = deque()
        self._held_seconds: float | None = None  # a moving average of slot hold times
        self._lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def retry_estimate(self) -> int:
        """Seconds until a request sent now would likely get a slot."""
        if self._held_seconds is None:
            return self.retry_after
        turns = (len(self._queue) + self._in_flight) / self.limit
        return max(1, min(3600, math.ceil(turns * self._held_seconds)))

    def _overloaded(self, why: str) -> Overloaded:
        return Overloaded(f"{why}; try again later", retry_after=self.retry_estimate())

    def admit(self) -> None:
        """Count one more request in, or raise `Overloaded` without counting it."""
        with self._lock:
            if self._in_flight >= self.limit or self._queue:
                raise self._overloaded(f"{self.limit} requests are already in progress")
            self._in_flight += 1

    def release(self, held: float | None = None) -> None:
        """Count one admitted request out (`held`: how long it had its slot)."""
        with self._lock:
            self._in_flight -= 1
            if held is not None:
                last = self._held_seconds
                self._held_seconds = held if last is None else 0.8 * last + 0.2 * held

    @contextmanager
    def held(self) -> Iterator[None]:
        """Admit one request for the block, or raise `Overloaded` without admitting it."""
        self.admit()
        began = time.monotonic()
        try:
            yield
        finally:
            self.release(time.monotonic() - began)

    @asynccontextmanager
    async def queued(self, timeout: float | None = None) -> AsyncIterator[None]:
        """Hold a slot for the block, waiting in turn for one; `Overloaded` when the queue
        is full or the wait would pass `timeout` (at most the admission's own)."""
        timeout = self.timeout if timeout is None else min(timeout, self.timeout)
        turn = object()
        with self._lock:
            busy = self._in_flight >= self.limit or self._queue
            if busy and (len(self._queue) >= self.max_waiting or timeout <= 0):
                raise self._overloaded(
                    f"{self._in_flight} requests in progress and {len(self._queue)} waiting"
                )
            self._queue.append(turn)
        deadline = time.monotonic() + timeout
        try:
            while True:
                with self._lock:
                    if self._queue[0] is turn and self._in_flight < self.limit:
                        self._queue.popleft()
                        self._in_flight += 1
                        break
                if time.monotonic() >= deadline:
                    raise self._overloaded(f"no slot came free within {timeout:g} s")
                await anyio.sleep(_POLL)
        except BaseException:  # timed out, or the caller went away: leave the queue
            with self._lock:
                if turn in self._queue:
                    self._queue.remove(turn)
            raise
        began = time.monotonic()
        try:
            yield
        finally:
            self.release(time.monotonic() - began)
