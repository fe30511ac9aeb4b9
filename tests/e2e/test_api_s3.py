"""The API storing into a real S3 server (SeaweedFS), as `TUNESMITH_STORAGE=s3` configures it."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import soundfile

from live_server import LiveServer
from s3server import SeaweedS3
from tunesmith.api import create_app
from tunesmith.config import load_settings
from tunesmith.engine import MusicGenEngine

pytestmark = pytest.mark.s3

SEED_REQUEST = {"prompt": "upbeat electronic dance music with heavy bass", "duration": 3}


@contextmanager
def start(engine: MusicGenEngine, bucket: str, **settings: Any) -> Iterator[httpx.Client]:
    config = load_settings(model=engine.model_name, storage="s3", s3_bucket=bucket, **settings)
    with LiveServer(create_app(config, engine=engine)) as server:
        yield httpx.Client(base_url=server.base_url, timeout=120)


def keys(server: SeaweedS3, bucket: str) -> list[str]:
    listing = server.client().list_objects_v2(Bucket=bucket)
    return [item["Key"] for item in listing.get("Contents", [])]


@pytest.mark.parametrize("url_mode", ["public", "presigned"])
def test_seed_request_stores_in_s3_and_both_urls_work(
    s3_env: SeaweedS3, s3_bucket: str, tiny_engine: MusicGenEngine, url_mode: str
) -> None:
    with start(tiny_engine, s3_bucket, url_mode=url_mode) as client:
        response = client.post("/generate", json=SEED_REQUEST)
        assert response.status_code == 200, response.text
        body = response.json()
        key = f"music-output/{body['id']}.wav"
        record = f"music-output/{body['id']}.json"
        assert body["s3_url"] == f"s3://{s3_bucket}/{key}"
        assert keys(s3_env, s3_bucket) == [record, key]  # the track and its record beside it
        head = s3_env.client().head_object(Bucket=s3_bucket, Key=key)
        assert head["ContentType"] == "audio/wav"
        described = httpx.get(body["metadata_url"])
        assert described.headers["content-type"] == "application/json"
        assert described.json()["audio_key"] == key
        if url_mode == "presigned":
            assert "Signature" in body["public_url"] or "X-Amz-Signature" in body["public_url"]
        fetched = httpx.get(body["public_url"])
        assert fetched.status_code == 200
        samples, rate = soundfile.read(io.BytesIO(fetched.content))
        assert (rate, len(samples)) == (32000, 3 * 32000)
        # the local file route has nothing to serve in S3 mode
        assert client.get(f"/files/{key}").status_code == 404


def test_storage_failure_is_a_502_and_leaves_nothing(
    s3_env: SeaweedS3, s3_bucket: str, tiny_engine: MusicGenEngine
) -> None:
    with start(tiny_engine, s3_bucket) as client:
        s3_env.delete_bucket(s3_bucket)  # the store goes away after start
        response = client.post("/generate", json=SEED_REQUEST)
        assert response.status_code == 502
        assert response.json()["error"] == "storage_error"
        assert s3_bucket in response.json()["message"]
        s3_env.create_bucket(s3_bucket)
        assert keys(s3_env, s3_bucket) == []


@pytest.mark.parametrize(
    ("fmt", "content_type", "rate"),
    [
        ("flac", "audio/flac", 32000),
        ("mp3", "audio/mpeg", 32000),
        ("ogg", "audio/ogg", 32000),
        ("opus", "audio/ogg; codecs=opus", 48000),
    ],
)
def test_every_format_is_stored_with_its_extension_and_content_type(
    s3_env: SeaweedS3,
    s3_bucket: str,
    tiny_engine: MusicGenEngine,
    fmt: str,
    content_type: str,
    rate: int,
) -> None:
    with start(tiny_engine, s3_bucket) as client:
        body = client.post("/generate", json={**SEED_REQUEST, "format": fmt}).json()
        key = f"music-output/{body['id']}.{fmt}"
        assert body["s3_url"] == f"s3://{s3_bucket}/{key}"
        assert sorted(keys(s3_env, s3_bucket)) == sorted([key, f"music-output/{body['id']}.json"])
        head = s3_env.client().head_object(Bucket=s3_bucket, Key=key)
        assert head["ContentType"] == content_type
        fetched = httpx.get(body["public_url"])
        assert fetched.headers["content-type"] == content_type
        info = soundfile.info(io.BytesIO(fetched.content))
        assert (info.samplerate, info.channels, info.frames) == (rate, 1, 3 * rate)
