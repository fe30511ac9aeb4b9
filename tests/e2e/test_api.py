"""The HTTP API through a real uvicorn server, with the tiny MusicGen and real storage."""

from __future__ import annotations

import io
import math
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pyloudnorm
import pytest
import soundfile

from bad_requests import BAD_BODIES, MALFORMED_BODIES
from live_server import Api, serve, stored_files, track_files
from model_fixtures import GatedEngine
from tunesmith.engine import MusicGenEngine, kernels
from tunesmith.engine.audio import CEILING, true_peak

SEED_REQUEST = {"prompt": "upbeat electronic dance music with heavy bass", "duration": 2}


@pytest.fixture
def api(tmp_path: Path, tiny_engine: MusicGenEngine) -> Iterator[Api]:
    with serve(tmp_path, tiny_engine) as running:
        yield running


def test_seed_request_returns_a_playable_track(api: Api) -> None:
    response = api.generate(SEED_REQUEST)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "id", "s3_url", "public_url", "duration", "sample_rate", "channels", "format", "model",
        "seed", "metadata_url", "production", "warnings",
    }  # fmt: skip
    assert body["production"] is None and body["warnings"] == []  # no producer fields
    assert body["s3_url"] is None  # local storage
    assert body["public_url"] == f"{api.base_url}/files/music-output/{body['id']}.wav"
    assert (body["duration"], body["sample_rate"], body["format"]) == (2.0, 32000, "wav")
    assert body["channels"] == 1 and isinstance(body["seed"], int)

    audio = httpx.get(body["public_url"])
    assert audio.status_code == 200
    assert audio.headers["content-type"] == "audio/wav"
    samples, rate = soundfile.read(io.BytesIO(audio.content))
    assert (rate, len(samples)) == (32000, 64000)
    assert stored_files(api.root) == track_files(api.root, body["id"], "wav")


def test_same_seed_gives_the_same_file_and_flac_works(api: Api) -> None:
    request = {**SEED_REQUEST, "seed": 1234, "format": "flac"}
    first, second = api.generate(request).json(), api.generate(request).json()
    assert first["id"] != second["id"] and first["seed"] == second["seed"] == 1234
    a, b = httpx.get(first["public_url"]), httpx.get(second["public_url"])
    assert a.headers["content-type"] == "audio/flac"
    assert soundfile.info(io.BytesIO(a.content)).format == "FLAC"
    assert a.content == b.content
    other = api.generate({**request, "seed": 1235}).json()
    assert httpx.get(other["public_url"]).content != a.content


