"""`tunesmith bench` end to end on the tiny model: it runs both sides and reports the figures."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path


def test_bench_compares_with_transformers_and_reports_json(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    command = [sys.executable, "-m", "tunesmith.cli", "bench", "--model", str(tiny_model_dir)]
    command += ["-d", "1", "--concurrency", "2", "--concurrency-duration", "1"]
    command += ["--cache-dir", str(tmp_path)]  # the peer's export
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert "transformers fp32" in done.stdout and "parity fp32 vs transformers" in done.stdout
    steps = 50 + 3
    assert figures["reference"]["steps"] == figures["fp32"]["steps"] == steps
    assert figures["parity"]["codes_equal"] is True
    assert figures["parity"]["max_abs_diff"] < 1e-4
    assert figures["int8"]["weight_mb"] < figures["fp32"]["weight_mb"] / 3
    machine = figures["machine"]  # what the figures were measured on, and its read rate
    assert machine["cores"] >= 1 and machine["cpu"] and machine["memory_read_gbps"] > 0.1
    assert f"memory read {machine['memory_read_gbps']:.1f} GB/s" in done.stdout
    assert "weight-read floor" in done.stdout
    for precision in ("int8", "int4"):  # each quantized precision: its row, floor and drift
        run = figures[precision]
        assert {"decode_seconds", "steps", "weight_mb", "rss_peak_mb", "audio_seconds"} <= set(run)
        assert 0 <= run["vs_teacher"]["top1_agreement"] <= 1
        assert f"{precision} vs fp32, teacher-forced" in done.stdout
    assert figures["int4"]["weight_mb"] < figures["int8"]["weight_mb"]
    cold = figures["cold_start"]  # process start to first audio: converting, then mapping
    assert cold["precision"] == "int4"
    for run in (cold["first"], cold["stored"]):
        assert 0 < run["setup_seconds"] < run["first_audio_after_start_seconds"]
    assert "cold start int4: first audio" in done.stdout
    for precision in ("int8", "fp32"):
        run = figures[f"concurrency_{precision}"]
        assert run["requests"] == 2
        assert run["identical_codes"] == 2  # batching did not change anyone's codes
        assert max(int(size) for size in run["batch_sizes"]) == 2  # and it did batch
    if importlib.util.find_spec("onnxruntime") is None:  # the peer: optional
        assert "onnxruntime not installed: `pip install tunesmith[peer]`" in done.stdout
        return
    for precision in ("fp32", "int8"):
        peer = figures[f"peer_{precision}"]
        assert {"decode_seconds", "steps", "rss_peak_mb", "seconds"} <= peer.keys()
        assert peer["steps"] == steps
        assert f"onnxruntime {precision}" in done.stdout
    assert figures["peer_fp32"]["parity"]["codes_equal"] is True
    assert "parity onnxruntime fp32 vs transformers: same greedy codes" in done.stdout


def test_bench_architecture_section_runs_each_preset_against_transformers(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "tunesmith.cli", "bench", "-d", "1", "--cache-dir"]
    command += [str(tmp_path), "--arch", "tiny-stereo,tiny-medium", "--arch-precision", "fp32"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    architectures = figures["architectures"]
    assert list(architectures) == ["tiny-stereo", "tiny-medium"]
    header = next(line for line in done.stdout.splitlines() if line.startswith("architecture"))
    for field in ("load s", "ms/step", "realtime", "vs transformers", "channels", "RSS peak MB"):
        assert field in header
    for name, channels in (("tiny-stereo", 2), ("tiny-medium", 1)):
        arch = architectures[name]
        assert arch["saved_now"] is True  # saved once into the cache directory, and said so
        assert Path(arch["checkpoint"]).parent == tmp_path
        assert f"{name}: random weights in {arch['checkpoint']}" in done.stdout
        assert arch["shape"]["audio_channels"] == channels
        reference, ours = arch["reference"], arch["fp32"]
        assert reference["steps"] == ours["steps"] == 50 + 3  # stereo pairs share a delay
        assert arch["parity"]["fp32"]["codes_equal"] is True
        assert ours["channels"] == channels
        for run in (reference, ours):
            assert run["load_seconds"] > 0 and run["rss_peak_mb"] >= run["rss_after_load_mb"]
        rows = [line.split() for line in done.stdout.splitlines() if line.startswith(name + " ")]
        assert [row[1:3] for row in rows] == [["transformers", "fp32"], ["tunesmith", "fp32"]]
        ratio = reference["seconds"] / ours["seconds"]
        assert f"{ratio:.2f}x" in rows[1] and "same" in rows[1]
    assert architectures["tiny-medium"]["shape"]["num_attention_heads"] == 6
