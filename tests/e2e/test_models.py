"""Several models in one server, through real HTTP: the tiny text model (the default) and the
tiny melody model, each loaded by the server itself when first asked for, within a memory
budget that holds only one of them."""

from __future__ import annotations

import contextlib
import gc
import io
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile
from fastapi.testclient import TestClient

from endpoint_process import EndpointProcess, clean_env
from live_server import Api, serve_models, stored_files
from s3server import free_ports
from tunesmith.api import create_app
from tunesmith.aws.protocol import CUSTOM_ATTRIBUTES_HEADER, TrackInfo
from tunesmith.config import load_settings
from tunesmith.engine.registry import model_id
from tunesmith.pool import ModelPool, weight_bytes

REQUEST = {"prompt": "calm piano melody for a rainy evening", "duration": 2}


def wav(seconds: float, seed: int = 0) -> bytes:
    samples = 0.2 * np.random.default_rng(seed).standard_normal((round(seconds * 32000), 1))
    buffer = io.BytesIO()
    soundfile.write(buffer, samples.astype(np.float32), 32000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def form(api: Api, path: str, fields: dict[str, Any], **files: bytes) -> httpx.Response:
    data = {name: str(value) for name, value in fields.items()}
    uploads = {name: (f"{name}.wav", content, "audio/wav") for name, content in files.items()}
    return api.client.post(path, data=data, files=uploads)


def listed(api: Api) -> dict[str, dict[str, Any]]:
    response = api.client.get("/models")
    assert response.status_code == 200, response.text
    return {model["id"]: model for model in response.json()["models"]}


def wait_for(api: Api, model: str, state: str) -> None:
    deadline = time.monotonic() + 60
    while listed(api)[model]["state"] != state:
        assert time.monotonic() < deadline, listed(api)
        time.sleep(0.05)


def wait_job(api: Api, job_id: str, *statuses: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while (job := api.client.get(f"/jobs/{job_id}").json())["status"] not in statuses:
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    return job


def metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == f"{name}{{{wanted}}}":
            return float(value)
    return 0.0


@pytest.fixture
def ids(tiny_model_dir: Path, tiny_melody_dir: Path) -> tuple[str, str]:
    return model_id(str(tiny_model_dir)), model_id(str(tiny_melody_dir))


@pytest.fixture
def api(tmp_path: Path, tiny_model_dir: Path, tiny_melody_dir: Path) -> Iterator[Api]:
    with serve_models(tmp_path, [tiny_model_dir, tiny_melody_dir]) as running:
        yield running


def test_get_models_lists_each_model_before_any_is_loaded(
    tmp_path: Path, tiny_model_dir: Path, tiny_melody_dir: Path, ids: tuple[str, str]
) -> None:
    text, melody = ids
    settings = load_settings(model=f"{tiny_model_dir},{tiny_melody_dir}", local_dir=tmp_path)
    client = TestClient(create_app(settings))  # its lifespan never runs: nothing loads
    body = client.get("/models").json()
    schema = client.get("/openapi.json").json()
    assert body["default"] == text and body["memory_limit"] is None
    assert body["memory_used"] == 0
    by_id = {model["id"]: model for model in body["models"]}
    assert list(by_id) == [text, melody]
    assert by_id[text]["checkpoint"] == str(tiny_model_dir)
    assert [by_id[m]["default"] for m in ids] == [True, False]
    assert [by_id[m]["state"] for m in ids] == ["unloaded", "unloaded"]
    assert not any(by_id[m]["loaded"] for m in ids)
    assert (by_id[text]["abilities"]["melody"], by_id[melody]["abilities"]["melody"]) == (
        False,
        True,
    )
    assert by_id[text]["abilities"]["family"] == "musicgen"
    assert by_id[text]["memory_bytes"] == weight_bytes(tiny_model_dir, "fp32")
    assert by_id[text]["precision"] == "auto"
    assert "/models" in schema["paths"]


def test_each_request_gets_the_model_it_names_and_its_record_says_which(
    api: Api, ids: tuple[str, str], tiny_model_dir: Path, tiny_melody_dir: Path
) -> None:
    text, melody = ids
    wait_for(api, text, "loaded")
    assert listed(api)[melody]["state"] == "unloaded"  # loads when first asked for
    by_default = api.generate(REQUEST)
    assert by_default.status_code == 200, by_default.text
    fields = {**REQUEST, "model": melody, "seed": 3}
    early = form(api, "/generate", fields, melody=wav(2.0))
    assert early.status_code == 503 and early.json()["error"] == "model_loading"
    assert "retry-after" in early.headers
    wait_for(api, melody, "loaded")
    followed = form(api, "/generate", fields, melody=wav(2.0))
    assert followed.status_code == 200, followed.text
    named_text = api.generate({**REQUEST, "model": text})
    assert named_text.status_code == 200

    for response, model, checkpoint in (
        (by_default, text, tiny_model_dir),
        (followed, melody, tiny_melody_dir),
        (named_text, text, tiny_model_dir),
    ):
        body = response.json()
        record = httpx.get(body["metadata_url"]).json()
        # the checkpoint that made it, and the id that asks for it again
        assert body["model"] == record["model"] == str(checkpoint)
        assert record["request"]["model"] == model
    asked = httpx.get(followed.json()["metadata_url"]).json()["request"]
    again = form(
        api, "/generate", {k: v for k, v in asked.items() if v is not None}, melody=wav(2.0)
    )
    assert again.status_code == 200, again.text
    assert (
        httpx.get(again.json()["public_url"]).content
        == httpx.get(followed.json()["public_url"]).content
    )


def test_an_unknown_model_is_a_422_listing_the_served_ones(api: Api, ids: tuple[str, str]) -> None:
    for response in (
        api.generate({**REQUEST, "model": "musicgen-large"}),
        api.client.post("/jobs", json={**REQUEST, "model": "musicgen-large"}),
        form(api, "/generate", {**REQUEST, "model": "musicgen-large"}, input_audio=wav(1.0)),
        form(api, "/jobs", {**REQUEST, "model": "musicgen-large"}, melody=wav(1.0)),
    ):
        assert response.status_code == 422, response.text
        error = response.json()
        assert [f["field"] for f in error["fields"]] == ["model"]
        assert all(model in error["fields"][0]["message"] for model in ids)
    assert stored_files(api.root) == []


def test_what_a_model_cannot_do_is_a_422_naming_the_field_and_the_model(
    api: Api, ids: tuple[str, str]
) -> None:
    text, melody = ids
    refused = form(api, "/generate", {**REQUEST, "model": text}, melody=wav(1.0))
    assert refused.status_code == 422
    assert refused.json()["fields"][0]["field"] == "melody"
    assert text in refused.json()["fields"][0]["message"]
    as_job = form(api, "/jobs", REQUEST, melody=wav(1.0))  # the default: the text model
    assert as_job.status_code == 422 and as_job.json()["fields"][0]["field"] == "melody"
    assert listed(api)[melody]["state"] == "unloaded"  # judged by the config: nothing loaded
    assert stored_files(api.root) == []


def test_health_and_metrics_report_each_model(api: Api, ids: tuple[str, str]) -> None:
    text, melody = ids
    wait_for(api, text, "loaded")
    assert api.generate(REQUEST).status_code == 200
    health = api.client.get("/healthz")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok" and body["precision"] == "fp32"  # the default's, on top
    models = {model["id"]: model for model in body["models"]}
    assert models[text] == {
        "id": text, "default": True, "state": "loaded", "loaded": True, "precision": "fp32",
        "in_flight": 0,
    }  # fmt: skip
    assert (models[melody]["state"], models[melody]["loaded"]) == ("unloaded", False)
    metrics = api.client.get("/metrics").text
    assert metric(metrics, "tunesmith_model_loaded", model=text) == 1.0
    assert metric(metrics, "tunesmith_model_loaded", model=melody) == 0.0
    assert metric(metrics, "tunesmith_model_in_flight", model=text) == 0.0
    assert metric(metrics, "tunesmith_generation_seconds_count", model=text) == 1.0
    assert metric(metrics, "tunesmith_audio_seconds_total", model=text) == pytest.approx(2.0)
    assert metric(metrics, "tunesmith_model_load_seconds", model=text) > 0
    assert f'tunesmith_model_memory_bytes{{model="{melody}"}}' in metrics


def test_a_memory_budget_unloads_the_idle_model_never_a_busy_one(
    tmp_path: Path, tiny_model_dir: Path, tiny_melody_dir: Path, ids: tuple[str, str]
) -> None:
    text, melody = ids
    sizes = [weight_bytes(path, "fp32") for path in (tiny_model_dir, tiny_melody_dir)]
    budget = max(sizes) + min(sizes) // 2  # room for one of them, not both
    with serve_models(tmp_path, [tiny_model_dir, tiny_melody_dir], model_memory=budget) as api:
        wait_for(api, text, "loaded")
        assert api.app is not None
        pool: ModelPool = api.app.state.tunesmith.service.models
        # the text model busy with a long job: the melody model cannot make room
        long = api.client.post("/jobs", json={**REQUEST, "duration": 60}).json()
        wait_job(api, long["id"], "running")
        assert listed(api)[text]["in_flight"] == 1
        refused = api.generate({**REQUEST, "model": melody})
        assert refused.status_code == 503 and refused.json()["error"] == "overloaded"
        assert "TUNESMITH_MODEL_MEMORY" in refused.json()["message"]
        assert "retry-after" in refused.headers
        queued = api.client.post("/jobs", json={**REQUEST, "model": melody}).json()
        time.sleep(0.5)
        assert api.client.get(f"/jobs/{queued['id']}").json()["status"] == "queued"
        assert (listed(api)[text]["state"], listed(api)[melody]["state"]) == ("loaded", "unloaded")

        # the long job ends; the melody job's load unloads the idle text model first
        engine = weakref.ref(pool.models[text].engine)
        first = wait_job(api, long["id"], "succeeded", "failed")
        assert first["status"] == "succeeded", first
        second = wait_job(api, queued["id"], "succeeded", "failed")
        assert second["status"] == "succeeded", second
        assert second["updated"] > first["updated"]
        now = listed(api)
        assert (now[text]["state"], now[melody]["state"]) == ("unloaded", "loaded")
        assert api.client.get("/models").json()["memory_used"] <= budget
        gc.collect()
        assert engine() is None  # the unloaded engine let go of its model
        # and the text model loads again when asked for
        assert api.generate(REQUEST).status_code == 503
        wait_for(api, text, "loaded")
        assert api.generate(REQUEST).status_code == 200
        assert listed(api)[melody]["state"] == "unloaded"
        health = api.client.get("/healthz").json()
        assert health["status"] == "ok" and health["model"] == str(tiny_model_dir)


def invoke_until_loaded(url: str, body: dict[str, Any]) -> httpx.Response:
    """POST until the model the body names has loaded (503 model_loading until then)."""
    deadline = time.monotonic() + 60
    while True:
        response = httpx.post(url, json=body, timeout=60)
        if response.status_code != 503:
            return response
        assert response.json()["error"] == "model_loading", response.text
        assert time.monotonic() < deadline, response.text
        time.sleep(0.1)


def test_tunesmith_serve_takes_a_model_list(
    tmp_path: Path, tiny_model_dir: Path, tiny_melody_dir: Path, ids: tuple[str, str]
) -> None:
    port = free_ports(1)[0]
    argv = ["serve", "--model", f"{tiny_model_dir},{tiny_melody_dir}", "--model-memory", "3MB"]
    env = clean_env(TUNESMITH_LOCAL_DIR=str(tmp_path / "t"), TUNESMITH_DEVICE="cpu")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunesmith.cli", *argv, "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None
            assert time.monotonic() < deadline, "server never became healthy"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            time.sleep(0.1)
        listing = httpx.get(f"{base}/models").json()
        assert [m["id"] for m in listing["models"]] == list(ids)
        assert listing["memory_limit"] == 3_000_000
        made = invoke_until_loaded(f"{base}/generate", {**REQUEST, "model": ids[1]})
        assert made.status_code == 200 and made.json()["model"] == str(tiny_melody_dir)
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in output


def test_the_container_serves_the_models_it_is_given(
    tiny_model_dir: Path, tiny_melody_dir: Path, ids: tuple[str, str]
) -> None:
    text, melody = ids
    with EndpointProcess(f"{tiny_model_dir},{tiny_melody_dir}") as endpoint:
        ping = httpx.get(f"{endpoint.url}/ping").json()
        assert ping["model"] == str(tiny_model_dir)  # the default's fields stay on top
        states = {model["id"]: model["state"] for model in ping["models"]}
        assert states == {text: "loaded", melody: "unloaded"}
        unknown = httpx.post(f"{endpoint.url}/invocations", json={**REQUEST, "model": "large"})
        assert unknown.status_code == 422 and melody in unknown.json()["fields"][0]["message"]
        made = invoke_until_loaded(f"{endpoint.url}/invocations", {**REQUEST, "model": melody})
        assert made.status_code == 200, made.text
        info = TrackInfo.from_attributes(made.headers[CUSTOM_ATTRIBUTES_HEADER])
        assert info.model == str(tiny_melody_dir)
        ping = httpx.get(f"{endpoint.url}/ping").json()
        assert {model["id"]: model["state"] for model in ping["models"]}[melody] == "loaded"
