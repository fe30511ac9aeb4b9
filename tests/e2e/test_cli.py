"""The ``tunesmith`` command as a user runs it: a real process, real ports, real files."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile

from s3server import SeaweedS3

TUNESMITH = [sys.executable, "-m", "tunesmith.cli"]


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TUNESMITH, *args], capture_output=True, text=True, timeout=timeout, env=env or clean_env()
    )


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNESMITH_")}
    if "TUNESMITH_WEIGHT_CACHE" in os.environ:  # the session's store (tests/conftest.py)
        env["TUNESMITH_WEIGHT_CACHE"] = os.environ["TUNESMITH_WEIGHT_CACHE"]
    return {**env, **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_generate_writes_a_track_of_the_asked_length(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "song.flac"
    done = run("generate", "calm piano", "-d", "1.5", "-o", str(out), "--seed", "9",
               "--model", str(tiny_model_dir))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "decoding" in done.stderr and "78/78" in done.stderr  # progress bar over the steps
    assert f"wrote {out}" in done.stdout and "seed 9" in done.stdout
    info = soundfile.info(str(out))
    assert (info.format, info.samplerate, info.frames) == ("FLAC", 32000, 48000)


@pytest.mark.usefixtures("compiled_kernels")
def test_generate_verbose_names_the_kernels_it_runs(tiny_model_dir: Path, tmp_path: Path) -> None:
    args = [
        "generate",
        "x",
        "-d",
        "1",
        "-o",
        str(tmp_path / "a.wav"),
        "--model",
        str(tiny_model_dir),
    ]
    done = run("-v", *args)
    assert done.returncode == 0, done.stderr
    assert "kernels: compiled (" in done.stderr and "precision: fp32" in done.stderr
    # no compiler and nothing built yet: a warning naming the cause and the fix, torch's kernels
    bare = clean_env(CC="no-such-cc", CXX="no-such-cxx", XDG_CACHE_HOME=str(tmp_path / "cache"))
    done = run("-v", *args, env=bare)
    assert done.returncode == 0, done.stderr
    warning = next(line for line in done.stderr.splitlines() if "WARNING tunesmith" in line)
    assert "CC=no-such-cc is not on PATH" in warning and "apt-get install gcc g++" in warning
    assert "kernels: torch (no C compiler" in done.stderr
    assert soundfile.info(str(tmp_path / "a.wav")).frames == 32000


def test_kernels_command_says_why_they_are_unavailable(tmp_path: Path) -> None:
    empty = clean_env(XDG_CACHE_HOME=str(tmp_path), CC="no-such-cc")
    refused = run("kernels", "--require", env=empty)
    assert refused.returncode == 1 and "kernels: torch (no C compiler" in refused.stdout
    assert "fix: install gcc" in refused.stderr
    assert run("kernels", env=empty).returncode == 0  # without --require it only reports


def test_generate_continues_a_file_over_several_windows(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    upload, out = tmp_path / "start.wav", tmp_path / "long.wav"
    start = np.random.default_rng(0).uniform(-0.3, 0.3, 20 * 32000).astype(np.float32)
    soundfile.write(upload, start, 32000)
    done = run("generate", "calm piano", "-d", "45", "-o", str(out), "--continue", str(upload),
               "--extend-stride", "10", "--model", str(tiny_model_dir))  # fmt: skip
    assert done.returncode == 0, done.stderr
    # 20 s given, 25 s new in windows adding 10 s each (the last 5 s): one bar over all three
    assert "1259/1259" in done.stderr
    assert soundfile.info(out).frames == 45 * 32000
    refused = run("generate", "x", "-d", "10", "--melody", str(upload), "-o", str(out),
                  "--model", str(tiny_model_dir))  # fmt: skip
    assert refused.returncode == 2 and "melody" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_generate_refuses_bad_parameters_without_a_traceback(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "song.wav"
    done = run(
        "generate", "calm piano", "-d", "4000", "-o", str(out), "--model", str(tiny_model_dir)
    )
    assert done.returncode == 2
    assert "duration" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()


def test_invalid_setting_stops_serve_naming_it() -> None:
    done = run("serve", env=clean_env(TUNESMITH_PORT="eighty"))
    assert done.returncode == 2
    assert "TUNESMITH_PORT" in done.stderr and "Traceback" not in done.stderr


def test_offline_default_model_explains_how_to_point_at_a_directory(tmp_path: Path) -> None:
    env = clean_env(
        HF_HUB_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf"),
        TUNESMITH_PORT=str(free_port()),
        TUNESMITH_LOCAL_DIR=str(tmp_path / "out"),
    )
    done = run("serve", env=env, timeout=120)
    assert done.returncode == 2
    assert "facebook/musicgen-small" in done.stderr
    assert "TUNESMITH_MODEL" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.s3
def test_serve_with_a_missing_bucket_stops_before_listening(s3_server: SeaweedS3) -> None:
    env = clean_env(**s3_server.env(), TUNESMITH_STORAGE="s3", TUNESMITH_S3_BUCKET="not-there")
    done = run("serve", env=env, timeout=120)
    assert done.returncode == 2
    assert "not-there" in done.stderr and "Traceback" not in done.stderr


def test_readme_flow_serve_then_curl(tiny_model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(TUNESMITH_MODEL=str(tiny_model_dir), TUNESMITH_LOCAL_DIR=str(tmp_path / "t"))
    proc = subprocess.Popen(
        [*TUNESMITH, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "server never became healthy"
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        response = httpx.post(
            f"{base}/generate",
            json={"prompt": "upbeat electronic dance music with heavy bass", "duration": 2},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        track = httpx.get(response.json()["public_url"])
        samples, rate = soundfile.read(io.BytesIO(track.content))
        assert (rate, len(samples)) == (32000, 64000)
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    # Ctrl-C: a graceful shutdown, then the conventional status for SIGINT
    assert proc.returncode == 130
    assert "Finished server process" in output and "Traceback" not in output


@pytest.mark.usefixtures("compiled_kernels")
def test_kernels_with_a_model_keeps_its_converted_weights(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tunesmith.engine.kernels import LAYOUT
    from tunesmith.engine.model.store import WeightStore

    store = tmp_path / "store"
    env = clean_env(TUNESMITH_WEIGHT_CACHE=str(store))
    done = run("kernels", "--model", str(tiny_model_dir), "--precision", "int8", env=env)
    assert done.returncode == 0, done.stderr
    kept = list(store.glob("*.safetensors"))
    assert len(kept) == 1 and f"converted weights: {kept[0]}" in done.stdout
    # what a server started with the same setting finds, instead of converting
    monkeypatch.setenv("TUNESMITH_WEIGHT_CACHE", str(store))
    assert WeightStore.for_checkpoint(tiny_model_dir, "int8", LAYOUT).hit
