"""What one `scripts/gpu-check` run holds, and the plumbing its steps share (the budget, timing
on the device, a step's errors). The steps: `gpu_reference` (transformers), `gpu_engine`
(tunesmith's engine), `gpu_targets` (the graph step's targets), `gpu_report`; `gpu` runs them."""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["BATCH", "GUIDANCE", "PROMPT", "GpuState", "optional", "say"]

PROMPT = "upbeat electronic dance music with heavy bass"
GUIDANCE = 3.0
BATCH = 8


def optional(step: str) -> bool:
    """Steps whose failure says nothing about the engine's fp16/fp32 path: transformers' own
    runs beside the reference, bf16, and the eager step run for comparison. Reported, but they
    do not fail the check."""
    return any(mark in step for mark in ("baseline", "speed transformers", "bf16", "eager"))


def say(line: str = "") -> None:
    print(line, flush=True)


class GpuState:
    """The figures of one run, and what its steps share."""

    def __init__(self, args: argparse.Namespace, torch: Any, workdir: Path, started: float) -> None:
        self.args = args
        self.started = started  # `time.monotonic` when the run began
        self.torch = torch
        self.workdir = workdir
        self.device = torch.device(args.device)
        cuda = self.device.type == "cuda"
        # on the CPU, int8 is the approximate precision that fp16 is on CUDA
        self.half = "fp16" if cuda else "int8"
        self.gated = [self.half, "fp32"]
        self.figures: dict[str, Any] = {"device": args.device, "duration": args.duration}
        self.parity: dict[str, dict[str, Any]] = {}
        self.speed: dict[str, dict[str, Any]] = {}
        self.baselines: dict[str, Any] = {}  # transformers' half decoders, teacher-forced
        self.errors: dict[str, str] = {}
        self.skipped: dict[str, str] = {}
        self.failed_checks: list[str] = []
        self.notes: list[str] = []  # what went wrong in optional steps
        self.done: set[str] = set()
        self.current = ""
        self.model_dir = ""
        self.engines: dict[str, Any] = {}
        self.reference_model: Any = None
        self.processor: Any = None
        self.reference: Any = None  # (steps, K, V) guided scores
        self.teacher: Any = None  # (K, steps + 1) codes, the delay pattern applied
        self.steps = 0
        self.frames = 0
        self.load_seconds = 10.0
        self.ms_step: dict[str, float] = {}  # measured one-request decode rate

    # -- plumbing ------------------------------------------------------------------------------

    def left(self) -> float:
        return float(self.args.budget - (time.monotonic() - self.started))

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def now(self) -> float:
        self.sync()
        return time.perf_counter()

    def step(
        self, name: str, need: float, work: Callable[[], None], requires: tuple[str, ...] = ()
    ) -> None:
        """Run `work` as step `name` unless a step it needs did not finish or fewer than `need`
        seconds are left; an error is recorded and reported, and the run goes on."""
        missing = [r for r in requires if r not in self.done]
        if missing:
            self.skipped[name] = f"needs {', '.join(missing)}"
            say(f"{name}: skipped ({self.skipped[name]})")
            return
        if self.left() < need:
            self.skipped[name] = f"out of time ({self.left():.0f} s left, needs ~{need:.0f})"
            say(f"{name}: skipped ({self.skipped[name]})")
            return
        self.current = name  # kept if the run is stopped in it, for the report
        try:
            work()
        except Exception as exc:
            self.errors[name] = f"{type(exc).__name__}: {exc}"
            print(f"--- {name} failed:", file=sys.stderr)
            traceback.print_exc()
            say(f"{name}: FAILED ({self.errors[name][:300]})")
        else:
            self.done.add(name)
        self.current = ""

    def engine_ms(self, precision: str) -> float:
        """An estimate of the engine's ms per step at `precision`, for the time guard."""
        if precision in self.ms_step:
            return self.ms_step[precision]
        known = [v for k, v in self.ms_step.items() if not k.startswith("transformers")]
        return max(known) if known else self.ms_step.get("transformers fp32", 50.0)

    def need_engine(self, precision: str) -> float:
        load = 0.0 if precision in self.engines else 1.5 * self.load_seconds + 5
        return load + 1.2 * self.steps * self.engine_ms(precision) / 1000

    def relate(self) -> None:
        """Each speed's end-to-end throughput over transformers fp32's, once that is known."""
        base = self.speed.get("transformers fp32 x1")
        if base is None:
            return
        for result in self.speed.values():
            result["vs_transformers_fp32"] = (
                result["end_to_end_request_steps_per_second"]
                / base["end_to_end_request_steps_per_second"]
            )

    def check_audio(self, name: str, finite: bool, seconds: float, wanted: float) -> None:
        """Record a failed check where audio came out non-finite or of the wrong length."""
        into = self.notes if optional(name) else self.failed_checks
        if not finite:
            into.append(f"{name}: audio not finite")
        if abs(seconds - wanted) > 1e-3:
            into.append(f"{name}: {seconds:.3f} s of audio, {wanted:g} s wanted")

    def free_memory(self) -> None:
        import gc

        gc.collect()
        if self.device.type == "cuda":
            self.torch.cuda.empty_cache()
