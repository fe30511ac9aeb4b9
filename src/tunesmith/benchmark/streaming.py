"""Music that plays while it is made (`tunesmith bench --stream SECONDS`).

One sampled request streamed end to end in its own process: when each second of audio is
ready, the time to the first audio, the realtime factor (audio seconds per wall second), and
how much to buffer before playing so playback never stalls (the worst lag of a chunk behind
its place in the track). transformers' `generate` returns the track all at once, so its time
to first audio is its whole run: it runs on the same weights, in its own process, for the
ratio.

``python -m tunesmith.benchmark.streaming --model DIR --duration S --precision P`` prints one
JSON line (what `stream_section` runs).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["cold_start", "main", "stream_section"]

PROMPT = "lofi hip hop beat with warm keys"


def _measure(model: str, duration: float, precision: str) -> dict[str, Any]:
    from tunesmith.benchmark.worker import rss_mb
    from tunesmith.engine import GenerationParams, MusicGenEngine

    engine = MusicGenEngine(model, device="cpu", precision=precision)
    engine.setup()
    list(engine.stream(GenerationParams(PROMPT, 1.0, seed=1)))  # warm-up
    rate = engine.sample_rate
    arrivals: list[tuple[float, float]] = []  # (seconds since the start, track position)
    position = 0.0
    start = time.perf_counter()
    for chunk in engine.stream(GenerationParams(PROMPT, duration, seed=0)):
        arrivals.append((time.perf_counter() - start, position))
        position += chunk.shape[0] / rate
    seconds = time.perf_counter() - start
    engine.close()
    return {
        "duration": position,
        "seconds": seconds,
        "first_audio_seconds": arrivals[0][0],
        "realtime_factor": position / seconds,
        # start playing this long after the request and no chunk arrives after its turn
        "buffer_seconds": max(at - where for at, where in arrivals),
        "chunks": len(arrivals),
        "peak_rss_mb": rss_mb()[1],
    }


def _cold(model: str, duration: float, precision: str, started: float) -> dict[str, Any]:
    """From this process's start (`started`, the parent's wall clock when it spawned it) to the
    first audio of a streamed request, with no warm-up: what a fresh server or a SageMaker
    cold start costs."""
    from tunesmith.benchmark.worker import rss_mb
    from tunesmith.engine import GenerationParams, MusicGenEngine

    engine = MusicGenEngine(model, device="cpu", precision=precision)
    engine.setup()
    loaded = time.time()
    first = None
    for _ in engine.stream(GenerationParams(PROMPT, duration, seed=0)):
        first = first or time.time()
    engine.close()
    assert first is not None
    return {
        "first_audio_after_start_seconds": first - started,
        "setup_seconds": engine.load_seconds,
        "started_to_loaded_seconds": loaded - started,
        "peak_rss_mb": rss_mb()[1],
    }


def cold_start(model: str, precision: str) -> dict[str, Any]:
    """`_cold` in a new process twice, with an empty store of converted weights: the first
    start converts and stores them, the second maps them."""
    from tunesmith.benchmark.worker import run_module

    runs = []
    with tempfile.TemporaryDirectory(prefix="tunesmith-store-") as store:
        for _ in range(2):
            args = ["--model", model, "--duration", "2", "--precision", precision]
            args += ["--cold-start", repr(time.time())]
            runs.append(
                run_module(
                    "tunesmith.benchmark.streaming",
                    *args,
                    what="cold start",
                    env={"TUNESMITH_WEIGHT_CACHE": store},
                )
            )
    return {"first": runs[0], "stored": runs[1]}


def stream_section(
    model: str,
    duration: float,
    precision: str,
    out: Path,
    say: Callable[[str], None],
    *,
    reference: bool = True,
) -> dict[str, Any]:
    """Stream one track in its own process, and time transformers on the same weights."""
    from tunesmith.benchmark.worker import run_module, spawn

    say(f"streaming: {duration:g} s, {precision}, one sampled request")
    args = ["--model", model, "--duration", str(duration), "--precision", precision]
    ours = run_module("tunesmith.benchmark.streaming", *args, what="streaming benchmark")
    say(
        f"  tunesmith     first audio {ours['first_audio_seconds']:6.2f} s  whole track "
        f"{ours['seconds']:6.1f} s  realtime x{ours['realtime_factor']:.2f}  play without "
        f"stalls after {ours['buffer_seconds']:.1f} s  RSS {ours['peak_rss_mb']:.0f} MB peak"
    )
    figures: dict[str, Any] = {"tunesmith": ours}
    if reference:
        theirs = spawn("reference", model, out, "--duration", str(duration))
        figures["transformers"] = theirs
        ratio = theirs["seconds"] / ours["first_audio_seconds"]
        say(
            f"  transformers  first audio {theirs['seconds']:6.2f} s  (generate returns the "
            f"whole track)  realtime x{duration / theirs['seconds']:.2f}"
        )
        say(f"  first audio: tunesmith {ratio:.1f}x sooner than transformers")
        figures["first_audio_ratio"] = ratio
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one streamed track, timed chunk by chunk")
    parser.add_argument("--model", required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--precision", default="int8")
    parser.add_argument(
        "--cold-start", type=float, metavar="TIME", help="instead: time from TIME to first audio"
    )
    args = parser.parse_args(argv)
    if args.cold_start is not None:
        print(json.dumps(_cold(args.model, args.duration, args.precision, args.cold_start)))
    else:
        print(json.dumps(_measure(args.model, args.duration, args.precision)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
