"""Faults: an engine failure on one request, the store going away and coming back, SIGTERM
during a request, and start-up with bad settings; real servers, storage and processes."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile
import torch
from test_api_s3 import keys, start
from test_cli import TUNESMITH, clean_env, free_port, run

from endpoint_process import EndpointProcess
from live_server import serve, stored_files
from s3server import SeaweedS3
from tunesmith.engine import MusicGenEngine, load_model

QUICK = {"prompt": "a quiet cello line", "duration": 1, "seed": 1}


@pytest.fixture(scope="module")
def poisoned_engine(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The tiny model with one word's text embedding made NaN: a prompt holding that word
    breaks the model (non-finite scores), any other prompt does not."""
    loaded = load_model(str(tiny_model_dir), "cpu")
    tokens = loaded.processor.tokenizer
    # a piece of "zebra" that the healthy prompt does not hold
    (token, *_) = sorted(
        set(tokens("zebra")["input_ids"]) - set(tokens(QUICK["prompt"])["input_ids"])
    )
    with torch.no_grad():
        loaded.model.text_encoder.shared.weight[token] = float("nan")
    path = tmp_path_factory.mktemp("poisoned")
    loaded.model.save_pretrained(path)
    loaded.processor.save_pretrained(path)
    engine = MusicGenEngine(str(path), device="cpu")
    engine.setup()
    yield engine
    engine.close()