FORMATS = {  # format: (Content-Type, soundfile's format name, file rate)
    "wav": ("audio/wav", "WAV", 32000),
    "flac": ("audio/flac", "FLAC", 32000),
    "mp3": ("audio/mpeg", "MP3", 32000),
    "ogg": ("audio/ogg", "OGG", 32000),
    "opus": ("audio/ogg; codecs=opus", "OGG", 48000),
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_is_stored_with_its_extension_and_type_and_decodes_back(
    api: Api, fmt: str
) -> None:
    content_type, soundfile_format, rate = FORMATS[fmt]
    response = api.generate({**SEED_REQUEST, "format": fmt, "seed": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["format"], body["sample_rate"], body["channels"]) == (fmt, rate, 1)
    assert body["public_url"].endswith(f"/music-output/{body['id']}.{fmt}")
    assert stored_files(api.root) == track_files(api.root, body["id"], fmt)
    audio = httpx.get(body["public_url"])
    assert audio.headers["content-type"] == content_type
    info = soundfile.info(io.BytesIO(audio.content))
    assert (info.format, info.samplerate, info.channels, info.frames) == (
        soundfile_format, rate, 1, 2 * rate,
    )  # fmt: skip


@pytest.mark.parametrize("normalization", ["peak", "loudness", "rms", "clip", "none", "limit"])
def test_every_normalization_stays_under_minus_one_dbtp(api: Api, normalization: str) -> None:
    request = {**SEED_REQUEST, "seed": 5, "normalization": normalization, "loudness_lufs": -20}
    body = api.generate(request).json()
    samples, rate = soundfile.read(io.BytesIO(httpx.get(body["public_url"]).content))
    assert float(abs(samples).max()) <= CEILING  # the sample peak, for every strategy
    if normalization in ("clip", "none"):
        return  # sample-local: intersample peaks are not bounded (README, API table)
    assert 20 * math.log10(true_peak(samples[:, None])) <= -1.0 + 1e-3
    if normalization == "loudness":
        assert pyloudnorm.Meter(rate).integrated_loudness(samples) == pytest.approx(-20, abs=0.5)


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
def test_bad_input_is_a_422_naming_the_field_and_stores_nothing(
    api: Api, body: dict[str, Any], field: str
) -> None:
    response = api.generate(body)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/json"
    error = response.json()
    assert error["error"] == "invalid_request"
    assert [f["field"] for f in error["fields"]] == [field]
    assert field in error["message"]
    assert stored_files(api.root) == []


@pytest.mark.parametrize("raw", MALFORMED_BODIES)
def test_malformed_bodies_are_422_json(api: Api, raw: bytes) -> None:
    response = api.generate(content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] in {"duration", "body"}
    assert stored_files(api.root) == []


def test_oversized_body_is_413(api: Api) -> None:
    huge = {"prompt": "a", "duration": 5, "padding": "x" * 200_000}
    response = api.generate(huge)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    # also when the size is not declared up front (chunked upload)
    chunks = iter([b'{"prompt": "', b"y" * 100_000, b'"}'])
    response = api.generate(content=chunks)
    assert response.status_code == 413
    assert stored_files(api.root) == []


def test_files_are_guarded(api: Api) -> None:
    for path in [
        "/files/music-output/0123456789abcdef0123456789abcdef.wav",
        "/files/../../etc/passwd",
        "/files/%2e%2e/%2e%2e/etc/passwd",
        "/files/music-output/..%2f..%2fsecret.wav",
        "/files//etc/passwd",
    ]:
        response = api.client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"] == "not_found"


def test_unknown_routes_and_methods_answer_json(api: Api) -> None:
    assert api.client.get("/nope").json()["error"] == "not_found"
    response = api.client.get("/generate")
    assert response.status_code == 405 and response.json()["error"] == "method_not_allowed"


def test_docs_and_schema(api: Api) -> None:
    assert api.client.get("/docs").status_code == 200
    schema = api.client.get("/openapi.json").json()
    body = schema["paths"]["/generate"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["required"] == ["prompt"]
    assert body["schema"]["additionalProperties"] is False
    assert "tunesmith" in api.client.get("/").text


def test_concurrent_requests_all_succeed_with_distinct_keys(api: Api) -> None:
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda i: api.generate({**SEED_REQUEST, "seed": i}), range(4)))
    assert [r.status_code for r in responses] == [200] * 4
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 4
    assert {p.stem for p in stored_files(api.root)} == ids


def test_healthz_answers_while_a_track_is_generating(api: Api) -> None:
    result: dict[str, httpx.Response] = {}
    worker = threading.Thread(
        target=lambda: result.setdefault("r", api.generate({"prompt": "long one", "duration": 30}))
    )
    worker.start()
    seen_busy = False
    while worker.is_alive():
        health = api.client.get("/healthz", timeout=5)
        assert health.status_code == 200
        if health.json()["in_flight"] == 1 and worker.is_alive():
            seen_busy = True
        time.sleep(0.02)
    worker.join()
    assert result["r"].status_code == 200
    assert seen_busy, "healthz never answered while the generation was in flight"


def test_overload_is_503_with_retry_after(tmp_path: Path, tiny_engine: MusicGenEngine) -> None:
    with serve(tmp_path, tiny_engine, max_queue=1, max_waiting=0) as api:
        worker = threading.Thread(target=api.generate, args=({"prompt": "x", "duration": 30},))
        worker.start()
        deadline = time.monotonic() + 30
        while api.client.get("/healthz").json()["in_flight"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        refused = api.generate(SEED_REQUEST)
        worker.join()
        assert refused.status_code == 503
        assert refused.json()["error"] == "overloaded"
        assert int(refused.headers["retry-after"]) > 0
        assert len(stored_files(api.root)) == 2  # only the admitted request's track and record


def test_api_key_is_required_when_configured(tmp_path: Path, tiny_engine: MusicGenEngine) -> None:
    with serve(tmp_path, tiny_engine, api_key="s3cret") as api:
        assert api.generate(SEED_REQUEST).status_code == 401
        wrong = api.generate(SEED_REQUEST, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
        ok = api.generate(SEED_REQUEST, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert api.generate(SEED_REQUEST, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert api.client.get("/healthz").status_code == 200  # health stays open
        assert len(stored_files(api.root)) == 4  # two tracks, two records


def test_healthz_is_503_until_the_model_is_loaded(tmp_path: Path, tiny_model_dir: Path) -> None:
    engine = GatedEngine(str(tiny_model_dir))
    with serve(tmp_path, engine) as api:
        loading = api.client.get("/healthz")
        assert loading.status_code == 503 and loading.json()["status"] == "loading"
        assert "retry-after" in loading.headers
        early = api.generate(SEED_REQUEST)
        assert early.status_code == 503 and early.json()["error"] == "model_loading"
        engine.gate.set()
        deadline = time.monotonic() + 60
        while api.client.get("/healthz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert api.generate(SEED_REQUEST).status_code == 200
        ready = api.client.get("/healthz").json()
        expected = {"status": "ok", "device": "cpu", "precision": "fp32", "in_flight": 0}
        assert ready.items() >= expected.items()
        assert ready["kernels"] == kernels.status("cpu").path


def test_a_model_that_fails_to_load_is_reported(tmp_path: Path) -> None:
    engine = MusicGenEngine(str(tmp_path / "no-such-model"), device="cpu")
    with serve(tmp_path, engine) as api:
        deadline = time.monotonic() + 30
        while (health := api.client.get("/healthz").json())["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert health["status"] == "error" and "no-such-model" in health["message"]
        response = api.generate(SEED_REQUEST)
        assert response.status_code == 503
