"""Starting without the model's weights: offline it stops at once, saying what to do; with a
Hub to download from, it shows one progress bar, then runs; later, offline, it uses the cache.

The Hub is either unreachable (``HF_HUB_OFFLINE``, or ``HF_ENDPOINT`` at a closed port) or
`tests/fake_hub.py` serving the tiny random checkpoint, always with an empty ``HF_HOME``.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import soundfile
from test_cli import TUNESMITH, clean_env, free_port, run

from fake_hub import FakeHub

REPO = "acme/tiny-musicgen"

# one state of the download bar: the model, bytes of the total, the speed and the time left
DOWNLOAD_BAR = re.compile(
    rf"downloading {REPO}: +\d+%\|[^|]*\| [\d.]+[kMG]?B/[\d.]+[kMG]?B "
    r"\[[\d.]+[kMG]?B/s, \d\d:\d\d left\]"
)


def closed_port_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return clean_env(
        HF_ENDPOINT=f"http://127.0.0.1:{free_port()}",  # nothing listens: connection refused
        HF_HOME=str(tmp_path / "hf"),
        **extra,
    )


@pytest.mark.parametrize(
    ("command", "no_network"),
    [("serve", "HF_HUB_OFFLINE"), ("serve", "HF_ENDPOINT"), ("endpoint", "HF_ENDPOINT")],
)
def test_offline_server_stops_at_once_before_listening(
    tmp_path: Path, command: str, no_network: str
) -> None:
    env = closed_port_env(
        tmp_path, TUNESMITH_PORT=str(free_port()), TUNESMITH_LOCAL_DIR=str(tmp_path / "out")
    )
    if no_network == "HF_HUB_OFFLINE":
        env["HF_HUB_OFFLINE"] = "1"
    began = time.monotonic()
    done = run(command, "--port", str(free_port()), env=env, timeout=120)
    took = time.monotonic() - began
    assert done.returncode == 2
    assert took < 15  # no retries with backoff before the verdict
    # one line, and the server never claimed to run
    [message] = done.stderr.splitlines()
    assert message.startswith("tunesmith: error: model facebook/musicgen-small is not on this")
    assert "`tunesmith download --model facebook/musicgen-small --output DIR`" in message
    assert "TUNESMITH_MODEL=DIR" in message
    assert "python -m tunesmith.testing.random_model ./tiny-musicgen" in message
    assert not message.endswith(("'.", "..")), message


def test_offline_generate_stops_before_anything_else(tmp_path: Path) -> None:
    out = tmp_path / "a.wav"
    done = run("generate", "x", "-o", str(out), env=closed_port_env(tmp_path, HF_HUB_OFFLINE="1"))
    assert done.returncode == 2
    [message] = done.stderr.splitlines()
    assert "facebook/musicgen-small" in message and "HF_HUB_OFFLINE is set" in message
    assert not out.exists()


def test_download_shows_one_bar_then_the_copy_loads(tiny_model_dir: Path, tmp_path: Path) -> None:
    saved = tmp_path / "saved"
    with FakeHub(REPO, tiny_model_dir) as hub:
        env = clean_env(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"))
        done = run("download", "--model", REPO, "--output", str(saved), env=env)
    assert done.returncode == 0, done.stderr
    states = [line for line in done.stderr.splitlines() if line.strip()]
    assert states and all(DOWNLOAD_BAR.fullmatch(state) for state in states), done.stderr
    size = sum(p.stat().st_size for p in tiny_model_dir.iterdir())
    assert "100%" in states[-1] and f"/{size / 1000:.0f}kB" in states[-1]
    assert done.stdout == f"saved {REPO} to {saved}; use TUNESMITH_MODEL={saved}\n"
    names = sorted(p.name for p in saved.iterdir())
    assert names == sorted(p.name for p in tiny_model_dir.iterdir())
    out = tmp_path / "a.wav"
    done = run("generate", "x", "-d", "1", "-o", str(out), "--model", str(saved))
    assert done.returncode == 0, done.stderr
    assert soundfile.info(str(out)).frames == 32000


def test_serve_downloads_before_listening_then_starts_offline_from_the_cache(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    hf_home = str(tmp_path / "hf")
    with FakeHub(REPO, tiny_model_dir) as hub:
        port = free_port()
        env = clean_env(
            HF_ENDPOINT=hub.url,
            HF_HOME=hf_home,
            TUNESMITH_MODEL=REPO,
            TUNESMITH_LOCAL_DIR=str(tmp_path / "tracks"),
        )
        proc = subprocess.Popen(
            [*TUNESMITH, "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "server never became healthy"
                try:
                    health = httpx.get(f"http://127.0.0.1:{port}/healthz")
                    if health.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            assert health.json()["model"] == REPO
        finally:
            proc.send_signal(signal.SIGINT)
            output, _ = proc.communicate(timeout=30)
    lines = output.splitlines()
    bars = [i for i, line in enumerate(lines) if line.startswith(f"downloading {REPO}")]
    running = next(i for i, line in enumerate(lines) if "Uvicorn running" in line)
    assert bars and max(bars) < running, output
    assert "Retrying" not in output and "Traceback" not in output
    # the Hub gone: the cached snapshot serves, and a track comes out of it
    out = tmp_path / "a.wav"
    env = closed_port_env(tmp_path)
    done = run("generate", "x", "-d", "1", "-o", str(out), "--model", REPO, env=env)
    assert done.returncode == 0, done.stderr
    assert "downloading" not in done.stderr
    assert soundfile.info(str(out)).frames == 32000


def test_a_model_the_hub_has_not_got_is_refused_in_one_line(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "a.wav"
    with FakeHub(REPO, tiny_model_dir) as hub:
        env = clean_env(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"))
        for model, why in [
            ("acme/no-such-model", "the Hugging Face Hub has no such model"),
            ("acme/no such model", "is neither a directory nor a Hugging Face model id"),
        ]:
            done = run("generate", "x", "-o", str(out), "--model", model, env=env)
            assert done.returncode == 2
            [message] = done.stderr.splitlines()
            assert why in message and "facebook/musicgen-small" in message
    assert not out.exists()
