"""Stored tracks through a real server: deleting one (local disk and S3), and the lineage a
track's record carries when it continues another."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from live_server import Api, LiveServer, serve, stored_files, track_files
from s3server import SeaweedS3
from tunesmith.api import create_app
from tunesmith.config import load_settings
from tunesmith.engine import MusicGenEngine

REQUEST = {"prompt": "a short track to delete", "duration": 1}


@pytest.fixture
def api(tmp_path: Path, tiny_engine: MusicGenEngine) -> Iterator[Api]:
    with serve(tmp_path, tiny_engine) as running:
        yield running


def listed(client: httpx.Client) -> list[str]:
    page = client.get("/tracks", params={"limit": 100})
    assert page.status_code == 200, page.text
    return [track["id"] for track in page.json()["tracks"]]


def make(client: httpx.Client) -> str:
    made = client.post("/generate", json=REQUEST)
    assert made.status_code == 200, made.text
    return str(made.json()["id"])


# ------------------------------------------------------------------------------ local storage


def test_delete_removes_the_audio_and_the_record(api: Api) -> None:
    kept, gone = make(api.client), make(api.client)
    response = api.client.delete(f"/tracks/{gone}")
    assert response.status_code == 204, response.text
    assert stored_files(api.root) == track_files(api.root, kept, "wav")
    assert listed(api.client) == [kept]

    again = api.client.delete(f"/tracks/{gone}")
    assert again.status_code == 404
    assert again.json()["error"] == "not_found" and gone in again.json()["message"]


def test_delete_takes_the_record_of_the_job_that_made_it(api: Api) -> None:
    job = api.client.post("/jobs", json=REQUEST).json()
    deadline = time.monotonic() + 60
    while api.client.get(f"/jobs/{job['id']}").json()["status"] != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert (api.root / "music-jobs" / f"{job['id']}.json").exists()
    assert api.client.delete(f"/tracks/{job['id']}").status_code == 204
    assert stored_files(api.root) == []  # the job's record held the prompt too


@pytest.mark.parametrize(
    "ident", ["nothex", "A" * 32, "0" * 31, "0" * 33, "0" * 32 + ".wav", "%20" + "0" * 32]
)
def test_a_malformed_id_is_refused_naming_the_field(api: Api, ident: str) -> None:
    made = make(api.client)
    response = api.client.delete(f"/tracks/{ident}")
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_request"
    assert [f["field"] for f in body["fields"]] == ["id"]
    assert stored_files(api.root) == track_files(api.root, made, "wav")


def test_a_delete_stopped_after_the_audio_is_still_listed_and_a_retry_finishes_it(
    api: Api,
) -> None:
    ident = make(api.client)
    (api.root / "music-output" / f"{ident}.wav").unlink()  # what a delete stopped there leaves
    assert listed(api.client) == [ident]
    assert api.client.delete(f"/tracks/{ident}").status_code == 204
    assert stored_files(api.root) == [] and listed(api.client) == []


def test_audio_left_without_its_record_is_deleted_too(api: Api) -> None:
    ident = make(api.client)
    (api.root / "music-output" / f"{ident}.json").unlink()  # a store that failed part-way
    assert listed(api.client) == []
    assert api.client.delete(f"/tracks/{ident}").status_code == 204
    assert stored_files(api.root) == []


def test_delete_needs_the_key_when_the_server_has_keys(
    tmp_path: Path, tiny_engine: MusicGenEngine
) -> None:
    with serve(tmp_path, tiny_engine, api_key="open-sesame") as api:
        key = {"Authorization": "Bearer open-sesame"}
        ident = make(httpx.Client(base_url=api.base_url, headers=key, timeout=120))
        refused = api.client.delete(f"/tracks/{ident}")
        assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
        assert stored_files(api.root) == track_files(api.root, ident, "wav")
        assert api.client.delete(f"/tracks/{ident}", headers=key).status_code == 204
        assert stored_files(api.root) == []


# ------------------------------------------------------------------------------------------ S3


def bucket_keys(server: SeaweedS3, bucket: str) -> list[str]:
    listing = server.client().list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


@pytest.mark.s3
def test_delete_from_s3_and_finish_one_stopped_part_way(
    s3_env: SeaweedS3, s3_bucket: str, tiny_engine: MusicGenEngine
) -> None:
    config = load_settings(model=tiny_engine.model_name, storage="s3", s3_bucket=s3_bucket)
    with LiveServer(create_app(config, engine=tiny_engine)) as server:
        client = httpx.Client(base_url=server.base_url, timeout=120)
        kept, gone, halfway = make(client), make(client), make(client)
        assert client.delete(f"/tracks/{gone}").status_code == 204
        assert f"music-output/{gone}.wav" not in bucket_keys(s3_env, s3_bucket)
        assert client.delete(f"/tracks/{gone}").status_code == 404

        s3_env.client().delete_object(Bucket=s3_bucket, Key=f"music-output/{halfway}.wav")
        assert set(listed(client)) == {kept, halfway}
        assert client.delete(f"/tracks/{halfway}").status_code == 204
        assert listed(client) == [kept]
        assert bucket_keys(s3_env, s3_bucket) == [
            f"music-output/{kept}.json",
            f"music-output/{kept}.wav",
        ]


# ------------------------------------------------------------------------------------- lineage


def test_a_continuation_records_the_track_it_continues(api: Api) -> None:
    source = make(api.client)
    audio = api.client.get(f"/files/music-output/{source}.wav").content
    fields = {"prompt": "and then", "duration": "2", "source_track": source}
    made = api.client.post("/generate", data=fields, files={"input_audio": ("a.wav", audio)})
    assert made.status_code == 200, made.text
    record = api.client.get(made.json()["metadata_url"]).json()
    assert record["request"]["source_track"] == source
    assert "input_audio" in record["inputs"]

    plain = api.client.get(f"/files/music-output/{source}.json").json()
    assert plain["request"]["source_track"] is None


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"prompt": "a", "duration": 2, "source_track": "0" * 32}, "needs an input_audio"),
        ({"prompt": "a", "duration": 2, "source_track": "../x"}, "pattern"),
    ],
)
def test_a_lineage_without_its_audio_or_not_an_id_is_refused(
    api: Api, body: dict[str, object], problem: str
) -> None:
    response = api.generate(body)
    assert response.status_code == 422, response.text
    (field,) = response.json()["fields"]
    assert field["field"] == "source_track" and problem in field["message"]
    assert stored_files(api.root) == []
