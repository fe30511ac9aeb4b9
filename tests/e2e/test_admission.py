"""Who gets in, and when: API keys, the bounded queue, rate limits, deadlines and clients that
go away, through a real server on the tiny MusicGen."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from live_server import Api, serve, stored_files
from tunesmith.cli import _loopback
from tunesmith.engine import MusicGenEngine

QUICK = {"prompt": "soft rain on a tin roof", "duration": 1, "seed": 3}
LONG = {"prompt": "endless drone", "duration": 200, "seed": 4}  # ~15 s on the tiny model


def in_background(api: Api, body: dict[str, Any], **kwargs: Any) -> dict[str, httpx.Response]:
    result: dict[str, httpx.Response] = {}
    thread = threading.Thread(
        target=lambda: result.setdefault("r", api.generate(body, **kwargs)), daemon=True
    )
    thread.start()
    result["thread"] = thread  # type: ignore[assignment]
    return result


def wait_in_flight(api: Api, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while api.client.get("/healthz").json()["in_flight"] != count:
        assert time.monotonic() < deadline, f"in_flight never reached {count}"
        time.sleep(0.01)


def test_several_keys_from_the_setting_and_a_file(
    tmp_path: Path, tiny_engine: MusicGenEngine
) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# one per line\nfrom-file\n\n")
    with serve(tmp_path, tiny_engine, api_key="first, second", api_keys_file=keys) as api:
        for key in ("first", "second", "from-file"):
            headers = {"Authorization": f"Bearer {key}"}
            assert api.generate(QUICK, headers=headers).status_code == 200, key
            assert api.client.get("/tracks", headers=headers).status_code == 200
        assert api.generate(QUICK, headers={"X-API-Key": "second"}).status_code == 200
        for wrong in ({}, {"Authorization": "Bearer firs"}, {"X-API-Key": "first, second"}):
            refused = api.generate(QUICK, headers=wrong)
            assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
        for path in ("/tracks", "/jobs/" + "0" * 32):
            assert api.client.get(path).status_code == 401
        assert api.client.post("/jobs", json=QUICK).status_code == 401
        assert api.client.get("/healthz").status_code == 200  # open
        assert api.client.get("/metrics").status_code == 200  # open unless protected


def test_protected_metrics_need_a_key(tmp_path: Path, tiny_engine: MusicGenEngine) -> None:
    with serve(tmp_path, tiny_engine, api_key="k", protect_metrics=True) as api:
        assert api.client.get("/metrics").status_code == 401
        assert api.client.get("/metrics", headers={"X-API-Key": "k"}).status_code == 200


def test_only_loopback_hosts_count_as_private() -> None:
    assert all(_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost"))
    assert not any(_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "example.org"))


def test_a_request_that_fits_waits_its_turn_and_past_the_bound_gets_503(
    tmp_path: Path, tiny_engine: MusicGenEngine
) -> None:
    with serve(tmp_path, tiny_engine, max_queue=1, max_waiting=1, queue_timeout=120) as api:
        first = in_background(api, {**LONG, "duration": 30})
        wait_in_flight(api, 1)
        second = in_background(api, QUICK)  # waits for the first to finish
        deadline = time.monotonic() + 10
        while api.client.get("/healthz").json()["waiting"] != 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        refused = api.generate(QUICK)  # the queue is full: refused at once
        assert refused.status_code == 503 and refused.json()["error"] == "overloaded"
        assert "r" not in second
        assert int(refused.headers["retry-after"]) >= 1
        first["thread"].join()  # type: ignore[attr-defined]
        second["thread"].join()  # type: ignore[attr-defined]
        assert first["r"].status_code == 200 and second["r"].status_code == 200


def test_a_request_that_waits_too_long_gets_503(
    tmp_path: Path, tiny_engine: MusicGenEngine
) -> None:
    with serve(tmp_path, tiny_engine, max_queue=1, queue_timeout=0.5) as api:
        first = in_background(api, {**LONG, "duration": 30})
        wait_in_flight(api, 1)
        began = time.monotonic()
        refused = api.generate(QUICK)
        assert refused.status_code == 503 and "within 0.5 s" in refused.json()["message"]
        assert time.monotonic() - began >= 0.5
        first["thread"].join()  # type: ignore[attr-defined]
        assert first["r"].status_code == 200


def test_the_rate_limit_answers_429_per_key(tmp_path: Path, tiny_engine: MusicGenEngine) -> None:
    with serve(tmp_path, tiny_engine, api_key="a,b", rate_limit=2) as api:
        a, b = {"X-API-Key": "a"}, {"X-API-Key": "b"}
        assert [api.generate(QUICK, headers=a).status_code for _ in range(2)] == [200, 200]
        limited = api.generate(QUICK, headers=a)
        assert limited.status_code == 429 and limited.json()["error"] == "rate_limited"
        assert 1 <= int(limited.headers["retry-after"]) <= 30  # a token every 30 s
        assert api.client.post("/jobs", json=QUICK, headers=a).status_code == 429
        assert api.generate(QUICK, headers=b).status_code == 200  # another caller's budget
        assert api.client.get("/tracks", headers=a).status_code == 200  # reading is not limited
        assert len(stored_files(api.root)) == 2 * 3  # the 200s' tracks and records only


def test_a_request_past_its_deadline_gets_504_and_frees_its_slot(
    tmp_path: Path, tiny_engine: MusicGenEngine
) -> None:
    with serve(tmp_path, tiny_engine, max_queue=1, request_timeout=1) as api:
        began = time.monotonic()
        late = api.generate(LONG)
        assert late.status_code == 504 and late.json()["error"] == "deadline_exceeded"
        assert time.monotonic() - began < 10  # stopped at its deadline, not at its end
        assert stored_files(api.root) == []
        assert api.client.get("/healthz").json()["in_flight"] == 0
        assert api.generate(QUICK).status_code == 200  # the slot is free


def test_a_client_that_disconnects_is_dropped(tmp_path: Path, tiny_engine: MusicGenEngine) -> None:
    with serve(tmp_path, tiny_engine) as api:
        host, port = api.base_url.removeprefix("http://").split(":")
        body = httpx.Request("POST", "/generate", json=LONG).read()
        with socket.create_connection((host, int(port))) as conn:
            conn.sendall(
                b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            wait_in_flight(api, 1)
        began = time.monotonic()
        wait_in_flight(api, 0, timeout=5)  # dropped well before its ~15 s of generation
        assert time.monotonic() - began < 5
        assert stored_files(api.root) == []
        assert api.generate(QUICK).status_code == 200


@pytest.mark.parametrize("setting", ["max_waiting", "queue_timeout", "request_timeout"])
def test_admission_settings_are_checked(setting: str) -> None:
    from tunesmith.config import load_settings
    from tunesmith.errors import ConfigError

    with pytest.raises(ConfigError, match=f"TUNESMITH_{setting.upper()}"):
        load_settings(**{setting: -1})
