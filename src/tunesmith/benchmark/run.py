"""``tunesmith bench``: tunesmith's engine against transformers `generate`, same weights, one run.

Each measurement runs in its own process (`tunesmith.benchmark.worker`) so RSS figures are
its own; they run one after another, never at once. Without ``--model`` the full
musicgen-small architecture runs with random weights (same shapes and compute as the real
checkpoint), saved once into the cache directory. ``--arch`` runs other architectures
instead (`tunesmith.benchmark.architectures`). The output ends with one JSON line of every
figure.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from tunesmith.benchmark.machine import describe
from tunesmith.benchmark.worker import spawn as _worker

__all__ = ["main"]

PRECISIONS = ("fp32", "int8", "int4")  # the CPU's
QUANTIZED = tuple(p for p in PRECISIONS if p != "fp32")  # fastest last


def _say(line: str) -> None:
    print(line, flush=True)


def _engine_line(
    name: str, run: dict[str, Any], reference: dict[str, Any] | None, read_gbps: float
) -> None:
    per_step = run["seconds"] / run["steps"] * 1000
    decode_step = run.get("decode_seconds", run["seconds"]) / run["steps"] * 1000
    rtf = run.get("audio_seconds", 0) / run["seconds"] if run.get("audio_seconds") else None
    text = f"{name:<22} {run['seconds']:7.2f} s  {per_step:6.1f} ms/step end to end"
    if "decode_seconds" in run:
        text += f" ({decode_step:5.1f} decoding)"
    if rtf:
        text += f"  realtime x{rtf:.2f}"
    if reference is not None:
        text += f"  {reference['seconds'] / run['seconds']:.2f}x transformers"
    text += f"  RSS {run['rss_after_load_mb']:.0f} MB after load"
    if "rss_after_run_mb" in run:
        text += f", {run['rss_after_run_mb']:.0f} after the run"
    text += f", {run['rss_peak_mb']:.0f} peak"
    if "weight_mb" in run:  # the weights' bytes at the measured memory read rate
        floor = run["weight_mb"] / read_gbps
        text += f"  weight-read floor {floor:.1f} ms/step (decoding x{decode_step / floor:.2f})"
    if "load_seconds" in run:
        text += f"  load {run['load_seconds']:.1f} s"
    _say(text)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    from tunesmith.testing.random_model import PRESETS

    parser = argparse.ArgumentParser(prog="tunesmith bench", description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model directory (default: random musicgen-small)")
    parser.add_argument("-d", "--duration", type=float, default=5.0, help="clip seconds (5)")
    parser.add_argument("--concurrency", type=int, default=0, help="also serve N at once")
    parser.add_argument("--concurrency-duration", type=float, default=10.0)
    parser.add_argument("--skip-reference", action="store_true", help="no transformers run")
    parser.add_argument(
        "--peer",
        action="store_true",
        help="also ONNX Runtime fp32 and int8 on the same weights (the default when "
        "onnxruntime is installed: pip install tunesmith[peer])",
    )
    parser.add_argument("--skip-peer", action="store_true", help="no ONNX Runtime runs")
    section = parser.add_argument_group(
        "architectures",
        "--arch runs instead of the default comparison: on each architecture, transformers "
        "generate and tunesmith at each precision, one table row each (load time, ms/step, "
        "realtime factor, ratio to transformers, channels, RSS, greedy codes vs transformers)",
    )
    section.add_argument(
        "--arch",
        metavar="LIST",
        help="comma-separated architectures: random-weight presets (small, small-stereo, "
        "medium; tiny, tiny-stereo, tiny-medium for tests) or checkpoint directories; e.g. "
        "--arch small,small-stereo,medium",
    )
    section.add_argument(
        "--arch-precision",
        metavar="LIST",
        default="fp32,int8",
        help="tunesmith precisions to run on each (default fp32,int8)",
    )
    parser.add_argument(
        "--long",
        metavar="LIST",
        help="instead: seconds of compute per second of audio for tracks of these lengths, "
        "e.g. --long 30,60,120 (tunesmith only: transformers stops at one window)",
    )
    parser.add_argument("--long-precision", default="int8", choices=PRECISIONS)
    parser.add_argument("--stride", type=float, default=18.0, help="--long's extend stride")
    parser.add_argument(
        "--stream",
        type=float,
        metavar="SECONDS",
        help="instead: stream a track this long: time to first audio, realtime factor, the "
        "buffer that plays it without stalls (transformers: its whole run)",
    )
    parser.add_argument("--stream-precision", default="int8", choices=PRECISIONS)
    parser.add_argument(
        "--melody",
        metavar="PRESET",
        choices=["tiny", "small"],
        help="instead: time musicgen-melody (random weights; small is its real architecture)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="where random checkpoints are saved once and reused "
        "(default $XDG_CACHE_HOME/tunesmith/bench, else ~/.cache/tunesmith/bench)",
    )
    args = parser.parse_args(argv)
    args.arch = [entry for entry in (args.arch or "").split(",") if entry]
    args.arch_precision = [p for p in args.arch_precision.split(",") if p]
    if args.arch:
        if args.model or args.concurrency:
            parser.error("--model and --concurrency belong to the default comparison, not --arch")
        for entry in args.arch:
            if entry not in PRESETS and not (Path(entry) / "config.json").is_file():
                parser.error(
                    f"--arch {entry!r}: neither a preset ({', '.join(PRESETS)}) nor a "
                    "checkpoint directory"
                )
        unknown = sorted(set(args.arch_precision) - set(PRECISIONS))
        if unknown or not args.arch_precision:
            parser.error(f"--arch-precision: choose from {', '.join(PRECISIONS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    # random checkpoints are saved in this process: without transformers' warnings and bars
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' own bars
    with tempfile.TemporaryDirectory(prefix="tunesmith-bench-") as tmp:
        out = Path(tmp)
        figures: dict[str, Any] = {"duration": args.duration}
        figures["machine"] = machine = describe()
        _say(
            f"machine: {machine['cpu']}, {machine['cores']} CPUs, torch CPU capability "
            f"{machine['torch_cpu_capability']}, memory read {machine['memory_read_gbps']:.1f} "
            "GB/s (512 MB, best of 5)"
        )
        from tunesmith.engine import kernels

        kernel_status = kernels.status("cpu")
        figures["kernels"] = kernel_status.path
        _say(f"kernels: {kernel_status.describe()}")
        if args.long:
            from tunesmith.benchmark.architectures import checkpoint_for
            from tunesmith.benchmark.long_tracks import long_section

            model = args.model or str(checkpoint_for("small", args.cache_dir, _say)[0])
            lengths = [float(v) for v in args.long.split(",") if v]
            figures["long"] = long_section(model, lengths, args.long_precision, args.stride, _say)
        elif args.stream:
            from tunesmith.benchmark.architectures import checkpoint_for
            from tunesmith.benchmark.streaming import stream_section

            model = args.model or str(checkpoint_for("small", args.cache_dir, _say)[0])
            figures["stream"] = stream_section(
                model,
                args.stream,
                args.stream_precision,
                out,
                _say,
                reference=not args.skip_reference,
            )
        elif args.melody:
            from tunesmith.benchmark.melody import melody_section

            figures["melody"] = melody_section(args.melody, args.duration, args.cache_dir, _say)
        elif args.arch:
            from tunesmith.benchmark.architectures import run_architectures

            figures["architectures"] = run_architectures(
                args.arch,
                args.arch_precision,
                args.duration,
                out,
                cache=args.cache_dir,
                reference=not args.skip_reference,
                say=_say,
            )
        else:
            _default_section(args, out, figures)
    print(json.dumps(figures), flush=True)
    return 0


def _default_section(args: argparse.Namespace, out: Path, figures: dict[str, Any]) -> None:
    """musicgen-small (or --model): transformers, fp32 with parity, int8 with drift, batching."""
    read = figures["machine"]["memory_read_gbps"]
    figures["model"] = args.model or "random"
    model = args.model
    if model is None:
        from tunesmith.benchmark.architectures import checkpoint_for

        model = str(checkpoint_for("small", args.cache_dir, _say)[0])
    duration = ["--duration", str(args.duration)]
    _say(f"clip {args.duration:g} s, prompt and weights shared by every run; greedy decoding")

    reference = None
    if not args.skip_reference:
        reference = _worker("reference", model, out, *duration)
        figures["reference"] = reference
        _engine_line("transformers fp32", reference, None, read)
    fp32 = _worker("engine", model, out, *duration, "--precision", "fp32")
    figures["fp32"] = fp32
    _engine_line("tunesmith fp32", fp32, reference, read)
    if reference is not None:
        import torch

        from tunesmith.benchmark.reference import compare_scores

        parity = compare_scores(
            torch.load(out / "reference-scores.pt"), torch.load(out / "fp32-scores.pt")
        )
        figures["parity"] = parity.as_dict()
        verdict = (
            "same greedy codes"
            if parity.codes_equal
            else (
                f"codes differ from step {parity.first_mismatch} "
                f"(reference top-2 gap there {parity.gap_at_mismatch:.2e})"
            )
        )
        _say(
            f"parity fp32 vs transformers: {verdict}; max |logit diff| "
            f"{parity.max_abs_diff:.2e} (logits up to {parity.scale:.2f})"
        )
    for precision in QUANTIZED:
        teacher = ["--precision", precision, "--teacher", "fp32"]
        run = _worker("engine", model, out, *duration, *teacher)
        figures[precision] = run
        _engine_line(f"tunesmith {precision}", run, reference, read)
        drift = run["vs_teacher"]
        _say(
            f"{precision} vs fp32, teacher-forced: top-1 agreement "
            f"{drift['top1_agreement']:.1%}, mean KL {drift['mean_kl']:.2e}"
        )
    _cold_start_section(model, figures)
    if not args.skip_peer:
        from tunesmith.benchmark.onnx_peer import peer_section

        peer_section(model, args.duration, out, figures, _say, args.cache_dir)
    if args.concurrency:
        _concurrency_section(args, model, out, figures)


def _cold_start_section(model: str, figures: dict[str, Any]) -> None:
    """Process start to first audio at the fastest CPU precision, once its converted weights
    are on disk (`tunesmith.engine.musicgen.model.store`)."""
    from tunesmith.benchmark.streaming import cold_start

    precision = QUANTIZED[-1]
    runs = cold_start(model, precision)
    figures["cold_start"] = {"precision": precision, **runs}
    first, stored = runs["first"], runs["stored"]
    _say(
        f"cold start {precision}: first audio {stored['first_audio_after_start_seconds']:.2f} s "
        f"after the process started (load {stored['setup_seconds']:.1f} s, converted weights "
        f"mapped from disk; {first['first_audio_after_start_seconds']:.2f} s converting them)"
    )


def _concurrency_section(
    args: argparse.Namespace, model: str, out: Path, figures: dict[str, Any]
) -> None:
    many = ["--requests", str(args.concurrency), "--duration", str(args.concurrency_duration)]
    for precision in ("int8", "fp32"):
        result = _worker("concurrency", model, out, *many, "--precision", precision)
        figures[f"concurrency_{precision}"] = result
        _say(
            f"{args.concurrency} x {args.concurrency_duration:g} s {precision}: "
            f"one after another {result['sequential_seconds']:.1f} s, "
            f"together {result['concurrent_seconds']:.1f} s: "
            f"{result['concurrent_audio_per_second']:.2f} vs "
            f"{result['sequential_audio_per_second']:.2f} audio-s per s "
            f"({result['speedup']:.2f}x); batched codes identical to solo for "
            f"{result['identical_codes']}/{result['requests']}; "
            f"peak RSS {result['rss_peak_mb']:.0f} MB"
        )
    fastest = figures["concurrency_int8"]["sequential_audio_per_second"]
    figures["batched_int8_vs_fastest_sequential"] = (
        figures["concurrency_int8"]["concurrent_audio_per_second"] / fastest
    )
    _say(
        "batched int8 vs one-after-another int8 (fastest single mode): "
        f"{figures['batched_int8_vs_fastest_sequential']:.2f}x"
    )


if __name__ == "__main__":
    raise SystemExit(main())
