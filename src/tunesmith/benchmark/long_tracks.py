"""What a second of audio costs as tracks grow past one window (`tunesmith bench --long`).

Each length is one sampled request end to end (prompt, every window, EnCodec decoding) in
its own process, so the figures are per track. transformers' `generate` stops at one window,
so there is no reference past 30 s: each length is compared with the first, whose cost per
second is one window's. After the first window each one adds ``stride`` seconds for a window
of decoding (its known context prefilled), so the cost per second rises from one window's
towards a limit (about ``window / stride`` times it where prefill is as slow as stepping, as
on 2 CPUs) and stays there however long the track.

``python -m tunesmith.benchmark.long_tracks --model DIR --duration S --precision P`` prints
one JSON line (what `long_section` runs for each length).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

__all__ = ["long_section", "main"]

PROMPT = "ambient drone with evolving pads"


def _measure(model: str, duration: float, precision: str, stride: float) -> dict[str, Any]:
    from tunesmith.benchmark.worker import rss_mb
    from tunesmith.engine import GenerationParams, MusicGenEngine

    engine = MusicGenEngine(model, device="cpu", precision=precision, extend_stride=stride)
    engine.setup()
    windows = engine.windows_for(duration)
    steps = engine.steps_for(duration)
    start = time.perf_counter()
    track = engine.generate(GenerationParams(PROMPT, duration, seed=0))
    seconds = time.perf_counter() - start
    engine.close()
    return {
        "duration": track.duration,
        "seconds": seconds,
        "windows": len(windows),
        "steps": steps,
        "prefilled_frames": sum(w.context for w in windows),
        "peak_rss_mb": rss_mb()[1],
    }


def long_section(
    model: str,
    durations: list[float],
    precision: str,
    stride: float,
    say: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Run each length in its own process and print its cost per second of audio."""
    say(f"long tracks: {precision}, stride {stride:g} s, one sampled request per length")
    results: list[dict[str, Any]] = []
    for duration in durations:
        result = _spawn(model, duration, precision, stride)
        per_second = result["seconds"] / result["duration"]
        first = results[0]["seconds"] / results[0]["duration"] if results else per_second
        results.append(result)
        say(
            f"  {result['duration']:6.0f} s  {result['windows']} window(s)  "
            f"{result['seconds']:8.1f} s  {per_second:6.2f} s per audio second  "
            f"x{per_second / first:.2f} the first's  prefilled {result['prefilled_frames']} "
            f"frames  RSS {result['peak_rss_mb']:.0f} MB peak"
        )
    return results


def _spawn(model: str, duration: float, precision: str, stride: float) -> dict[str, Any]:
    from tunesmith.benchmark.worker import run_module

    args = ["--model", model, "--duration", str(duration), "--precision", precision]
    args += ["--stride", str(stride)]
    return run_module("tunesmith.benchmark.long_tracks", *args, what="long-track benchmark")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one long track, timed end to end")
    parser.add_argument("--model", required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--stride", type=float, default=18.0)
    args = parser.parse_args(argv)
    print(json.dumps(_measure(args.model, args.duration, args.precision, args.stride)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
