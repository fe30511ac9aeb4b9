"""``scripts/gpu-check``'s targets for the CUDA-graph step, and the runs measured against them.

`scale` times one batch of 1, 2, 4, 8 and 16 requests on an engine of 16 slots (the step's
time should stay nearly flat: it is bound by launches, not arithmetic); `stream` times a 30 s
track as the studio hears it (first audio, realtime); `judge` holds the served step's figures
to `TARGETS` (on CUDA only: the CPU dry run has none) and prints each beside its target and
beside the figure measured before the step was a graph (`EAGER_H200`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tunesmith.benchmark.gpu_engine import EngineRuns
    from tunesmith.benchmark.gpu_state import GpuState

__all__ = ["EAGER_H200", "SWEEP", "TARGETS", "judge", "scale", "stream"]

SWEEP = (1, 2, 4, 8, 16)
STREAM_SECONDS = 30.0

# request-steps/s of the engine's eager step on an NVIDIA H200 (torch 2.11, CUDA 13), random
# musicgen-small, 10 s clips, by `GpuState.speed` entry: the figures the graph step is set against
EAGER_H200 = {
    "transformers fp32 x1": 75.0,
    "tunesmith fp32 x1": 198.0,
    "tunesmith fp16 x1": 135.0,
    "tunesmith fp16 x8": 551.0,
}


@dataclass(frozen=True)
class Target:
    name: str
    speed: str  # the `GpuState.speed` entry
    figure: str  # its field
    minimum: float | None  # None: at least `over`'s figure
    over: str | None = None
    before: str | None = None  # `EAGER_H200` 's key

    def value(self, speed: dict[str, Any]) -> float | None:
        entry = speed.get(self.speed)
        return None if entry is None else float(entry[self.figure])

    def bar(self, speed: dict[str, Any]) -> float | None:
        if self.minimum is not None:
            return self.minimum
        entry = speed.get(self.over or "")
        return None if entry is None else float(entry[self.figure])


TARGETS = (
    Target(
        "fp16, 1 request, steps/s",
        "tunesmith fp16 x1",
        "steps_per_second",
        400.0,
        before="tunesmith fp16 x1",
    ),
    Target(
        "fp16, 8 requests, request-steps/s",
        "tunesmith fp16 x8",
        "request_steps_per_second",
        2500.0,
        before="tunesmith fp16 x8",
    ),
    Target(
        "fp16 at least as fast as fp32 (1 request)",
        "tunesmith fp16 x1",
        "steps_per_second",
        None,
        over="tunesmith fp32 x1",
        before="tunesmith fp16 x1",
    ),
)


def scale(check: EngineRuns) -> None:
    """Batches of `SWEEP` requests on one engine of ``max(SWEEP)`` slots at the half precision."""
    from tunesmith.engine import GenerationParams

    engine = check.engine(check.half, slots=max(SWEEP))
    prompt = "upbeat electronic dance music with heavy bass"
    requests = [
        GenerationParams(f"{prompt}, take {i}", check.args.duration, seed=i)
        for i in range(max(SWEEP))
    ]
    check.serve(engine, requests[:2])  # warm-up (and the graph's capture)
    rows: dict[int, dict[str, float]] = {}
    for n in SWEEP:
        result = check.serve(engine, requests[:n])
        rows[n] = {
            "steps_per_second": result["steps_per_second"],
            "request_steps_per_second": result["request_steps_per_second"],
            "ms_per_step": result["ms_per_step"],
            "steps_at_full_batch": result["steps_at_full_batch"],
        }
        print(
            f"scaling {check.half} ({engine.step_kind}, {max(SWEEP)} slots), {n:>2} requests: "
            f"{result['ms_per_step']:.2f} ms/step, {result['request_steps_per_second']:.0f} "
            "request-steps/s",
            flush=True,
        )
    flat = rows[8]["ms_per_step"] / rows[1]["ms_per_step"]
    check.figures["scaling"] = {"step": engine.step_kind, "requests": rows, "ms_8_over_1": flat}


def stream(check: EngineRuns) -> None:
    """A track of `STREAM_SECONDS` (the clip length on the CPU) streamed as `/jobs/{id}/audio`
    plays it: seconds to the first chunk, and audio seconds per wall second."""
    import numpy as np

    from tunesmith.engine import GenerationParams

    engine = check.engine(check.half)
    seconds = STREAM_SECONDS if check.device.type == "cuda" else check.args.duration
    params = GenerationParams("lofi hip hop beat with warm keys", seconds, seed=11)
    start = check.now()
    first = None
    samples = 0
    finite = True
    for chunk in engine.stream(params):
        if first is None:
            first = check.now() - start
        samples += len(chunk)
        finite = finite and bool(np.isfinite(chunk).all())
    total = check.now() - start
    audio = samples / engine.sample_rate
    check.check_audio(f"stream {check.half}", finite, audio, seconds)
    check.figures["streaming"] = {
        "seconds": seconds,
        "first_audio_seconds": first,
        "wall_seconds": total,
        "realtime": audio / total,
        "step": engine.step_kind,
    }
    print(
        f"streamed {seconds:g} s at {check.half} ({engine.step_kind}): first audio after "
        f"{first:.2f} s, realtime x{audio / total:.1f}",
        flush=True,
    )


def judge(check: GpuState) -> list[str]:
    """Each target's line for the report; a missed or unmeasured one joins `failed_checks`
    (on CUDA: the CPU dry run only prints them)."""
    cuda = check.device.type == "cuda"
    lines = [f"{'target':<44} {'measured':>9} {'target':>9} {'eager H200':>10}  verdict"]
    results = []
    for target in TARGETS:
        value, bar = target.value(check.speed), target.bar(check.speed)
        before = EAGER_H200.get(target.before or "")
        if value is None or bar is None:
            verdict = "not measured"
        else:
            verdict = "met" if value >= bar else "MISSED"
        if cuda and verdict != "met":
            check.failed_checks.append(f"target {target.name}: {verdict}")
        if not cuda:
            verdict += " (CPU: not held)"
        shown = "-" if value is None else f"{value:.0f}"
        wanted = "-" if bar is None else f">= {bar:.0f}"
        lines.append(
            f"{target.name:<44} {shown:>9} {wanted:>9} "
            f"{'-' if before is None else f'{before:.0f}':>10}  {verdict}"
        )
        results.append({"name": target.name, "value": value, "target": bar, "verdict": verdict})
    check.figures["targets"] = results
    scaling = check.figures.get("scaling")
    if scaling:
        rows = scaling["requests"]
        cells = ", ".join(f"{n}: {r['ms_per_step']:.2f}" for n, r in rows.items())
        lines.append(
            f"step time by batch (ms/step) {cells}; 8 over 1: x{scaling['ms_8_over_1']:.2f}"
        )
    streaming = check.figures.get("streaming")
    if streaming:
        lines.append(
            f"streamed {streaming['seconds']:g} s: first audio "
            f"{streaming['first_audio_seconds']:.2f} s, "
            f"realtime x{streaming['realtime']:.1f} ({streaming['step']})"
        )
    return lines
