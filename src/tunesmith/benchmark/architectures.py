"""``tunesmith bench --arch``: other architectures' speed and memory, against transformers.

Each architecture is a preset of `tunesmith.testing.random_model` (random weights with the
real checkpoint's shapes, saved once into the cache directory and reused) or a checkpoint
directory. On each, transformers `generate` (fp32) and tunesmith's engine at every precision
asked for run the same greedy clip on the same weights, each in its own worker process, one
after another, so each row's RSS is that engine's alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunesmith.benchmark.worker import spawn

__all__ = ["COLUMNS", "checkpoint_for", "run_architectures"]

Say = Callable[[str], None]

# the table's columns: heading and width; names left-aligned, figures right-aligned
COLUMNS = [
    ("architecture", -14),
    ("engine", -18),
    ("load s", 6),
    ("run s", 7),
    ("ms/step", 7),
    ("realtime", 8),
    ("vs transformers", 15),
    ("channels", 8),
    ("RSS load MB", 11),
    ("RSS peak MB", 11),
    ("greedy codes vs transformers", 0),
]


def _row(*cells: str) -> str:
    parts = [
        cell.ljust(-width) if width < 0 else cell.rjust(width)
        for (_, width), cell in zip(COLUMNS, cells, strict=True)
    ]
    return "  ".join(parts).rstrip()


def _size(path: Path) -> str:
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    return f"{size / 1e9:.1f} GB" if size >= 1e8 else f"{size / 1e6:.1f} MB"


def checkpoint_for(entry: str, cache: Path | None, say: Say) -> tuple[Path, dict[str, Any]]:
    """The checkpoint directory for a preset name or a directory, and how it was had."""
    from tunesmith.testing.random_model import PRESETS, cached_path, cached_random_musicgen

    if entry not in PRESETS:
        return Path(entry), {"source": "directory"}
    if not (cached_path(entry, cache) / "config.json").is_file():
        say(f"{entry}: saving random weights into {cached_path(entry, cache)} once ...")
    path, saved_now = cached_random_musicgen(entry, cache)
    when = "saved now; later runs reuse them" if saved_now else "saved by an earlier run"
    say(f"{entry}: random weights in {path} ({_size(path)}, {when})")
    return path, {"source": "random", "saved_now": saved_now}


def _shape(path: Path) -> dict[str, int]:
    decoder = json.loads((path / "config.json").read_text())["decoder"]
    names = ["num_hidden_layers", "hidden_size", "num_attention_heads", "ffn_dim"]
    shape = {name: int(decoder[name]) for name in names}
    shape["num_codebooks"] = int(decoder["num_codebooks"])
    shape["audio_channels"] = int(decoder.get("audio_channels", 1))
    return shape


def _describe(entry: str, shape: dict[str, int]) -> str:
    return (
        f"{entry}: decoder {shape['num_hidden_layers']} layers, width {shape['hidden_size']}, "
        f"{shape['num_attention_heads']} heads, ffn {shape['ffn_dim']}, "
        f"{shape['num_codebooks']} codebooks, {shape['audio_channels']} channel(s)"
    )


def _verdict(reference: Path, scores: Path) -> tuple[str, dict[str, Any]]:
    import torch

    from tunesmith.benchmark.reference import compare_scores

    parity = compare_scores(torch.load(reference), torch.load(scores))
    if parity.codes_equal:
        text = f"same (max |logit diff| {parity.max_abs_diff:.1e})"
    else:
        text = f"differ from step {parity.first_mismatch} (top-2 gap {parity.gap_at_mismatch:.1e})"
    return text, parity.as_dict()


def _cells(
    entry: str, name: str, run: dict[str, Any], reference: dict[str, Any] | None
) -> list[str]:
    ratio = f"{reference['seconds'] / run['seconds']:.2f}x" if reference is not None else "-"
    return [
        entry,
        name,
        f"{run['load_seconds']:.1f}",
        f"{run['seconds']:.2f}",
        f"{run['seconds'] / run['steps'] * 1000:.1f}",
        f"x{run['audio_seconds'] / run['seconds']:.2f}",
        ratio,
        str(run.get("channels", "-")),
        f"{run['rss_after_load_mb']:.0f}",
        f"{run['rss_peak_mb']:.0f}",
    ]


def run_architectures(
    entries: list[str],
    precisions: list[str],
    duration: float,
    out: Path,
    *,
    cache: Path | None = None,
    reference: bool = True,
    say: Say = print,
) -> dict[str, Any]:
    """Benchmark each of `entries` (preset names or directories); print a table, return figures."""
    checkpoints = {entry: checkpoint_for(entry, cache, say) for entry in entries}
    figures: dict[str, Any] = {}
    for entry, (path, origin) in checkpoints.items():
        shape = _shape(path)
        figures[entry] = {"checkpoint": str(path), **origin, "shape": shape}
        say(_describe(entry, shape))
    say(
        f"clip {duration:g} s, greedy, one prompt; every row its own process; ms/step and "
        "realtime (audio seconds per second) end to end, loading apart"
    )
    say(_row(*(heading for heading, _ in COLUMNS)))
    clip = ["--duration", str(duration)]
    for index, (entry, (path, _)) in enumerate(checkpoints.items()):
        work = out / f"arch-{index}"  # each architecture's score files apart
        work.mkdir(parents=True, exist_ok=True)
        result = figures[entry]
        baseline = None
        if reference:
            baseline = result["reference"] = spawn("reference", str(path), work, *clip)
            say(_row(*_cells(entry, "transformers fp32", baseline, None), ""))
        for precision in precisions:
            run = result[precision] = spawn(
                "engine", str(path), work, *clip, "--precision", precision
            )
            verdict = ""
            if baseline is not None:
                verdict, parity = _verdict(
                    work / "reference-scores.pt", work / f"{precision}-scores.pt"
                )
                result.setdefault("parity", {})[precision] = parity
            say(_row(*_cells(entry, f"tunesmith {precision}", run, baseline), verdict))
    return figures
