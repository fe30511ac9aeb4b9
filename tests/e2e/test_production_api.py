"""The producers' fields through the HTTP API with the tiny MusicGen: exact bars at a tempo,
loops with loop points, keys, sections, fades, and their refusals."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile

from live_server import Api, serve, stored_files, track_files
from tunesmith.engine import MusicGenEngine
from tunesmith.engine.audio.loops import loop_points

RATE = 32000


@pytest.fixture
def api(tmp_path: Path, tiny_engine: MusicGenEngine) -> Iterator[Api]:
    with serve(tmp_path, tiny_engine) as running:
        yield running


def made(api: Api, body: dict[str, Any]) -> tuple[dict[str, Any], bytes, dict[str, Any]]:
    """The response, the stored file and its record of a request that must succeed."""
    response = api.generate(body)
    assert response.status_code == 200, response.text
    answer = response.json()
    record = api.client.get(answer["metadata_url"]).json()
    return answer, httpx.get(answer["public_url"]).content, record


def finished(api: Api, job_id: str) -> dict[str, Any]:
    """The job once it has ended (within two minutes)."""
    for _ in range(1200):
        job: dict[str, Any] = api.client.get(f"/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job['status']}")


def test_an_eight_bar_loop_at_a_tempo_in_a_key(api: Api) -> None:
    body = {"prompt": "house groove", "bpm": 128, "bars": 2, "loop": True, "key": "a minor"}
    answer, data, record = made(api, {**body, "seed": 3})
    frames = round(2 * 4 * 60 / 128 * RATE)  # 3.75 s, to the sample
    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    assert (rate, samples.shape[0]) == (RATE, frames)
    assert loop_points(data) == [(0, frames - 1)]  # samplers loop the whole file
    assert answer["duration"] == pytest.approx(3.75)
    analysis = answer["production"]
    assert analysis == record["production"]
    assert analysis["bars"] == 2 and 0.5 < analysis["stretch"] < 2.0
    # the tracker's reading is the one of half, same or double nearest the tempo asked
    assert 128 / 1.5 <= analysis["tempo_found"] <= 128 * 1.5
    assert analysis["key"] in {"A minor", "C major"} and -6 <= analysis["key_shift"] <= 6
    assert isinstance(answer["warnings"], list) and answer["warnings"] == record["warnings"]
    assert record["request"]["bpm"] == 128 and record["request"]["key"] == "A minor"
    assert record["request"]["duration"] == pytest.approx(3.75)  # the bars gave it


def test_without_a_loop_the_file_ends_on_a_bar_line_and_fades(api: Api) -> None:
    _, data, record = made(api, {"prompt": "ballad", "bpm": 90, "duration": 5, "fade_out": 1})
    bars = round(5 / (4 * 60 / 90))  # the whole bars nearest 5 s: 2 bars of 2.67 s
    samples, _ = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    assert samples.shape[0] == round(bars * 4 * 60 / 90 * RATE)
    assert loop_points(data) == []
    assert np.abs(samples[-32:]).max() < 1e-3 < np.abs(samples[: RATE // 2]).max()
    assert record["production"]["bars"] == bars


def test_a_fade_alone_needs_no_tempo(api: Api) -> None:
    _, data, record = made(api, {"prompt": "drone", "duration": 2, "fade_out": 0.5, "seed": 1})
    samples, _ = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    assert samples.shape[0] == 2 * RATE and np.abs(samples[-16:]).max() < 1e-3
    assert record["production"] is None and record["warnings"] == []


def test_sections_make_one_track_with_its_section_map(api: Api) -> None:
    sections = [{"prompt": "soft intro", "duration": 1.5}, {"prompt": "the drop", "duration": 2}]
    answer, data, record = made(api, {"prompt": "trance", "sections": sections, "seed": 5})
    samples, _ = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    assert samples.shape[0] == round(3.5 * RATE) and answer["duration"] == pytest.approx(3.5)
    assert record["production"]["sections"] == [
        {"prompt": "soft intro", "start": 0.0, "end": 1.5},
        {"prompt": "the drop", "start": 1.5, "end": 3.5},
    ]
    assert record["request"]["sections"] == [{**s, "bars": None} for s in sections]
    assert stored_files(api.root) == track_files(api.root, answer["id"], "wav")


def test_sections_in_bars_at_a_tempo(api: Api) -> None:
    sections = [{"prompt": "intro", "bars": 1}, {"prompt": "verse", "bars": 2}]
    _, data, record = made(api, {"prompt": "funk", "bpm": 120, "sections": sections})
    samples, _ = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    assert samples.shape[0] == round(3 * 2.0 * RATE)  # three bars of 2 s
    assert [s["end"] for s in record["production"]["sections"]] == [2.0, 6.0]


def test_the_job_stream_plays_what_is_generated_and_the_file_is_made_exact(api: Api) -> None:
    body = {"prompt": "techno", "bpm": 120, "bars": 1, "loop": True, "normalization": "none"}
    job = api.client.post("/jobs", json=body).json()
    streamed = api.client.get(job["audio_url"]).content
    raw, rate = soundfile.read(io.BytesIO(streamed), dtype="int16")
    assert rate == RATE and raw.shape[0] > 2 * RATE  # the unprocessed audio, longer
    assert job["progress"]["audio_total"] == pytest.approx(raw.shape[0] / RATE, abs=1e-3)
    job = finished(api, job["id"])
    assert job["status"] == "succeeded", job
    assert job["result"]["production"]["bars"] == 1
    stored = httpx.get(job["result"]["public_url"]).content
    assert soundfile.info(io.BytesIO(stored)).frames == 2 * RATE  # one bar at 120 BPM


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "a", "bars": 4}, "bars"),
        ({"prompt": "a", "loop": True, "duration": 4}, "loop"),
        ({"prompt": "a", "bpm": 300}, "bpm"),
        ({"prompt": "a", "bpm": 120, "bars": 0}, "bars"),
        ({"prompt": "a", "key": "H minor"}, "key"),
        ({"prompt": "a", "bpm": 120, "bars": 2, "duration": 9}, "duration"),
        ({"prompt": "a", "bpm": 120, "bars": 2, "loop": True, "fade_out": 1}, "fade_out"),
        ({"prompt": "a", "duration": 2, "fade_out": 3}, "fade_out"),
        ({"prompt": "a", "sections": [{"prompt": "x"}]}, "sections"),
        ({"prompt": "a", "sections": [{"prompt": "x", "bars": 2}]}, "sections"),
        ({"prompt": "a", "sections": [{"prompt": "x", "duration": 400}]}, "duration"),
    ],
)
def test_bad_producer_fields_are_refused_naming_the_field(
    api: Api, body: dict[str, Any], field: str
) -> None:
    response = api.generate(body)
    assert response.status_code == 422, response.text
    named = [entry["field"] for entry in response.json()["fields"]]
    assert any(name == field or name.startswith(f"{field}.") for name in named), named
    assert stored_files(api.root) == []


def test_sections_are_refused_in_a_form(api: Api) -> None:
    response = api.client.post(
        "/generate",
        data={"prompt": "a", "sections": '[{"prompt": "x", "duration": 2}]'},
        files={"input_audio": ("a.wav", b"RIFF", "audio/wav")},
    )
    assert response.status_code == 422
    assert "sections" in [entry["field"] for entry in response.json()["fields"]]


def test_a_tempo_without_rubber_band_is_refused_saying_how_to_get_it(
    api: Api, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert api.client.get("/healthz").json()["rubberband"] is True
    monkeypatch.setenv("PATH", str(tmp_path))  # no rubberband on it
    assert api.client.get("/healthz").json()["rubberband"] is False  # the page reads it
    for field, body in (("bpm", {"bpm": 120}), ("key", {"key": "C major"})):
        response = api.generate({"prompt": "a", "duration": 2, **body})
        assert response.status_code == 422
        (entry,) = response.json()["fields"]
        assert entry["field"] == field and "rubberband-cli" in entry["message"]
    assert stored_files(api.root) == []


def test_a_sectioned_job_counts_every_window_from_the_start(api: Api) -> None:
    sections = [{"prompt": "intro", "duration": 1}, {"prompt": "outro", "duration": 1.5}]
    job = api.client.post("/jobs", json={"prompt": "jazz", "sections": sections}).json()
    total = job["progress"]["steps_total"]
    job = finished(api, job["id"])
    assert job["status"] == "succeeded", job
    assert job["progress"]["steps_done"] == job["progress"]["steps_total"] == total
