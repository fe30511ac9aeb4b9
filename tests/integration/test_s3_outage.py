"""S3Storage when the S3 server dies between a track's two puts and comes back (found by
`tunesmith loadtest --faults`): what the failed store left is removed once S3 answers again."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from s3server import SeaweedS3
from tunesmith.errors import StorageError
from tunesmith.storage import S3Storage

pytestmark = pytest.mark.s3

FAST_FAIL = {"retries": {"max_attempts": 1, "mode": "standard"}, "connect_timeout": 1}


@pytest.fixture
def own_server() -> Iterator[SeaweedS3]:
    """A server of this test's own, to kill and restart (the session's stays up)."""
    with SeaweedS3() as server:
        yield server


def test_a_track_whose_record_failed_while_s3_was_down_is_removed_once_it_is_back(
    own_server: SeaweedS3,
) -> None:
    bucket = own_server.create_bucket("outage")
    storage = S3Storage(bucket, client=own_server.client(**FAST_FAIL))
    # what tunesmith.tracks.store_track does: the audio, then its record; if the record
    # fails, the audio is deleted
    storage.put("music-output/a.wav", b"RIFF audio", "audio/wav")
    own_server.kill()
    with pytest.raises(StorageError):
        storage.put("music-output/a.json", b"{}", "application/json")
    with pytest.raises(StorageError):
        storage.delete("music-output/a.wav")

    own_server.restart()
    client = own_server.client()
    deadline = time.monotonic() + 30
    while client.list_objects_v2(Bucket=bucket).get("Contents"):
        assert time.monotonic() < deadline, "the audio was left behind"
        time.sleep(0.2)
