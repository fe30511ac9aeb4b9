"""`tunesmith bench`'s ONNX Runtime peer on the tiny model: the same model, not another graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tunesmith.benchmark import onnx_peer
from tunesmith.benchmark.reference import compare_scores, reference_scores
from tunesmith.benchmark.worker import PROMPT, spawn
from tunesmith.engine.loader import load_model

FIELDS = {"decode_seconds", "steps", "rss_peak_mb", "seconds", "first_step_seconds"}


def test_onnx_worker_is_transformers_greedy_decode(tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    cache, out = tmp_path / "cache", tmp_path / "out"
    out.mkdir()
    clip = ["--duration", "1", "--cache-dir", str(cache)]
    fp32 = spawn("onnx", str(tiny_model_dir), out, *clip, "--precision", "fp32")
    assert fp32.keys() >= FIELDS and fp32["steps"] == 50 + 3  # the last codebook's delay
    assert fp32["exported_now"] is True and Path(fp32["export_dir"]).parent == cache
    assert fp32["rss_peak_mb"] >= fp32["rss_after_load_mb"] > 0
    assert fp32["threads"] >= 1 and fp32["decode_seconds"] >= fp32["first_step_seconds"] > 0

    loaded = load_model(str(tiny_model_dir), "cpu")
    reference = reference_scores(loaded.model, loaded.processor, PROMPT, 53, 3.0)
    parity = compare_scores(reference, torch.load(out / "onnx-fp32-scores.pt"))
    assert parity.codes_equal, parity
    assert parity.max_abs_diff < 1e-4

    # int8 reuses the export and replays fp32's codes, so its logits compare step by step
    int8 = spawn(
        "onnx", str(tiny_model_dir), out, *clip, "--precision", "int8", "--teacher", "onnx-fp32"
    )
    assert int8.keys() >= FIELDS and int8["exported_now"] is False
    assert int8["export_dir"] == fp32["export_dir"]
    forced = torch.load(out / "onnx-int8-tokens.pt")
    assert torch.equal(forced, torch.load(out / "onnx-fp32-tokens.pt"))
    assert 0.5 < int8["vs_teacher"]["top1_agreement"] <= 1


def test_bench_without_onnxruntime_says_how_to_add_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_peer, "available", lambda: False)
    said: list[str] = []
    figures: dict[str, Any] = {}
    onnx_peer.peer_section("unused", 1.0, Path("unused"), figures, said.append)
    assert said == ["onnxruntime not installed: `pip install tunesmith[peer]` adds the comparison"]
    assert figures == {}
