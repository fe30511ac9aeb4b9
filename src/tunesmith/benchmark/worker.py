"""One benchmark measurement in its own process, so its memory figures are its own.

``python -m tunesmith.benchmark.worker MODE --model DIR ...`` prints one JSON line (`spawn`
runs one and reads it back). Modes:

- ``reference``: transformers `generate` (fp32, greedy, guidance 3) end to end; saves scores.
- ``engine``: tunesmith's engine at ``--precision``, one request end to end (greedy); saves
  scores and codes; with ``--teacher PRECISION`` it also replays that earlier run's codes
  (teacher forcing) to compare its logits with the run that made them.
- ``concurrency``: ``--requests N`` sampled requests served one after another, then all at
  once; throughput of each and how many batched requests got exactly their solo codes.
- ``onnx``: the peer, ONNX Runtime at ``--precision`` (fp32, int8) on an export of the same
  checkpoint (`tunesmith.benchmark.onnx_peer`), greedy or forced to ``--teacher``'s codes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

__all__ = ["main", "rss_mb", "run_module", "spawn"]

PROMPT = "upbeat electronic dance music with heavy bass"


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process, in MB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def run_module(
    module: str, *args: str, what: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """``python -m module args`` in a new process (its memory figures its own), with `env`
    added to this one's: the JSON object its last line prints. `what` names it in the error
    when it fails."""
    command = [sys.executable, "-m", module, *args]
    env = {**os.environ, **(env or {}), "TRANSFORMERS_VERBOSITY": "error", "TQDM_DISABLE": "1"}
    env["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # transformers' bars, in its error output
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def spawn(mode: str, model: str, out: Path, *extra: str) -> dict[str, Any]:
    """Run one measurement in a new process (this module) and return its figures."""
    args = [mode, "--model", model, "--out", str(out), *extra]
    return run_module("tunesmith.benchmark.worker", *args, what=f"benchmark worker {mode}")


def _reference(args: argparse.Namespace) -> dict[str, Any]:
    from tunesmith.benchmark.reference import reference_scores
    from tunesmith.engine.loader import load_model

    start = time.perf_counter()
    loaded = load_model(args.model, "cpu")
    load_seconds = time.perf_counter() - start
    after_load = rss_mb()[0]
    frames = math.ceil(args.duration * loaded.frame_rate)
    # the last codebook's delay; a stereo model delays each left/right pair together
    steps = frames + loaded.num_codebooks // loaded.audio_channels - 1
    start = time.perf_counter()
    scores = reference_scores(loaded.model, loaded.processor, PROMPT, steps, 3.0)
    seconds = time.perf_counter() - start
    torch.save(scores, args.out / "reference-scores.pt")
    return {
        "seconds": seconds,
        "steps": steps,
        "audio_seconds": args.duration,  # generate decodes the audio too
        "load_seconds": load_seconds,
        "rss_after_load_mb": after_load,
    }


def _engine(args: argparse.Namespace) -> dict[str, Any]:
    from tunesmith.benchmark.reference import compare_scores, engine_scores
    from tunesmith.engine import GenerationParams, MusicGenEngine

    start = time.perf_counter()
    engine = MusicGenEngine(args.model, "cpu", precision=args.precision, max_batch=1)
    engine.setup()
    load_seconds = time.perf_counter() - start
    after_load = rss_mb()[0]
    params = GenerationParams(PROMPT, args.duration, seed=0, greedy=True)
    loaded, decoder = engine.loaded, engine.decoder
    start = time.perf_counter()
    job = engine.start_job(params)  # engine.generate, with the job's scores recorded
    job.scores = []
    encoded = time.perf_counter()
    engine.scheduler.submit(job).wait()
    decoded = time.perf_counter()
    track = engine.decode_audio(decoder.codes(job), args.duration)
    seconds = time.perf_counter() - start
    scores = torch.stack(job.scores).float()
    torch.save(scores, args.out / f"{args.precision}-scores.pt")
    torch.save(job.tokens.cpu(), args.out / f"{args.precision}-tokens.pt")
    result: dict[str, Any] = {
        "seconds": seconds,
        "decode_seconds": decoded - encoded,
        "steps": job.steps,
        "audio_seconds": track.duration,
        "channels": track.samples.shape[1],
        "load_seconds": load_seconds,
        "weight_mb": decoder.step_bytes([job]) / 1e6,
        "rss_after_load_mb": after_load,
        "rss_after_run_mb": rss_mb()[0],
    }
    if args.teacher is not None:
        teacher_scores = torch.load(args.out / f"{args.teacher}-scores.pt")
        teacher_tokens = torch.load(args.out / f"{args.teacher}-tokens.pt")
        frames = engine.frames_for(args.duration)
        forced, _ = engine_scores(
            decoder, loaded.processor, PROMPT, frames, 3.0, teacher=teacher_tokens
        )
        result["vs_teacher"] = compare_scores(teacher_scores, forced).as_dict()
    engine.close()
    return result


def _concurrency(args: argparse.Namespace) -> dict[str, Any]:
    from tunesmith.engine import GenerationParams, MusicGenEngine

    n = args.requests
    engine = MusicGenEngine(args.model, "cpu", precision=args.precision, max_batch=n)
    engine.setup()
    requests = [GenerationParams(f"{PROMPT}, take {i}", args.duration, seed=i) for i in range(n)]
    engine.generate(GenerationParams(PROMPT, 1.0, seed=99))  # warm-up
    start = time.perf_counter()
    solo = [engine.generate_codes(p) for p in requests]  # decode audio too, as served
    for codes, p in zip(solo, requests, strict=True):
        engine.decode_audio(codes, p.duration)
    sequential = time.perf_counter() - start
    start = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        together = list(pool.map(engine.generate_codes, requests))
        list(pool.map(engine.decode_audio, together, [p.duration for p in requests]))
    concurrent = time.perf_counter() - start
    identical = sum(torch.equal(a, b) for a, b in zip(solo, together, strict=True))
    sizes = dict(engine.scheduler.batch_sizes)
    engine.close()
    audio = n * args.duration
    return {
        "requests": n,
        "sequential_seconds": sequential,
        "concurrent_seconds": concurrent,
        "sequential_audio_per_second": audio / sequential,
        "concurrent_audio_per_second": audio / concurrent,
        "speedup": sequential / concurrent,
        "identical_codes": identical,
        "batch_sizes": sizes,
    }


def _onnx(args: argparse.Namespace) -> dict[str, Any]:
    from tunesmith.benchmark.onnx_peer import peer_worker

    options = {"cache": args.cache_dir, "teacher": args.teacher, "threads": args.threads or None}
    return peer_worker(args.model, args.duration, args.precision, args.out, **options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["reference", "engine", "concurrency", "onnx"])
    parser.add_argument("--model", required=True)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--teacher", help="precision of an earlier engine run to replay")
    parser.add_argument("--out", type=Path, required=True, help="directory for score files")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--cache-dir", type=Path, help="onnx: where exports are kept")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    modes = {"reference": _reference, "engine": _engine, "concurrency": _concurrency}
    run = {**modes, "onnx": _onnx}[args.mode]
    result = run(args)
    result["rss_peak_mb"] = rss_mb()[1]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
