"""How fast musicgen-melody runs (`tunesmith bench --melody PRESET`).

tunesmith's fast decoder runs cross-attention models; musicgen-melody conditions on a chroma
prefix instead, so the engine runs transformers' own `generate` for it: this times that, with
a melody upload, in its own process, on random weights saved once (`random_melody`).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["melody_section"]


def _measure(model: str, duration: float) -> dict[str, Any]:
    import numpy as np

    from tunesmith.benchmark.worker import rss_mb
    from tunesmith.engine import GenerationParams, MusicGenEngine

    start = time.perf_counter()
    engine = MusicGenEngine(model, device="cpu")
    engine.setup()
    load = time.perf_counter() - start
    rate = engine.sample_rate
    t = np.arange(round(duration * rate)) / rate
    tune = (0.3 * np.sin(2 * np.pi * 440 * t * (1 + (t > duration / 2) / 4)))[:, None]
    start = time.perf_counter()
    track = engine.generate(
        GenerationParams("jazz trio", duration, seed=0), melody=tune.astype(np.float32)
    )
    seconds = time.perf_counter() - start
    engine.close()
    steps = engine.frames_for(duration)
    return {"load": load, "seconds": seconds, "steps": steps, "duration": track.duration,
            "peak_rss_mb": rss_mb()[1]}  # fmt: skip


def melody_section(
    preset: str, duration: float, cache: Path | None, say: Callable[[str], None]
) -> dict[str, Any]:
    """Save (once) and time a random musicgen-melody of `preset`; print one line."""
    from tunesmith.benchmark.worker import run_module
    from tunesmith.testing.random_melody import cached_random_melody

    path, saved_now = cached_random_melody(preset, cache)
    when = "saved now; later runs reuse them" if saved_now else "saved by an earlier run"
    say(f"melody {preset}: random weights in {path} ({when})")
    args = [str(path), str(duration)]
    result = run_module("tunesmith.benchmark.melody", *args, what="melody benchmark")
    ms = 1000 * result["seconds"] / result["steps"]
    say(
        f"melody {preset} (transformers generate, fp32): {result['duration']:g} s clip in "
        f"{result['seconds']:.1f} s, {ms:.1f} ms/step, realtime "
        f"x{result['duration'] / result['seconds']:.2f}, load {result['load']:.1f} s, "
        f"RSS {result['peak_rss_mb']:.0f} MB peak"
    )
    return result


if __name__ == "__main__":
    print(json.dumps(_measure(sys.argv[1], float(sys.argv[2]))))
