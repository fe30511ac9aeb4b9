"""Storing a finished track and its record, and saying where they are: the one place a
`GenerateResponse` is made.

The in-process service and the Lambda tier both end here; this module imports neither torch
nor numpy, so the Lambda package stays small.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from tunesmith.errors import TunesmithError
from tunesmith.schema import GenerateResponse, TrackRecord
from tunesmith.storage import Storage, new_key

__all__ = ["RECORD_TYPE", "now", "record_key", "store_track", "track_id"]

RECORD_TYPE = "application/json"

log = logging.getLogger(__name__)


def track_id(key: str) -> str:
    """The id of the track stored under `key` (``music-output/<id>.wav`` -> ``<id>``)."""
    return key.rsplit("/", 1)[-1].split(".", 1)[0]


def record_key(key: str) -> str:
    """The key of the record beside the track stored under `key` (``<prefix><id>.json``)."""
    return key.rsplit(".", 1)[0] + ".json"


def now() -> str:
    """The current time as a record writes it (ISO 8601, UTC, seconds)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def store_track(
    storage: Storage,
    prefix: str,
    audio: bytes,
    record: TrackRecord,
    *,
    base_url: str | None = None,
) -> GenerateResponse:
    """Store encoded `audio` under a fresh key and `record` beside it, then describe them.

    Each `put` is atomic, and a record that cannot be stored takes its audio with it: a track
    is never left without its record."""
    key = new_key(prefix, record.format)
    record = record.model_copy(update={"id": track_id(key), "audio_key": key})
    storage.put(key, audio, record.content_type)
    meta = record_key(key)
    try:
        storage.put(meta, record.model_dump_json(indent=2).encode(), RECORD_TYPE)
    except TunesmithError:
        try:
            storage.delete(key)
        except TunesmithError:
            log.error("could not remove %s after its record failed to store", key)
        raise
    where = storage.locate(key, base_url=base_url)
    return GenerateResponse(
        id=record.id,
        s3_url=where.s3_url,
        public_url=where.public_url,
        duration=record.duration,
        sample_rate=record.sample_rate,
        channels=record.channels,
        format=record.format,
        model=record.model,
        seed=record.seed,
        metadata_url=storage.locate(meta, base_url=base_url).public_url,
    )
