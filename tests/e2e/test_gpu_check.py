"""`scripts/gpu-check`: on a machine without CUDA it stops at once; its steps run on the CPU.

The GPU run itself needs a GPU; its hidden ``--device cpu`` mode runs the same steps on the
tiny model (int8 standing in for fp16), so the script cannot rot where CI has no GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu-check"


def _run(*args: str, timeout: float) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    start = time.monotonic()
    done = subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    return done, time.monotonic() - start


def _figures(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def test_without_cuda_it_exits_at_once_saying_so() -> None:
    done, seconds = _run(timeout=120)
    assert done.returncode == 3, done.stderr
    assert "no CUDA device: " in done.stderr
    assert seconds < 60
    assert "built" not in done.stdout  # nothing was built before the check


def test_cpu_dry_run_checks_parity_and_speed(tiny_model_dir: Path) -> None:
    done, _ = _run("--device", "cpu", "--model", str(tiny_model_dir), timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = _figures(done)
    assert figures["passed"] is True and figures["errors"] == {} and figures["skipped"] == {}
    fp32 = figures["parity"]["fp32"]
    assert fp32["passed"] and fp32["free"]["codes_equal"] and fp32["max_diff_over_scale"] < 1e-4
    assert figures["parity"]["int8"]["forced"]["top1_agreement"] >= 0.95
    steps = figures["steps"]
    assert steps == 50 + 3  # 1 s clips by default on the CPU
    batched = figures["speed"]["tunesmith fp32 x8"]
    assert batched["requests"] == 8 and batched["steps_at_full_batch"] == steps
    assert figures["speed"]["tunesmith int8 x1"]["steps_per_second"] > 0
    assert figures["speed"]["transformers fp32 x1"]["vs_transformers_fp32"] == 1.0
    assert "parity vs tf fp32" in done.stdout and "gpu-check: PASS" in done.stdout
    # fp32 runs the static step the CUDA graph captures; its request alone = in the batch
    assert batched["step"] == "static" and batched["same_codes_as_in_batch"] is True
    scaling = figures["scaling"]["requests"]
    assert list(scaling) == ["1", "2", "4", "8", "16"]
    assert all(scaling[n]["steps_at_full_batch"] == steps for n in scaling)
    streaming = figures["streaming"]
    assert 0 < streaming["first_audio_seconds"] < streaming["wall_seconds"]
    # targets are printed, held on CUDA only
    assert [t["verdict"] for t in figures["targets"]] == ["not measured (CPU: not held)"] * 3
    assert "fp16, 8 requests, request-steps/s" in done.stdout and ">= 2500" in done.stdout


def test_out_of_budget_it_stops_with_what_it_has(tiny_model_dir: Path) -> None:
    done, _ = _run("--device", "cpu", "--model", str(tiny_model_dir), "--budget", "1", timeout=120)
    assert done.returncode == 1
    figures = _figures(done)
    assert figures["passed"] is False and figures["parity"] == {}
    assert "parity not measured" in done.stdout
