"""Storing a finished track and saying where it is: the one place a `GenerateResponse` is made.

The in-process service and the Lambda tier both end here; this module imports neither torch
nor numpy, so the Lambda package stays small.
"""

from __future__ import annotations

from tunesmith.schema import AudioFormat, GenerateResponse
from tunesmith.storage import Storage, new_key

__all__ = ["store_track", "track_id"]


def track_id(key: str) -> str:
    """The id of the track stored under `key` (``music-output/<id>.wav`` -> ``<id>``)."""
    return key.rsplit("/", 1)[-1].split(".", 1)[0]


def store_track(
    storage: Storage,
    prefix: str,
    audio: bytes,
    content_type: str,
    *,
    fmt: AudioFormat,
    duration: float,
    sample_rate: int,
    channels: int,
    model: str,
    seed: int,
    base_url: str | None = None,
) -> GenerateResponse:
    """Store encoded `audio` under a fresh key (atomically) and describe it for the caller."""
    key = new_key(prefix, fmt)
    storage.put(key, audio, content_type)
    where = storage.locate(key, base_url=base_url)
    return GenerateResponse(
        id=track_id(key),
        s3_url=where.s3_url,
        public_url=where.public_url,
        duration=duration,
        sample_rate=sample_rate,
        channels=channels,
        format=fmt,
        model=model,
        seed=seed,
    )
