"""Jobs through a real uvicorn server, with the tiny MusicGen and real local storage: submit,
follow, cancel, stream, bounds, restarts and a second replica on the same storage."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile

from live_server import Api, LiveServer, serve, stored_files, track_files
from tunesmith.api import create_app
from tunesmith.config import load_settings
from tunesmith.engine import MusicGenEngine
from tunesmith.storage import LocalStorage

SHORT = {"prompt": "warm analog synth pads", "duration": 3, "seed": 5}
LONG = {"prompt": "slow ambient drone", "duration": 240, "seed": 6}  # ~20 s on the tiny model


@pytest.fixture
def api(tmp_path: Path, tiny_engine: MusicGenEngine) -> Iterator[Api]:
    with serve(tmp_path, tiny_engine) as running:
        yield running


def wait_for(api: Api, job_id: str, check: Any, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = api.client.get(f"/jobs/{job_id}").json()
        if check(job):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def job_files(root: Path) -> list[Path]:
    return sorted((root / "music-jobs").glob("*"))


def test_a_job_answers_at_once_then_succeeds_at_its_urls(api: Api) -> None:
    response = api.client.post("/jobs", json=SHORT)

    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/jobs/{job['id']}"
    assert job["status"] in ("queued", "running")
    assert job["public_url"] == f"{api.base_url}/files/music-output/{job['id']}.wav"
    assert job["audio_url"] == f"{api.base_url}/jobs/{job['id']}/audio"
    assert job["request"]["seed"] == 5
    done = wait_for(api, job["id"], lambda j: j["status"] == "succeeded")
    assert done["progress"]["steps_done"] == done["progress"]["steps_total"] == 153
    assert done["progress"]["audio_seconds"] == 3.0
    assert done["result"]["public_url"] == job["public_url"]
    assert done["error"] is None
    audio = httpx.get(job["public_url"])
    samples, rate = soundfile.read(io.BytesIO(audio.content))
    assert (rate, len(samples)) == (32000, 96000)
    # the same request through /generate gives the same file
    again = api.generate(SHORT).json()
    assert httpx.get(again["public_url"]).content == audio.content
    stored = json.loads((api.root / "music-jobs" / f"{job['id']}.json").read_text())
    assert stored["status"] == "succeeded" and stored["result"]["id"] == job["id"]
    tracks = track_files(api.root, job["id"], "wav") + track_files(api.root, again["id"], "wav")
    assert stored_files(api.root) == sorted(tracks + job_files(api.root))


def test_events_report_progress_then_done(api: Api) -> None:
    job = api.client.post("/jobs", json={**SHORT, "duration": 6}).json()
    events: list[tuple[str, dict[str, Any]]] = []
    with api.client.stream("GET", f"/jobs/{job['id']}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name is not None:
                events.append((name, json.loads(line[6:])))
    names = [name for name, _ in events]
    assert names[-1] == "done" and set(names[:-1]) == {"progress"}
    assert events[-1][1]["status"] == "succeeded"
    steps = [data["progress"]["steps_done"] for _, data in events]
    assert steps == sorted(steps) and len(set(steps)) > 2  # it moved on the way


@pytest.mark.parametrize("normalization", ["clip", "none"])
def test_the_streamed_audio_is_the_stored_file(api: Api, normalization: str) -> None:
    job = api.client.post(
        "/jobs", json={**SHORT, "duration": 8, "normalization": normalization}
    ).json()
    with api.client.stream("GET", job["audio_url"]) as stream:
        assert stream.headers["content-type"] == "audio/wav"
        length = int(stream.headers["content-length"])
        chunks = stream.iter_bytes()
        first = next(chunks)
        running = api.client.get(f"/jobs/{job['id']}").json()
        streamed = first + b"".join(chunks)
    assert running["status"] != "succeeded" or len(first) < length  # it came while made
    assert length == 44 + 8 * 32000 * 2
    wait_for(api, job["id"], lambda j: j["status"] == "succeeded")
    assert streamed == httpx.get(job["public_url"]).content


def test_a_normalized_track_streams_as_clip_would(api: Api) -> None:
    # peak/loudness/rms need the whole track: the stream is the track clipped, unnormalized
    request = {**SHORT, "normalization": "loudness"}
    job = api.client.post("/jobs", json=request).json()
    streamed = api.client.get(job["audio_url"]).content
    clip = api.generate({**request, "normalization": "clip"}).json()
    assert streamed == httpx.get(clip["public_url"]).content
    wait_for(api, job["id"], lambda j: j["status"] == "succeeded")
    stored, _ = soundfile.read(io.BytesIO(httpx.get(job["public_url"]).content))
    assert stored.shape == (96000,)


def test_cancel_mid_way_stores_nothing(api: Api) -> None:
    job = api.client.post("/jobs", json=LONG).json()
    wait_for(api, job["id"], lambda j: j["progress"]["steps_done"] > 100)

    response = api.client.delete(f"/jobs/{job['id']}")

    assert response.status_code == 200, response.text
    canceled = response.json()
    assert canceled["status"] == "canceled"
    assert canceled["progress"]["steps_done"] < canceled["progress"]["steps_total"]
    assert not (api.root / "music-output").exists()
    assert api.client.get(f"/jobs/{job['id']}").json()["status"] == "canceled"
    again = api.client.delete(f"/jobs/{job['id']}")
    assert again.status_code == 409 and again.json()["error"] == "conflict"
    # the server serves on
    assert api.generate({**SHORT, "duration": 1}).status_code == 200


def test_jobs_past_the_bound_get_503_with_retry_after(
    tmp_path: Path, tiny_engine: MusicGenEngine
) -> None:
    with serve(tmp_path, tiny_engine, max_jobs=1) as api:
        first = api.client.post("/jobs", json=LONG).json()
        refused = api.client.post("/jobs", json=SHORT)
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) > 0
        assert refused.json()["error"] == "overloaded"
        assert api.client.delete(f"/jobs/{first['id']}").json()["status"] == "canceled"
        assert api.client.post("/jobs", json=SHORT).status_code == 202  # the slot is free


def test_bad_job_requests_are_refused_and_store_nothing(api: Api) -> None:
    response = api.client.post("/jobs", json={"prompt": "x", "duration": -1})
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "duration"
    for path in ("/jobs/" + "0" * 32, "/jobs/nonsense", "/jobs/../etc/events"):
        missing = api.client.get(path)
        assert missing.status_code == 404, path
        assert missing.json()["error"] == "not_found"
    assert api.client.get("/jobs/" + "0" * 32 + "/audio").status_code == 404
    assert stored_files(api.root) == []


def test_another_replica_on_the_same_storage_answers(
    tmp_path: Path, tiny_engine: MusicGenEngine
) -> None:
    root = tmp_path / "shared"
    settings = load_settings(model=tiny_engine.model_name, local_dir=root)
    first = create_app(settings, engine=tiny_engine, storage=LocalStorage(root))
    second = create_app(settings, engine=tiny_engine, storage=LocalStorage(root))
    with LiveServer(first) as a, LiveServer(second) as b:
        job = httpx.post(f"{a.base_url}/jobs", json={**SHORT, "duration": 60}).json()
        seen = httpx.get(f"{b.base_url}/jobs/{job['id']}").json()
        assert seen["id"] == job["id"] and seen["status"] in ("queued", "running")
        assert seen["replica"] == job["replica"]
        audio = httpx.get(f"{b.base_url}/jobs/{job['id']}/audio")
        assert audio.status_code == 409 and "another server" in audio.json()["message"]
        deadline = time.monotonic() + 60
        while httpx.get(f"{b.base_url}/jobs/{job['id']}").json()["status"] != "succeeded":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        listed = httpx.get(f"{b.base_url}/tracks").json()["tracks"]
        assert [t["id"] for t in listed] == [job["id"]]


def test_a_restart_mid_job_leaves_a_failed_record(
    tmp_path: Path, tiny_engine: MusicGenEngine
) -> None:
    with serve(tmp_path, tiny_engine) as api:
        job = api.client.post("/jobs", json=LONG).json()
        wait_for(api, job["id"], lambda j: j["status"] == "running")
    # the server stopped; a new one on the same storage reports the job failed, with why
    with serve(tmp_path, tiny_engine) as restarted:
        failed = restarted.client.get(f"/jobs/{job['id']}").json()
        assert failed["status"] == "failed"
        assert failed["error"]["error"] == "interrupted"
        assert "shut down" in failed["error"]["message"]
        assert not (restarted.root / "music-output").exists()


def test_a_job_whose_server_vanished_is_failed_after_its_heartbeats(
    tmp_path: Path, tiny_engine: MusicGenEngine
) -> None:
    # A server killed outright writes nothing more: its record stops being refreshed.
    with serve(tmp_path, tiny_engine, job_heartbeat=0.2) as api:
        job = api.client.post("/jobs", json=LONG).json()
        running = wait_for(api, job["id"], lambda j: j["status"] == "running")
    record = api.root / "music-jobs" / f"{job['id']}.json"
    last_beat = datetime.now(UTC).isoformat(timespec="seconds")  # as the killed one left it
    record.write_text(json.dumps({**running, "replica": "gone", "updated": last_beat}))
    with serve(tmp_path, tiny_engine, job_heartbeat=0.2) as other:
        assert other.client.get(f"/jobs/{job['id']}").json()["status"] == "running"  # fresh
        time.sleep(4 * 0.2 + 1.5)
        failed = other.client.get(f"/jobs/{job['id']}").json()
        assert failed["status"] == "failed" and failed["error"]["error"] == "interrupted"
        assert json.loads(record.read_text())["status"] == "failed"


def test_tracks_lists_newest_first_a_page_at_a_time(api: Api) -> None:
    made = [api.generate({**SHORT, "duration": 1, "seed": n}).json()["id"] for n in range(3)]
    first = api.client.get("/tracks", params={"limit": 2}).json()
    assert [t["id"] for t in first["tracks"]] == made[::-1][:2]
    assert first["tracks"][0]["record"]["seed"] == 2
    assert first["tracks"][0]["public_url"].endswith(f"{made[2]}.wav")
    rest = api.client.get("/tracks", params={"limit": 2, "before": first["next"]}).json()
    assert [t["id"] for t in rest["tracks"]] == [made[0]] and rest["next"] is None
    bad = api.client.get("/tracks", params={"before": "nonsense"})
    assert bad.status_code == 422 and bad.json()["fields"][0]["field"] == "before"
    assert api.client.get("/tracks", params={"limit": 0}).status_code == 422


def test_job_audio_samples_are_what_the_track_holds(api: Api) -> None:
    job = api.client.post("/jobs", json={**SHORT, "normalization": "none"}).json()
    streamed = api.client.get(job["audio_url"]).content
    samples, rate = soundfile.read(io.BytesIO(streamed), dtype="int16")
    assert (rate, samples.shape) == (32000, (96000,))
    assert np.abs(samples).max() > 0


class SlowFinalRecords(LocalStorage):
    """Local storage whose writes of a finished job's record take a while (a slow S3 PUT)."""

    def put(self, key: str, data: bytes, content_type: str, *, replace: bool = False) -> None:
        if key.startswith("music-jobs/") and b'"status": "running"' not in data:
            time.sleep(1.0)
        super().put(key, data, content_type, replace=replace)


def test_a_finished_state_is_stored_before_it_is_answered(
    tmp_path: Path, tiny_engine: MusicGenEngine
) -> None:
    """Another replica reads storage: once this one answers ``canceled``, storage must too."""
    root = tmp_path / "tracks"
    config = load_settings(model=tiny_engine.model_name, local_dir=root)
    app = create_app(config, engine=tiny_engine, storage=SlowFinalRecords(root))
    with LiveServer(app) as server:
        api = Api(server.base_url, root)
        job = api.client.post("/jobs", json={"prompt": "slow drone", "duration": 240}).json()
        wait_for(api, job["id"], lambda j: j["status"] == "running")
        assert api.client.delete(f"/jobs/{job['id']}").status_code == 200
        answered = wait_for(api, job["id"], lambda j: j["status"] == "canceled", timeout=30)
        stored = json.loads((root / "music-jobs" / f"{job['id']}.json").read_text())
        assert stored["status"] == answered["status"] == "canceled"
