"""The compiled single-query attention kernel against torch's, and the decoder without it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tunesmith.benchmark.reference import compare_scores, engine_scores, reference_scores
from tunesmith.engine import attention, native
from tunesmith.engine.decoder import FastDecoder
from tunesmith.engine.loader import load_model

needs_compiler = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("rows", "length", "dim"), [(2, 1, 16), (2, 7, 64), (1, 130, 64), (2, 513, 40)]
)
def test_kernel_matches_torch_attention(
    rows: int, length: int, dim: int, dtype: torch.dtype
) -> None:
    assert attention.available()
    generator = torch.Generator().manual_seed(length)
    cache = (torch.randn(2, rows, 4, 600, dim, generator=generator) * 3).to(dtype)
    query = torch.randn(rows, 4, dim, generator=generator) * 3
    ours = torch.ops.tunesmith.decode_attention(query, cache, length)
    assert ours.dtype == torch.float32
    exact = cache.float()  # the same (rounded) values, attended in float32 by torch
    expected = F.scaled_dot_product_attention(
        query[:, :, None], exact[0, :, :, :length], exact[1, :, :, :length]
    )[:, :, 0]
    assert ours.shape == expected.shape
    # float rounding: scores up to ~10 go through exp, summed in another order
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=5e-5)
    # positions past `length` are never read: garbage there changes nothing
    cache[:, :, :, length:] = float("nan")
    assert torch.equal(torch.ops.tunesmith.decode_attention(query, cache, length), ours)


@needs_compiler
def test_kernel_refuses_what_it_cannot_read() -> None:
    cache = torch.zeros(2, 2, 4, 10, 16)
    with pytest.raises(ValueError, match="bad shapes"):
        torch.ops.tunesmith.decode_attention(torch.zeros(2, 4, 8), cache, 3)
    with pytest.raises(ValueError, match="bad shapes"):
        torch.ops.tunesmith.decode_attention(torch.zeros(2, 4, 16), cache, 11)
    with pytest.raises(RuntimeError, match="float32 or bfloat16"):
        torch.ops.tunesmith.decode_attention(torch.zeros(2, 4, 16), cache.half(), 3)
    with pytest.raises(RuntimeError, match="contiguous"):
        torch.ops.tunesmith.decode_attention(torch.zeros(2, 4, 16), cache[:, :, :, :5], 3)
    with pytest.raises(ValueError, match="head size"):
        big = torch.zeros(2, 1, 1, 4, 512)
        torch.ops.tunesmith.decode_attention(torch.zeros(1, 1, 512), big, 3)


def test_without_the_kernel_the_decoder_still_matches_transformers(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = load_model(str(tiny_model_dir), device="cpu")
    monkeypatch.setattr(native, "library", lambda: None)
    decoder = FastDecoder(loaded.model, "fp32", loaded.device)
    assert not any(layer.compiled_attention for layer in decoder.layers)
    assert not any(layer.qkv.compiled for layer in decoder.layers)
    frames = 30
    prompt = "lofi hip hop beat"
    steps = frames + loaded.num_codebooks - 1
    reference = reference_scores(loaded.model, loaded.processor, prompt, steps, 3.0)
    ours, _ = engine_scores(decoder, loaded.processor, prompt, frames, 3.0)
    result = compare_scores(reference, ours)
    assert result.codes_equal and result.steps == steps, result
    assert result.max_abs_diff <= 1e-5 * max(1.0, result.scale), result


def _fresh_kernel_state(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setattr(native, "_library", None)


@needs_compiler
def test_a_built_kernel_is_reused_without_a_compiler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fresh_kernel_state(monkeypatch, tmp_path)
    assert attention.available()
    built = list((tmp_path / "tunesmith").glob("kernels-*.so"))
    assert len(built) == 1
    _fresh_kernel_state(monkeypatch, tmp_path)
    monkeypatch.setenv("CC", "no-such-compiler")
    assert attention.available()  # what a container image without gcc does
    _fresh_kernel_state(monkeypatch, tmp_path / "empty")
    assert not attention.available()  # nothing built, nothing to build with: torch's kernel
