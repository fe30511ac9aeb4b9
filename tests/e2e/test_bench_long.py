"""`tunesmith bench --long`, `--melody` and `--stream`, on the tiny models."""

from pathlib import Path

from tunesmith.benchmark.long_tracks import long_section


def test_long_section_times_each_length_in_its_own_process(tiny_model_dir: Path) -> None:
    lines: list[str] = []
    results = long_section(str(tiny_model_dir), [10.0, 40.0], "int8", 18.0, lines.append)
    assert [r["duration"] for r in results] == [10.0, 40.0]
    assert [r["windows"] for r in results] == [1, 2]
    assert results[1]["prefilled_frames"] == 600  # the second window's 12 s of context
    assert all(r["seconds"] > 0 and r["peak_rss_mb"] > 0 for r in results)
    assert len(lines) == 3 and "s per audio second" in lines[2] and "x" in lines[2]


def test_bench_long_and_melody_flags_run_end_to_end(tiny_model_dir: Path, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    def bench(*args: str) -> tuple[str, dict[str, object]]:
        done = subprocess.run(
            [sys.executable, "-m", "tunesmith.cli", "bench", *args, "--cache-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout, json.loads(done.stdout.strip().splitlines()[-1])

    out, figures = bench("--long", "5,35", "--model", str(tiny_model_dir))
    assert "s per audio second" in out and len(figures["long"]) == 2  # type: ignore[arg-type]
    out, figures = bench("--melody", "tiny", "-d", "2")
    assert "melody transformers generate, fp32: 103 steps in" in out  # 100 frames + 3
    assert "melody tunesmith int4 (kernels " in out and "transformers' speed per step" in out
    melody = figures["melody"]
    assert melody["duration"] == 2.0  # type: ignore[index]
    for run in ("transformers", "fp32", "int4"):
        assert melody[run]["steps"] == 103 and melody[run]["ms_per_step"] > 0  # type: ignore[index]


def test_bench_stream_times_first_audio_against_transformers(tiny_model_dir: Path) -> None:
    import json
    import subprocess
    import sys

    command = [sys.executable, "-m", "tunesmith.cli", "bench", "--stream", "6"]
    done = subprocess.run(
        [*command, "--model", str(tiny_model_dir)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])["stream"]
    ours = figures["tunesmith"]
    assert ours["duration"] == 6.0 and ours["chunks"] == 8  # 0.24, 0.26, 0.5, then 1 s each
    assert 0 < ours["first_audio_seconds"] < ours["seconds"]
    assert ours["realtime_factor"] == 6.0 / ours["seconds"]
    assert ours["buffer_seconds"] >= ours["first_audio_seconds"]
    assert (
        figures["first_audio_ratio"]
        == figures["transformers"]["seconds"] / (ours["first_audio_seconds"])
    )
    assert "first audio" in done.stdout and "sooner than transformers" in done.stdout
