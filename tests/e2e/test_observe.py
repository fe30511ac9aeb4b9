"""Operations: /metrics moves after a request, and each request logs one JSON line with its
id and no secret."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from live_server import serve
from tunesmith.engine import MusicGenEngine
from tunesmith.engine.registry import model_id

REQUEST = {"prompt": "calm piano melody for a rainy evening", "duration": 2, "seed": 1}


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == (f"{name}{{{wanted}}}" if labels else name):
            return float(value)
    return 0.0


def test_metrics_move_after_a_request(tmp_path: Path, tiny_engine: MusicGenEngine) -> None:
    with serve(tmp_path, tiny_engine) as api:
        before = api.client.get("/metrics")
        assert before.status_code == 200 and before.headers["content-type"].startswith("text/plain")
        assert api.generate(REQUEST).status_code == 200
        assert api.generate({"prompt": ""}).status_code == 422
        after = api.client.get("/metrics").text
    ok = metric(after, "tunesmith_requests_total", route="/generate", status="200")
    refused = metric(after, "tunesmith_requests_total", route="/generate", status="422")
    assert (ok, refused) == (1.0, 1.0)
    model = model_id(tiny_engine.model_name)  # per-model series carry the model's id
    assert metric(after, "tunesmith_audio_seconds_total", model=model) == pytest.approx(2.0)
    assert metric(after, "tunesmith_generation_seconds_count", model=model) == 1.0
    assert metric(after, "tunesmith_realtime_factor_count", model=model) == 1.0
    assert metric(after, "tunesmith_queue_depth") == 0.0
    assert metric(after, "tunesmith_model_load_seconds", model=model) > 0
    assert (
        sum(
            float(line.rpartition(" ")[2])
            for line in after.splitlines()
            if line.startswith("tunesmith_batch_steps{")
        )
        >= 2 * 50
    )  # the 2 s track's decode steps, at some batch size


def test_jobs_count_in_the_metrics(tmp_path: Path, tiny_engine: MusicGenEngine) -> None:
    with serve(tmp_path, tiny_engine) as api:
        job = api.client.post("/jobs", json=REQUEST).json()
        while api.client.get(f"/jobs/{job['id']}").json()["status"] != "succeeded":
            time.sleep(0.05)
        after = api.client.get("/metrics").text
    assert metric(after, "tunesmith_requests_total", route="/jobs", status="202") == 1.0
    assert metric(after, "tunesmith_requests_total", route="/jobs/{job_id}", status="200") >= 1
    model = model_id(tiny_engine.model_name)
    assert metric(after, "tunesmith_audio_seconds_total", model=model) == pytest.approx(2.0)
    assert metric(after, "tunesmith_jobs") == 0.0


def test_each_request_logs_one_json_line_with_its_id_and_no_key(
    tmp_path: Path, tiny_engine: MusicGenEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tunesmith.access")
    with serve(tmp_path, tiny_engine, api_key="s3cret-key") as api:
        headers = {"Authorization": "Bearer s3cret-key", "X-Request-ID": "abc-123"}
        given = api.generate(REQUEST, headers=headers)
        fresh = api.generate(REQUEST, headers={"X-API-Key": "s3cret-key"})
        odd = api.client.get("/healthz", headers={"X-Request-ID": "bad id\twith tab"})
    assert given.headers["X-Request-ID"] == "abc-123"
    assert len(fresh.headers["X-Request-ID"]) == 32 and odd.headers["X-Request-ID"] != "bad id"
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "tunesmith.access"]
    mine = [line for line in lines if line["request_id"] == "abc-123"]
    assert len(mine) == 1
    (line,) = mine
    assert (line["method"], line["route"], line["status"]) == ("POST", "/generate", 200)
    assert line["duration_asked"] == 2.0 and line["seconds"] > 0
    assert all("s3cret-key" not in r.getMessage() for r in caplog.records)
    assert {line["request_id"] for line in lines} >= {
        "abc-123", fresh.headers["X-Request-ID"], odd.headers["X-Request-ID"],
    }  # fmt: skip
