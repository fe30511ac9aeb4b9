"""The async variant's two small contracts: where the container is told to store a track's
record (`RecordDestination`), and how SageMaker's error documents become a job's error."""

from __future__ import annotations

import json

import pytest

from tunesmith.aws.async_jobs import failure_error
from tunesmith.aws.protocol import MAX_ATTRIBUTES_CHARS, RecordDestination
from tunesmith.schema import GenerateRequest, TrackRecord

ID = "0123456789abcdef0123456789abcdef"


def destination(**changes: str) -> RecordDestination:
    fields = {
        "bucket": "tunesmith-tracks-1a2b",
        "key": f"music-output/{ID}.json",
        "audio_key": f"music-output/{ID}/track.wav",
        "endpoint": "tunesmith-async",
    }
    return RecordDestination(**(fields | changes))


def test_a_destination_travels_in_the_custom_attributes_and_back() -> None:
    sent = destination()
    value = sent.to_attributes()
    assert len(value) < MAX_ATTRIBUTES_CHARS and value.isascii()
    assert RecordDestination.from_attributes(value) == sent
    assert sent.id == ID
    assert RecordDestination.from_attributes(None) is None  # a synchronous request
    assert RecordDestination.from_attributes("trace=abc") is None


@pytest.mark.parametrize(
    "changes",
    [
        {"key": "music-output/../x.json"},
        {"key": f"music-output/{ID}.wav"},  # a record is JSON
        {"key": f"/{ID}.json"},
        {"audio_key": "../etc/passwd"},
        {"audio_key": ""},
        {"bucket": "Not_A_Bucket"},
        {"endpoint": "bad name!"},
    ],
)
def test_a_malformed_destination_is_refused(changes: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        destination(**changes)


def test_a_destination_that_is_no_s3_uri_is_refused() -> None:
    with pytest.raises(ValueError, match="s3://"):
        RecordDestination.from_attributes(f"record=https://example.com/music-output/{ID}.json")


def test_the_stored_record_names_its_track_and_endpoint() -> None:
    rendered = TrackRecord(
        id="", created="2026-01-01T00:00:00+00:00", request=GenerateRequest(prompt="p", seed=3),
        model="m", engine={"tunesmith": "1", "precision": "int8"}, seed=3, duration=2.0,
        sample_rate=32000, channels=1, format="wav", content_type="audio/wav", audio_key="",
    )  # fmt: skip
    stored = destination().record(rendered)
    assert (stored.id, stored.audio_key) == (ID, f"music-output/{ID}/track.wav")
    assert stored.engine == {"tunesmith": "1", "precision": "int8", "endpoint": "tunesmith-async"}


def test_the_containers_json_error_is_the_jobs_error() -> None:
    document = json.dumps({"error": "generation_failed", "message": "out of memory"}).encode()
    error = failure_error(document)
    assert (error.error, error.message) == ("generation_failed", "out of memory")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"invocation timed out", "invocation timed out"),
        (b'{"unexpected": 1}', '{"unexpected": 1}'),
        (b"", "SageMaker reported a failure and no message"),
        (b"\xff\xfe broken", "\ufffd\ufffd broken"),
    ],
)
def test_any_other_error_document_is_an_upstream_error_quoting_it(
    document: bytes, message: str
) -> None:
    error = failure_error(document)
    assert (error.error, error.message) == ("upstream_error", message)


def test_a_long_error_document_is_cut() -> None:
    assert len(failure_error(b"x" * 100_000).message) == 2000
