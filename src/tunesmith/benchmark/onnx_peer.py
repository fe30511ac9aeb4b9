"""The peer in `tunesmith bench`: MusicGen's decoder on ONNX Runtime, as MusicGPT runs it.

MusicGPT runs optimum's ONNX export of MusicGen (a decoder step with past keys/values; int8 by
`onnxruntime.quantization.quantize_dynamic`). `tunesmith.benchmark.onnx_export` makes those
graphs from our checkpoint; here `run` times a guided greedy decode on them (or one forced to a
teacher's codes) of the same length as the engine's, the ``onnx`` worker mode runs it in a
process of its own, and `peer_section` prints the comparison.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["available", "peer_section", "peer_worker", "run"]


def available() -> bool:
    """Whether onnxruntime (and onnx, for the export) can be imported."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # its warnings about unused initializers are noise here
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _rss_now() -> float:
    from tunesmith.benchmark.worker import rss_mb

    return rss_mb()[0]


def _delays(manifest: dict[str, Any]) -> list[int]:
    """Each codebook's delay; a stereo model delays each left/right pair together."""
    k, channels = manifest["num_codebooks"], manifest["audio_channels"]
    return [c // channels for c in range(k)]


def run(
    export_dir: Path,
    processor: Any,
    prompt: str,
    frames: int,
    precision: str = "fp32",
    *,
    guidance_scale: float = 3.0,
    threads: int | None = None,
    teacher: torch.Tensor | None = None,
) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    """Time one guided greedy decode of `frames` frames: ``(figures, scores, tokens)``.

    Scores are the guided logits ``(steps, K, V)``, tokens ``(K, steps + 1)`` (column 0 the
    start token), as
    `tunesmith.benchmark.reference.engine_scores` returns them; with `teacher` tokens of that
    shape, each step is fed the teacher's codes instead of its own (teacher forcing).
    """
    import numpy as np
    from onnxruntime import OrtValue

    manifest = json.loads((export_dir / "config.json").read_text())
    threads = threads or os.cpu_count() or 1
    start = time.perf_counter()
    prompt_session = _session(export_dir / "prompt.onnx", threads)
    name = "step.onnx" if precision == "fp32" else f"step-{precision}.onnx"
    step_session = _session(export_dir / name, threads)
    load_seconds = time.perf_counter() - start
    after_load = _rss_now()

    k, delays = manifest["num_codebooks"], _delays(manifest)
    steps = frames + max(delays)
    pad = manifest["pad_token_id"]
    start = time.perf_counter()
    text = processor(text=[prompt], padding=True, return_tensors="np")
    ids, mask = text["input_ids"].astype(np.int64), text["attention_mask"].astype(np.int64)
    encoder_kv = prompt_session.run(None, {"input_ids": ids, "attention_mask": mask})
    encode_seconds = time.perf_counter() - start

    rows, heads, head_dim = 2, manifest["heads"], manifest["head_dim"]
    feeds: dict[str, Any] = {
        "encoder_attention_mask": OrtValue.ortvalue_from_numpy(
            np.concatenate([mask, np.zeros_like(mask)])
        )
    }
    empty = np.zeros((rows, heads, 0, head_dim), dtype=np.float32)
    for i in range(manifest["layers"]):
        for kv in ("key", "value"):
            feeds[f"past_key_values.{i}.decoder.{kv}"] = OrtValue.ortvalue_from_numpy(empty)
        feeds[f"past_key_values.{i}.encoder.key"] = OrtValue.ortvalue_from_numpy(encoder_kv[2 * i])
        feeds[f"past_key_values.{i}.encoder.value"] = OrtValue.ortvalue_from_numpy(
            encoder_kv[2 * i + 1]
        )
    present = [o.name for o in step_session.get_outputs()[1:]]
    past = [n.replace("present.", "past_key_values.") for n in present]
    tokens = np.full((k, steps + 1), pad, dtype=np.int64)
    tokens[:, 0] = manifest["decoder_start_token_id"]
    scores = np.empty((steps, k, 0), dtype=np.float32)  # sized at the first step
    first_step = 0.0
    start = time.perf_counter()
    for t in range(steps):
        current = np.tile(tokens[:, t : t + 1], (rows, 1))  # the same codes on both rows
        feeds["input_ids"] = OrtValue.ortvalue_from_numpy(current)
        outputs = step_session.run_with_ort_values(None, feeds)
        for name_in, value in zip(past, outputs[1:], strict=True):
            feeds[name_in] = value  # present becomes past without a copy through numpy
        logits = outputs[0].numpy()[:, 0, :].reshape(rows, k, -1)
        guided = logits[1] + guidance_scale * (logits[0] - logits[1])
        if t == 0:  # sessions allocate and tune on their first run
            first_step = time.perf_counter() - start
            scores = np.empty((steps, *guided.shape), dtype=np.float32)
        scores[t] = guided
        position = t + 1
        if teacher is not None:
            tokens[:, position] = teacher[:, position].numpy()
            continue
        picked = guided.argmax(-1)
        for c, d in enumerate(delays):  # the delay pattern: pad before and after each codebook
            tokens[c, position] = picked[c] if d < position <= d + frames else pad
    decode_seconds = time.perf_counter() - start
    figures = {
        "precision": precision,
        "threads": threads,
        "steps": steps,
        "load_seconds": load_seconds,
        "rss_after_load_mb": after_load,
        "encode_seconds": encode_seconds,
        "first_step_seconds": first_step,
        "decode_seconds": decode_seconds,
        "seconds": encode_seconds + decode_seconds,
        "audio_seconds": frames / manifest["frame_rate"],
    }
    return figures, torch.from_numpy(scores), torch.from_numpy(tokens)


def peer_worker(
    model: str,
    duration: float,
    precision: str,
    out: Path,
    *,
    cache: Path | None = None,
    teacher: str | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """`tunesmith.benchmark.worker`'s ``onnx`` mode: export once (in a process of its own, so
    the torch model's memory is not counted here), then time the decode; saves scores and
    tokens as ``onnx-PRECISION-*.pt`` beside the engine's."""
    from transformers import MusicgenProcessor

    from tunesmith.benchmark import onnx_export
    from tunesmith.benchmark.onnx_export import cache_path
    from tunesmith.benchmark.reference import compare_scores
    from tunesmith.benchmark.worker import PROMPT, rss_mb, run_module

    start = time.perf_counter()
    directory = cache_path(model, cache)
    exported_now = not (directory / "config.json").is_file()
    if exported_now:
        where = ["--cache-dir", str(cache)] if cache is not None else []
        run_module(onnx_export.__name__, model, *where, what="ONNX export")
    export_seconds = time.perf_counter() - start
    processor = MusicgenProcessor.from_pretrained(model)
    manifest = json.loads((directory / "config.json").read_text())
    frames = math.ceil(duration * manifest["frame_rate"])
    forced = torch.load(out / f"{teacher}-tokens.pt") if teacher else None
    figures, scores, tokens = run(
        directory, processor, PROMPT, frames, precision, threads=threads, teacher=forced
    )
    figures.update(
        export_dir=str(directory), exported_now=exported_now, export_seconds=export_seconds
    )
    figures["rss_after_run_mb"] = rss_mb()[0]
    torch.save(scores, out / f"onnx-{precision}-scores.pt")
    torch.save(tokens, out / f"onnx-{precision}-tokens.pt")
    if teacher:
        teacher_scores = torch.load(out / f"{teacher}-scores.pt")
        figures["vs_teacher"] = compare_scores(teacher_scores, scores).as_dict()
    return figures


def _line(name: str, run: dict[str, Any], ours: dict[str, Any]) -> str:
    per_step = run["decode_seconds"] / run["steps"] * 1000
    our_step = ours["decode_seconds"] / ours["steps"] * 1000
    ratio = per_step / our_step
    verdict = f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"
    return (
        f"{name:<22} {run['seconds']:7.2f} s  {per_step:6.1f} ms/step decoding (first step "
        f"{run['first_step_seconds'] * 1000:.0f} ms, sessions {run['load_seconds']:.1f} s, "
        f"prompt {run['encode_seconds'] * 1000:.0f} ms)  RSS {run['rss_after_load_mb']:.0f} MB "
        f"after load, {run['rss_peak_mb']:.0f} peak  tunesmith is {verdict}"
    )


def peer_section(
    model: str,
    duration: float,
    out: Path,
    figures: dict[str, Any],
    say: Callable[[str], None],
    cache: Path | None = None,
) -> None:
    """`tunesmith bench`'s peer rows: ONNX Runtime fp32 and int8 against tunesmith's, same
    clip and weights, each in its own worker; ``peer_fp32`` and ``peer_int8`` in `figures`."""
    from tunesmith.benchmark.reference import compare_scores
    from tunesmith.benchmark.worker import spawn

    if not available():
        say("onnxruntime not installed: `pip install tunesmith[peer]` adds the comparison")
        return
    config = json.loads((Path(model) / "config.json").read_text())
    if config.get("model_type") != "musicgen":
        say(f"onnxruntime peer: text-to-music MusicGen only, not {config.get('model_type')}")
        return
    where = ["--cache-dir", str(cache)] if cache is not None else []
    clip = ["--duration", str(duration), *where]
    peer = figures["peer_fp32"] = spawn("onnx", model, out, *clip, "--precision", "fp32")
    if peer["exported_now"]:
        say(
            f"onnxruntime: exported once into {peer['export_dir']} ({peer['export_seconds']:.0f} s)"
        )
    # the same model, not another graph: its greedy run against transformers' (or ours)
    against = "reference" if (out / "reference-scores.pt").is_file() else "fp32"
    parity = compare_scores(
        torch.load(out / f"{against}-scores.pt"), torch.load(out / "onnx-fp32-scores.pt")
    )
    peer["parity"] = {"against": against, **parity.as_dict()}
    for precision in ("fp32", "int8"):
        if precision == "int8":
            teacher = ["--teacher", "onnx-fp32"]
            peer = spawn("onnx", model, out, *clip, "--precision", "int8", *teacher)
            figures["peer_int8"] = peer
        ours = figures[precision]
        peer["tunesmith_speedup"] = (peer["decode_seconds"] / peer["steps"]) / (
            ours["decode_seconds"] / ours["steps"]
        )
        say(_line(f"onnxruntime {precision}", peer, ours))
        if precision == "fp32":
            who = "transformers" if against == "reference" else "tunesmith fp32"
            verdict = (
                "same greedy codes"
                if parity.codes_equal
                else (f"codes differ from step {parity.first_mismatch}")
            )
            say(
                f"parity onnxruntime fp32 vs {who}: {verdict}; max |logit diff| "
                f"{parity.max_abs_diff:.2e}"
            )
    drift = figures["peer_int8"]["vs_teacher"]
    say(
        f"onnxruntime int8 vs its fp32, teacher-forced: top-1 agreement "
        f"{drift['top1_agreement']:.1%}, mean KL {drift['mean_kl']:.2e} (per-tensor int8 weights)"
    )
