"""TUNESMITH_STEP through a real server: /healthz names the step, the record keeps it."""

from __future__ import annotations

from pathlib import Path

import httpx

from live_server import serve
from tunesmith.config import load_settings
from tunesmith.engine import engine_for


def test_the_static_step_serves_and_is_reported(tmp_path: Path, tiny_model_dir: Path) -> None:
    engine = engine_for(load_settings(model=str(tiny_model_dir), device="cpu", step="static"))
    engine.setup()
    try:
        with serve(tmp_path, engine) as api:
            health = api.client.get("/healthz").json()
            assert (health["step"], health["precision"]) == ("static", "fp32")
            body = {"prompt": "warm rhodes chords", "duration": 2, "seed": 21}
            first, second = api.generate(body), api.generate(body)
            assert [first.status_code, second.status_code] == [200, 200], first.text
            record = api.client.get(first.json()["metadata_url"]).json()
            assert record["engine"]["step"] == "static"
            audio = [httpx.get(r.json()["public_url"]).content for r in (first, second)]
            assert audio[0] == audio[1] and len(audio[0]) > 2 * 32000 * 2
    finally:
        engine.close()
