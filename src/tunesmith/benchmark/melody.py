"""How fast musicgen-melody runs (`tunesmith bench --melody PRESET`): tunesmith's fast decoder
(the chroma prefix, `tunesmith.engine.melody`) at fp32 and int4 against transformers' own
`generate` (`MelodyGenerator`, the parity tests' oracle) on the same random weights, the same
prompt, melody and length: codes only, chroma and text encoding included, EnCodec aside.

Each precision runs in a process of its own (its memory its own); transformers runs in the
fp32 process, on the weights the fp32 decoder shares with it.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["melody_section"]

PROMPT = "jazz trio with a walking bass"
PRECISIONS = ("fp32", "int4")  # exact, and the fastest on a CPU


def _tune(duration: float, rate: int) -> Any:
    """A melody that changes note halfway: ``(frames, 1)`` float32."""
    import numpy as np

    t = np.arange(round(duration * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t * (1 + (t > duration / 2) / 4)))[:, None].astype(
        np.float32
    )


def _measure(model: str, duration: float, precision: str) -> dict[str, Any]:
    from tunesmith.benchmark.worker import rss_mb
    from tunesmith.engine import GenerationParams, MusicGenEngine
    from tunesmith.engine.melody.generator import MelodyGenerator

    start = time.perf_counter()
    engine = MusicGenEngine(model, device="cpu", precision=precision)
    engine.setup()
    load = time.perf_counter() - start
    melody = _tune(duration, engine.sample_rate)
    params = GenerationParams(PROMPT, duration, seed=0)
    warm = GenerationParams(PROMPT, 0.5, seed=0)  # the first calls' one-off costs aside
    engine.generate_codes(warm, melody=_tune(1.0, engine.sample_rate))
    start = time.perf_counter()
    codes = engine.generate_codes(params, melody=melody)
    fast = time.perf_counter() - start
    result = {
        "precision": engine.precision,
        "kernels": engine.kernels.path,
        "load": load,
        "seconds": fast,
        "steps": engine.steps_for(duration),
        "frames": int(codes.shape[1]),
    }
    if precision == "fp32":  # transformers on the same (shared) float weights
        oracle = MelodyGenerator(engine.loaded)
        frames = engine.frames_for(duration)
        oracle.codes_for(PROMPT, melody, engine.sample_rate, 10, params.sampling, 0)  # warm
        start = time.perf_counter()
        oracle.codes_for(PROMPT, melody, engine.sample_rate, frames, params.sampling, 0)
        result["transformers_seconds"] = time.perf_counter() - start
        result["transformers_steps"] = frames + oracle.num_codebooks - 1
    engine.close()
    result["peak_rss_mb"] = rss_mb()[1]
    return result


def melody_section(
    preset: str, duration: float, cache: Path | None, say: Callable[[str], None]
) -> dict[str, Any]:
    """Save (once) a random musicgen-melody of `preset`, time each precision's fast path and
    transformers' `generate` on it; print a line each and the ratio."""
    from tunesmith.benchmark.worker import run_module
    from tunesmith.testing.random_melody import cached_random_melody

    path, saved_now = cached_random_melody(preset, cache)
    when = "saved now; later runs reuse them" if saved_now else "saved by an earlier run"
    say(f"melody {preset}: random weights in {path} ({when}); {duration:g} s, one request")
    runs: dict[str, Any] = {}
    for precision in PRECISIONS:
        args = [str(path), str(duration), precision]
        runs[precision] = run_module("tunesmith.benchmark.melody", *args, what="melody benchmark")
    reference = runs["fp32"]
    base = _line(say, "transformers generate, fp32", reference["transformers_seconds"],
                 reference["transformers_steps"], duration)  # fmt: skip
    figures: dict[str, Any] = {"duration": duration, "transformers": base}
    for precision, run in runs.items():
        name = f"tunesmith {run['precision']} (kernels {run['kernels']})"
        figures[precision] = _line(say, name, run["seconds"], run["steps"], duration)
        figures[precision].update(load=run["load"], peak_rss_mb=run["peak_rss_mb"])
        ratio = base["ms_per_step"] / figures[precision]["ms_per_step"]
        figures[precision]["speedup"] = ratio
        say(f"  x{ratio:.2f} transformers' speed per step; load {run['load']:.1f} s, RSS "
            f"{run['peak_rss_mb']:.0f} MB peak")  # fmt: skip
    return figures


def _line(
    say: Callable[[str], None], name: str, seconds: float, steps: int, duration: float
) -> dict[str, float]:
    ms = 1000 * seconds / steps
    say(f"melody {name}: {steps} steps in {seconds:.1f} s, {ms:.1f} ms/step, realtime "
        f"x{duration / seconds:.2f}")  # fmt: skip
    return {"seconds": seconds, "steps": steps, "ms_per_step": ms, "realtime": duration / seconds}


if __name__ == "__main__":
    print(json.dumps(_measure(sys.argv[1], float(sys.argv[2]), sys.argv[3])))
