"""The ``tunesmith`` command as a user runs it: a real process, real ports, real files."""

from __future__ import annotations

import io
import os
import re
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
from tunesmith.engine.audio.loops import loop_points

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


# one state of the bar: seconds made of the track's, then (once known) speed and time left
BAR = re.compile(
    r"(loading|generating): +\d+%\|[^|]*\| \d+\.\d/(?P<total>\d+\.\d) s"
    r"(, \d+\.\dx realtime, \d\d:\d\d left)?"
)


def bar_states(stderr: str) -> list[str]:
    """What a progress bar drew, state by state (the bar redraws its line after a \\r, which
    text mode reads as a line break)."""
    return [line.strip() for line in stderr.splitlines() if line.strip()]


def test_generate_prints_one_bar_in_seconds_then_the_file(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "song.flac"
    done = run("generate", "calm piano", "-d", "1.5", "-o", str(out), "--seed", "9",
               "--model", str(tiny_model_dir))  # fmt: skip
    assert done.returncode == 0, done.stderr
    # nothing but the bar: no config warnings, weight-loading bar or timestamped log lines
    states = bar_states(done.stderr)
    assert all(BAR.fullmatch(state) for state in states), done.stderr
    assert {BAR.fullmatch(state)["total"] for state in states} == {"1.5"}  # type: ignore[index]
    assert re.search(r"generating: 100%.*1\.5/1\.5 s, \d+\.\dx realtime, 00:00 left", states[-1])
    info = soundfile.info(str(out))
    assert done.stdout == f"wrote {out} (1.5 s, 32000 Hz, seed 9)\n"
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
        "--force",  # the second run replaces the first's track
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
    states = bar_states(done.stderr)
    assert all(BAR.fullmatch(state) for state in states), done.stderr
    assert "100%" in states[-1] and "45.0/45.0 s" in states[-1]
    assert not any(state.startswith("generating") and " 0.0/45.0" in state for state in states)
    assert soundfile.info(out).frames == 45 * 32000
    other = tmp_path / "melody.wav"
    refused = run("generate", "x", "-d", "10", "--melody", str(upload), "-o", str(other),
                  "--model", str(tiny_model_dir))  # fmt: skip
    assert refused.returncode == 2 and "melody" in refused.stderr
    assert "Traceback" not in refused.stderr and not other.exists()


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


def one_line_refusal(done: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a command refused before it loaded anything (the bar that
    would show the model loading never appeared)."""
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and re.match(r"tunesmith( \w+)?: error: ", lines[0]), done.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("name", "flags", "expected"),
    [
        ("missing/a.wav", [], "there is no directory"),
        ("a.wav", ["--format", "mp3"], "--format mp3 disagrees with the name"),
        ("a.txt", [], "cannot tell which format"),
        ("a.txt", ["--format", "wav"], "--format wav disagrees with the name"),
        (".", [], "is a directory"),
    ],
)
def test_generate_refuses_an_impossible_output_before_loading(
    tiny_model_dir: Path, tmp_path: Path, name: str, flags: list[str], expected: str
) -> None:
    out = tmp_path / name
    done = run("generate", "x", "-d", "2", "-o", str(out), *flags, "--model", str(tiny_model_dir))
    assert expected in one_line_refusal(done)
    assert list(tmp_path.iterdir()) == []


def test_generate_keeps_an_existing_file_unless_forced(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "a.mp3"
    out.write_bytes(b"keep me")
    args = ["generate", "x", "-d", "1", "-o", str(out), "--model", str(tiny_model_dir)]
    assert "use --force" in one_line_refusal(run(*args))
    assert out.read_bytes() == b"keep me"
    done = run(*args, "--force")
    assert done.returncode == 0, done.stderr
    # the format follows the name, and the file was replaced whole (no temporary file left)
    assert soundfile.info(str(out)).format == "MP3"
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp3"]


def test_generate_format_flag_and_name_agreeing_or_no_extension(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    model = ["--model", str(tiny_model_dir), "-d", "1"]
    done = run("generate", "x", "-o", str(tmp_path / "a.ogg"), "--format", "ogg", *model)
    assert done.returncode == 0, done.stderr
    assert soundfile.info(str(tmp_path / "a.ogg")).subtype == "VORBIS"
    done = run("generate", "x", "-o", str(tmp_path / "take"), "--format", "flac", *model)
    assert done.returncode == 0, done.stderr
    assert soundfile.info(str(tmp_path / "take")).format == "FLAC"


def test_generate_failing_to_write_leaves_nothing(tiny_model_dir: Path, tmp_path: Path) -> None:
    import resource

    def small_files() -> None:  # a full disk, for this process only
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))

    out = tmp_path / "out" / "a.wav"
    out.parent.mkdir()
    # no kernels to build (and write) under the limit: torch's run instead
    env = clean_env(CC="no-such-cc", CXX="no-such-cxx", XDG_CACHE_HOME=str(tmp_path / "cache"))
    done = subprocess.run(
        [*TUNESMITH, "generate", "x", "-d", "1", "-o", str(out), "--model", str(tiny_model_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        preexec_fn=small_files,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1] == f"tunesmith: error: cannot write {out}: File too large"
    assert "Traceback" not in done.stderr
    assert list(out.parent.iterdir()) == []  # neither a partial track nor a temporary file


def test_usage_errors_are_one_line() -> None:
    done = run("generate", "x", "--formt", "wav")
    assert "unrecognized arguments: --formt wav" in one_line_refusal(done)
    done = run("generate", "x", "--format", "aiff")
    assert "invalid choice: 'aiff'" in one_line_refusal(done)


def test_download_into_a_file_is_refused_before_fetching(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.write_text("not a directory")
    # the Hub is not even asked: it is offline, and the output is what the message names
    env = clean_env(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    done = run("download", "--output", str(target), env=env)
    assert f"{target} is a file" in one_line_refusal(done)


def test_help_describes_the_command_in_whole_sentences() -> None:
    done = run("--help")
    assert done.returncode == 0
    description = done.stdout.split("\n\n")[1]
    assert description.startswith("Text to music") and description.endswith(".")
    assert "``" not in description


def test_invalid_setting_stops_serve_naming_it() -> None:
    done = run("serve", env=clean_env(TUNESMITH_PORT="eighty"))
    assert done.returncode == 2
    assert "TUNESMITH_PORT" in done.stderr and "Traceback" not in done.stderr


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
    from tunesmith.engine.musicgen.model.store import WeightStore

    store = tmp_path / "store"
    env = clean_env(TUNESMITH_WEIGHT_CACHE=str(store))
    done = run("kernels", "--model", str(tiny_model_dir), "--precision", "int8", env=env)
    assert done.returncode == 0, done.stderr
    kept = list(store.glob("*.safetensors"))
    assert len(kept) == 1 and f"converted weights: {kept[0]}" in done.stdout
    # what a server started with the same setting finds, instead of converting
    monkeypatch.setenv("TUNESMITH_WEIGHT_CACHE", str(store))
    assert WeightStore.for_checkpoint(tiny_model_dir, "int8", LAYOUT).hit


def test_generate_a_loop_at_a_tempo_in_a_key_in_sections(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "loop.wav"
    done = run("generate", "house", "--bpm", "120", "--loop", "--key", "C major",
               "--section", "intro:1bars", "--section", "groove: 1 bars", "-o", str(out),
               "--seed", "4", "--model", str(tiny_model_dir))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert soundfile.info(str(out)).frames == 2 * 2 * 32000  # two bars of 2 s
    assert loop_points(out.read_bytes()) == [(0, 4 * 32000 - 1)]
    assert done.stdout.startswith(f"wrote {out} (4 s, 32000 Hz, seed 4)\nanalysis: ")
    assert "tempo_found" in done.stdout and "key_found" in done.stdout


def test_generate_refuses_a_malformed_section_or_bars_without_a_tempo(
    tiny_model_dir: Path,
) -> None:
    done = run("generate", "x", "--section", "intro", "--model", str(tiny_model_dir))
    assert done.returncode == 2 and "PROMPT:SECONDS" in done.stderr
    done = run("generate", "x", "--bars", "4", "--model", str(tiny_model_dir))
    assert done.returncode != 0 and "bars" in done.stderr and "Traceback" not in done.stderr