def test_a_request_the_engine_fails_fails_alone(tmp_path: Path, poisoned_engine: Any) -> None:
    with serve(tmp_path, poisoned_engine) as api:
        results: dict[str, httpx.Response] = {}
        bodies = {"ok": {**QUICK, "duration": 4}, "broken": {**QUICK, "prompt": "zebra song"}}
        threads = [
            threading.Thread(target=lambda n=n, b=b: results.setdefault(n, api.generate(b)))
            for n, b in bodies.items()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results["ok"].status_code == 200, results["ok"].text
        broken = results["broken"]
        assert broken.status_code == 500 and broken.json()["error"] == "generation_failed"
        assert "Traceback" not in broken.text
        ok = results["ok"].json()["id"]
        assert {p.name for p in stored_files(api.root)} == {f"{ok}.wav", f"{ok}.json"}
        assert api.generate(QUICK).status_code == 200  # and it serves the next


@pytest.mark.s3
def test_the_store_going_away_is_a_502_and_it_recovers_by_itself(
    s3_env: SeaweedS3, s3_bucket: str, tiny_engine: MusicGenEngine
) -> None:
    with start(tiny_engine, s3_bucket) as client:
        s3_env.delete_bucket(s3_bucket)
        down = client.post("/generate", json=QUICK)
        job = client.post("/jobs", json=QUICK)
        assert down.status_code == 502 and down.json()["error"] == "storage_error"
        assert job.status_code == 502  # its record could not be stored: it never started
        s3_env.create_bucket(s3_bucket)
        assert keys(s3_env, s3_bucket) == []
        back = client.post("/generate", json=QUICK)  # the same server, no restart
        assert back.status_code == 200
        assert len(keys(s3_env, s3_bucket)) == 2


# runs a command with SIGINT ignored, as a non-interactive shell starts a background job
SIGINT_IGNORED = ["bash", "-c", "trap '' INT; exec \"$@\"", "bash"]


def serve_process(
    model: Path, root: Path, prefix: tuple[str, ...] = (), **settings: str
) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    env = clean_env(
        TUNESMITH_MODEL=str(model), TUNESMITH_LOCAL_DIR=str(root), TUNESMITH_PORT=str(port),
        **{f"TUNESMITH_{k.upper()}": v for k, v in settings.items()},
    )  # fmt: skip
    proc = subprocess.Popen(
        [*prefix, *TUNESMITH, "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.monotonic() < deadline, "server never became healthy"
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.1)


def generate_in_background(base: str, body: dict[str, Any]) -> dict[str, Any]:
    outcome: dict[str, Any] = {}

    def go() -> None:
        try:
            outcome["response"] = httpx.post(f"{base}/generate", json=body, timeout=120)
        except httpx.TransportError as exc:
            outcome["error"] = exc

    outcome["thread"] = threading.Thread(target=go, daemon=True)
    outcome["thread"].start()
    return outcome


def wait_busy(base: str) -> None:
    deadline = time.monotonic() + 30
    while httpx.get(f"{base}/healthz").json()["in_flight"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_sigterm_lets_the_request_in_flight_finish(tiny_model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "tracks"
    proc, base = serve_process(tiny_model_dir, root, shutdown_grace="60")
    try:
        pending = generate_in_background(base, {**QUICK, "duration": 8})
        wait_busy(base)
        proc.send_signal(signal.SIGTERM)
        pending["thread"].join(90)
        output, _ = proc.communicate(timeout=90)
    finally:
        proc.kill()
    response = pending["response"]
    assert response.status_code == 200, response.text
    path = root / "music-output" / f"{response.json()['id']}.wav"
    samples, rate = soundfile.read(path)
    assert (rate, len(samples)) == (32000, 8 * 32000)
    # a graceful shutdown, then the signal's own exit status (as for Ctrl-C)
    assert proc.returncode == -signal.SIGTERM and "Traceback" not in output
    assert "Finished server process" in output
    assert sorted(p.name for p in stored_files(root)) == sorted([path.name, path.stem + ".json"])


def test_ctrl_c_ends_serve_with_130_even_with_sigint_inherited_ignored(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    proc, base = serve_process(tiny_model_dir, tmp_path / "tracks", tuple(SIGINT_IGNORED))
    try:
        assert httpx.post(f"{base}/generate", json=QUICK, timeout=120).status_code == 200
        proc.send_signal(signal.SIGINT)  # uvicorn listens for it whatever was inherited
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, output
    assert "Finished server process" in output and "Traceback" not in output


def test_ctrl_c_ends_the_endpoint_with_130_even_with_sigint_inherited_ignored(
    tiny_model_dir: Path,
) -> None:
    endpoint = EndpointProcess(tiny_model_dir)
    endpoint.command = [*SIGINT_IGNORED, *endpoint.command]
    with endpoint:
        assert httpx.get(f"{endpoint.url}/ping").status_code == 200
    assert endpoint.returncode == 130, endpoint.output
    assert "Finished server process" in endpoint.output


def test_sigterm_past_the_grace_period_fails_cleanly(tiny_model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "tracks"
    proc, base = serve_process(tiny_model_dir, root, shutdown_grace="1")
    try:
        pending = generate_in_background(base, {**QUICK, "duration": 300})  # ~25 s of work
        wait_busy(base)
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
        stopped = time.monotonic() - began
        pending["thread"].join(30)
    finally:
        proc.kill()
    assert stopped < 15  # the grace period, not the track's length
    failed = pending["response"]
    assert failed.status_code == 503 and failed.json()["error"] == "shutting_down"
    assert "shut down" in failed.json()["message"]
    assert proc.returncode == -signal.SIGTERM and "Traceback" not in output
    assert stored_files(root) == []  # nothing half-written, no temporary file


@pytest.mark.s3
def test_start_up_with_bad_credentials_names_them(s3_server: SeaweedS3, s3_bucket: str) -> None:
    env = clean_env(
        **{**s3_server.env(), "AWS_SECRET_ACCESS_KEY": "wrong"},
        TUNESMITH_STORAGE="s3",
        TUNESMITH_S3_BUCKET=s3_bucket,
    )
    began = time.monotonic()
    done = run("serve", env=env, timeout=120)
    assert done.returncode == 2 and time.monotonic() - began < 60
    assert "credentials" in done.stderr and s3_bucket in done.stderr
    assert "Traceback" not in done.stderr


def test_start_up_with_a_bad_model_path_names_the_setting(tmp_path: Path) -> None:
    env = clean_env(TUNESMITH_MODEL=str(tmp_path / "nothing"), TUNESMITH_PORT=str(free_port()))
    done = run("serve", env=env, timeout=120)
    assert done.returncode == 2
    assert "TUNESMITH_MODEL" in done.stderr and str(tmp_path / "nothing") in done.stderr
    assert "Traceback" not in done.stderr
