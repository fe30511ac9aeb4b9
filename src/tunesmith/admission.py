"""Bounded admission: at most `limit` requests in flight; beyond that, `Overloaded` (503).

The one place both HTTP tiers (`tunesmith serve` and `tunesmith endpoint`) count requests.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tunesmith.errors import Overloaded

__all__ = ["Admission"]


class Admission:
    """Counts requests in flight and refuses one more than `limit` (thread-safe)."""

    def __init__(self, limit: int, retry_after: int = 30) -> None:
        self.limit = limit
        self.retry_after = retry_after
        self._in_flight = 0
        self._lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def admit(self) -> None:
        """Count one more request in, or raise `Overloaded` without counting it."""
        with self._lock:
            if self._in_flight >= self.limit:
                raise Overloaded(
                    f"{self.limit} requests are already in progress; try again later",
                    retry_after=self.retry_after,
                )
            self._in_flight += 1

    def release(self) -> None:
        """Count one admitted request out."""
        with self._lock:
            self._in_flight -= 1

    @contextmanager
    def held(self) -> Iterator[None]:
        """Admit one request for the block, or raise `Overloaded` without admitting it."""
        self.admit()
        try:
            yield
        finally:
            self.release()
