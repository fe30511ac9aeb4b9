"""Storing a finished track and its record, and saying where they are: the one place a
`GenerateResponse` is made.

The in-process service and the Lambda tier both end here; this module imports neither torch
nor numpy, so the Lambda package stays small.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from tunesmith.errors import FieldError, InvalidRequest, NotFound, TunesmithError
from tunesmith.formats import FORMATS
from tunesmith.schema import (
    AudioFormat,
    GenerateRequest,
    GenerateResponse,
    InputRecord,
    TrackPage,
    TrackRecord,
    TrackSummary,
    job_key,
)
from tunesmith.storage import Storage, StoredObject, new_key

__all__ = [
    "RECORD_TYPE",
    "TRACK_ID",
    "delete_track",
    "describe_track",
    "list_tracks",
    "new_record",
    "now",
    "record_key",
    "store_track",
    "track_id",
]

RECORD_TYPE = "application/json"
TRACK_ID = re.compile(r"[0-9a-f]{32}")  # what `new_key` names a track (match with fullmatch)

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


def new_record(
    request: GenerateRequest,
    *,
    model: str,
    engine: dict[str, str],
    seed: int,
    fmt: AudioFormat,
    content_type: str,
    duration: float,
    sample_rate: int,
    channels: int,
    generation_seconds: float | None,
    inputs: dict[str, InputRecord],
    production: dict[str, Any] | None = None,
) -> TrackRecord:
    """A finished track's record, not yet stored (`store_track` fills its id and key): the
    request as it ran, its seed and format filled in. The one place a record is made, by the
    engine's renderer and by the Lambda tier from what its endpoint reported. `production` is
    what the producer fields' analysis found; the warnings and section map follow from it
    and the request."""
    analysis = dict(production or {})
    if request.sections:
        analysis["sections"] = request.section_map()
    return TrackRecord(
        id="",
        created=now(),
        request=request.model_copy(update={"seed": seed, "format": fmt}),
        model=model,
        engine=engine,
        seed=seed,
        duration=duration,
        sample_rate=sample_rate,
        channels=channels,
        format=fmt,
        content_type=content_type,
        audio_key="",
        generation_seconds=generation_seconds,
        inputs=inputs,
        production=analysis or None,
        warnings=request.production.warnings(analysis),
    )


def store_track(
    storage: Storage,
    prefix: str,
    audio: bytes,
    record: TrackRecord,
    *,
    base_url: str | None = None,
    key: str | None = None,
) -> GenerateResponse:
    """Store encoded `audio` under `key` (default: a fresh one) and `record` beside it, then
    describe them.

    Each `put` is atomic, and a record that cannot be stored takes its audio with it: a track
    is never left without its record."""
    key = key or new_key(prefix, record.format)
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
    return describe_track(storage, record, base_url=base_url)


def describe_track(
    storage: Storage,
    record: TrackRecord,
    *,
    base_url: str | None = None,
    record_at: str | None = None,
) -> GenerateResponse:
    """What a generate request answers for the stored track `record` describes; `record_at`
    is the record's key when it is not beside the audio (the async variant's)."""
    where = storage.locate(record.audio_key, base_url=base_url)
    meta = record_at or record_key(record.audio_key)
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
        production=record.production,
        warnings=record.warnings,
    )


def delete_track(storage: Storage, prefix: str, ident: str) -> None:
    """Remove the track `ident`: its audio, then its record.

    In that order, a failure part-way leaves the record, which the history still lists (its
    audio gone) and which a second delete finishes. Audio without a record (a store that
    failed part-way) is found by its name and removed too, and so is the record of the job
    that made the track (it holds the prompt too). `InvalidRequest` for a malformed id,
    `NotFound` when nothing of the track is stored."""
    if not TRACK_ID.fullmatch(ident):
        raise InvalidRequest([FieldError("id", "not a track id (32 lowercase hex digits)")])
    meta = f"{prefix}{ident}.json"
    audio = [f"{prefix}{ident}.{fmt}" for fmt in FORMATS]
    try:
        raw: bytes | None = storage.get(meta)
    except NotFound:
        raw = None
    if raw is not None:
        try:
            named = TrackRecord.model_validate_json(raw).audio_key
        except ValidationError:  # under a track's name but unreadable: it goes too
            named = None
        if named in audio:  # a record names only its own track's audio, never another's
            audio = [named]
    else:
        audio = [key for key in audio if storage.exists(key)]
        if not audio:
            raise NotFound(f"no track {ident}")
    for key in [*audio, job_key(ident)]:
        storage.delete(key)
    if raw is not None:
        storage.delete(meta)
    log.info("deleted track %s", ident)


def list_tracks(
    storage: Storage,
    prefix: str,
    *,
    limit: int,
    before: str | None = None,
    base_url: str | None = None,
) -> TrackPage:
    """The stored tracks, newest first (by when their record was written), `limit` at a time.

    `before` is the `TrackPage.next` of the page before. A record that cannot be read (being
    removed, or not a track's) is skipped."""
    records = [o for o in storage.list(prefix) if o.key.endswith(".json")]
    records.sort(key=_order, reverse=True)
    if before is not None:
        cursor = _parse_cursor(before, prefix)
        records = [o for o in records if _order(o) < cursor]
    tracks: list[TrackSummary] = []
    last: StoredObject | None = None
    for item in records:
        if len(tracks) == limit:
            return TrackPage(tracks=tracks, next=_cursor(last) if last else None)
        try:
            record = TrackRecord.model_validate_json(storage.get(item.key))
        except (NotFound, ValidationError):
            continue
        where = storage.locate(record.audio_key, base_url=base_url)
        meta = storage.locate(item.key, base_url=base_url)
        tracks.append(
            TrackSummary(
                id=record.id,
                created=record.created,
                public_url=where.public_url,
                metadata_url=meta.public_url,
                record=record,
            )
        )
        last = item
    return TrackPage(tracks=tracks, next=None)


def _order(item: StoredObject) -> tuple[float, str]:
    return (item.modified, item.key)


def _cursor(item: StoredObject) -> str:
    return f"{item.modified!r}_{track_id(item.key)}"


def _parse_cursor(cursor: str, prefix: str) -> tuple[float, str]:
    modified, _, ident = cursor.rpartition("_")
    try:
        when = float(modified)
    except ValueError:
        when = float("nan")
    if when != when or not ident.isalnum():  # NaN: not a number
        raise InvalidRequest([FieldError("before", "not a cursor this server gave")])
    return (when, f"{prefix}{ident}.json")
