"""Who may spend compute or see tracks: API keys, and a rate limit per caller.

Keys come from ``TUNESMITH_API_KEY`` (one, or several comma-separated) and
``TUNESMITH_API_KEYS_FILE`` (one per line, ``#`` comments). A given key is compared with every
configured key in constant time (`hmac.compare_digest`, and no early exit), so the time taken
tells nothing of which key, or how much of one, matched.

The rate limit (``TUNESMITH_RATE_LIMIT`` requests a minute, a token bucket of that size) counts
per key, or per client address where the server has no keys. Past it: 429 with the seconds
until the next request is allowed in ``Retry-After``.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from pathlib import Path

from tunesmith.config import Settings
from tunesmith.errors import ConfigError, RateLimited, Unauthorized

__all__ = ["ApiKeys", "RateLimit", "given_key"]


class ApiKeys:
    """The keys a server takes; `identify` names the caller a key belongs to."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = [key.encode() for key in dict.fromkeys(keys)]

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeys:
        keys = []
        if settings.api_key is not None:
            keys += [k.strip() for k in settings.api_key.get_secret_value().split(",")]
        if settings.api_keys_file is not None:
            keys += _read_keys(settings.api_keys_file)
        keys = [key for key in keys if key]
        if (settings.api_key is not None or settings.api_keys_file is not None) and not keys:
            raise ConfigError("TUNESMITH_API_KEY / TUNESMITH_API_KEYS_FILE: no key in them")
        return cls(keys)

    @property
    def required(self) -> bool:
        return bool(self._keys)

    def identify(self, given: str | None) -> str:
        """A name for the caller holding `given` (not the key itself); `Unauthorized` when it
        is no key of this server's."""
        candidate = (given or "").encode()
        matched = -1
        for index, key in enumerate(self._keys):  # every key, whether or not one matched
            if hmac.compare_digest(candidate, key):
                matched = index
        if given is None or matched < 0:
            raise Unauthorized("missing or wrong API key (send 'Authorization: Bearer <key>')")
        return "key:" + hashlib.sha256(self._keys[matched]).hexdigest()[:12]


def given_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a request carries: ``X-API-Key``, else ``Authorization: Bearer <key>``."""
    if x_api_key is not None:
        return x_api_key
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


def _read_keys(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"TUNESMITH_API_KEYS_FILE: cannot read {path}: {exc}") from None
    return [line.strip() for line in text.splitlines() if not line.lstrip().startswith("#")]


class RateLimit:
    """A token bucket per caller: `per_minute` requests a minute, up to `per_minute` at once."""

    def __init__(self, per_minute: float | None, max_callers: int = 10_000) -> None:
        self.per_minute = per_minute
        self.max_callers = max_callers
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, when)
        self._lock = threading.Lock()

    def take(self, caller: str) -> None:
        """Count one request of `caller`'s, or raise `RateLimited` (429) without counting it."""
        if not self.per_minute:
            return
        rate = self.per_minute / 60.0
        now = time.monotonic()
        with self._lock:
            tokens, when = self._buckets.get(caller, (self.per_minute, now))
            tokens = min(self.per_minute, tokens + (now - when) * rate)
            if tokens < 1:
                self._buckets[caller] = (tokens, now)
                wait = math.ceil((1 - tokens) / rate)
                raise RateLimited(
                    f"more than {self.per_minute:g} requests a minute; try again in {wait} s",
                    retry_after=wait,
                )
            self._buckets[caller] = (tokens - 1, now)
            if len(self._buckets) > self.max_callers:  # forget the callers idle longest
                for stale in sorted(self._buckets, key=lambda c: self._buckets[c][1])[
                    : len(self._buckets) - self.max_callers
                ]:
                    del self._buckets[stale]
