"""The compiled attention kernels against torch's, and the decoder without them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tunesmith.benchmark.reference import compare_scores, engine_scores, reference_scores
from tunesmith.engine import kernels
from tunesmith.engine.kernels import attention, reference
from tunesmith.engine.kernels import build as native
from tunesmith.engine.loader import load_model
from tunesmith.engine.musicgen.model.decoder import FastDecoder


@pytest.mark.usefixtures("compiled_kernels")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("rows", "length", "dim"), [(2, 1, 16), (2, 7, 64), (1, 130, 64), (2, 513, 40)]
)
def test_kernel_matches_torch_attention(
    rows: int, length: int, dim: int, dtype: torch.dtype
) -> None:
    assert kernels.available()
    generator = torch.Generator().manual_seed(length)
    cache = (torch.randn(2, rows, 4, 600, dim, generator=generator) * 3).to(dtype)
    query = torch.randn(rows, 4, dim, generator=generator) * 3
    ours = torch.ops.tunesmith.decode_attention(query, cache, length)
    assert ours.dtype == torch.float32
    exact = cache.float()  # the same (rounded) values, attended in float32 by the reference
    flat = query.reshape(rows, 4 * dim)
    expected = reference.attend(flat, exact, length, 4).view(rows, 4, dim)
    assert ours.shape == expected.shape
    # float rounding: scores up to ~10 go through exp, summed in another order
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=5e-5)
    # positions past `length` are never read: garbage there changes nothing
    cache[:, :, :, length:] = float("nan")
    assert torch.equal(torch.ops.tunesmith.decode_attention(query, cache, length), ours)


@pytest.mark.usefixtures("compiled_kernels")
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


def _int8_rows(values: torch.Tensor) -> torch.Tensor:
    """`values` ``(..., hd)`` as an int8 cache stores them (`attention.int8_rows` inverts it):
    rounded to nearest against their row's largest magnitude, that scale's bytes after them."""
    top = values.abs().amax(dim=-1, keepdim=True)
    inverse = torch.where(top > 0, 127.0 / top, torch.zeros_like(top))
    rounded = torch.round((values * inverse).clamp(-127, 127)).to(torch.int8)
    scale = (top / 127.0).contiguous().view(torch.int8)  # its 4 bytes
    return torch.cat([rounded, scale], dim=-1)


def _int16_steps(query: torch.Tensor) -> torch.Tensor:
    """`query` ``(..., hd)`` rounded to int16 steps of its largest magnitude / 32767, as the
    kernel rounds it against int8 keys (csrc/decode_attention.c, `round_query`)."""
    top = query.abs().amax(dim=-1, keepdim=True)
    return torch.round(query * (32767.0 / top)) * (top / 32767.0)


def _self_attention_case(
    jobs: list[tuple[int, int]], dim: int, dtype: torch.dtype, seed: int
) -> tuple[torch.Tensor, list[torch.Tensor], list[int]]:
    """qkv rows and caches ``(3 layers, 2, rows, 4 heads, T, dim)`` for jobs (rows, position);
    positions past each job's are NaN (an int8 row's scale), so reading one would show."""
    generator = torch.Generator().manual_seed(seed)
    caches, ts = [], []
    for rows, t in jobs:
        cache = torch.randn(3, 2, rows, 4, t + 9, dim, generator=generator) * 3
        cache[:, :, :, :, t:] = float("nan")
        caches.append(_int8_rows(cache) if dtype == torch.int8 else cache.to(dtype))
        ts.append(t)
    total = sum(rows for rows, _ in jobs)
    qkv = torch.randn(total, 3 * 4 * dim, generator=generator) * 3
    return qkv, caches, ts


def _values(cache: torch.Tensor) -> torch.Tensor:
    """The float32 values a float32, bfloat16 or int8 cache holds."""
    return attention.int8_rows(cache) if cache.dtype == torch.int8 else cache.float()


def _expected_self_attention(
    qkv: torch.Tensor, caches: list[torch.Tensor], ts: list[int], layer: int
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """What the kernel must do, in torch: write each job's keys/values (rounded to the cache's
    dtype), then attend in float32 over positions 0..t."""
    outputs, written = [], []
    row = 0
    for cache, t in zip(caches, ts, strict=True):
        rows, heads = cache.shape[2], cache.shape[3]
        dim = qkv.shape[1] // (3 * heads)
        cache = cache.clone()
        kv = qkv[row : row + rows, heads * dim :].view(rows, 2, heads, dim).transpose(0, 1)
        cache[layer, :, :, :, t] = _int8_rows(kv) if cache.dtype == torch.int8 else kv
        exact = _values(cache[layer, :, :, :, : t + 1])
        query = qkv[row : row + rows, : heads * dim].view(rows, heads, 1, dim)
        if cache.dtype == torch.int8:
            query = _int16_steps(query)
        out = F.scaled_dot_product_attention(query, exact[0], exact[1])
        outputs.append(out.reshape(rows, heads * dim))
        written.append(cache)
        row += rows
    return torch.cat(outputs), written


@pytest.mark.usefixtures("compiled_kernels")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int8])
@pytest.mark.parametrize(
    ("jobs", "dim"),
    [([(2, 0)], 64), ([(1, 6)], 16), ([(2, 130), (1, 3), (2, 40)], 64), ([(2, 513)], 40)],
)
def test_self_attention_writes_the_step_and_matches_torch(
    jobs: list[tuple[int, int]], dim: int, dtype: torch.dtype
) -> None:
    qkv, caches, ts = _self_attention_case(jobs, dim, dtype, seed=len(jobs) * dim)
    expected, written = _expected_self_attention(qkv, caches, ts, layer=1)
    ours = torch.ops.tunesmith.self_attention(qkv, caches, ts, 1)
    assert ours.dtype == torch.float32 and ours.shape == expected.shape
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=5e-5)
    for cache, want in zip(caches, written, strict=True):
        # the step's keys/values land at their position, rounded as torch rounds (bfloat16:
        # to nearest even; int8: to nearest, against a scale equal up to its last bit); other
        # layers and positions are untouched (NaN compared equal)
        got, expected_values = _values(cache).nan_to_num(7.0), _values(want).nan_to_num(7.0)
        if cache.dtype == torch.int8:
            assert torch.equal(cache[..., :-4], want[..., :-4])
            torch.testing.assert_close(got, expected_values, rtol=2e-7, atol=0)
        else:
            assert torch.equal(got, expected_values)


@pytest.mark.usefixtures("compiled_kernels")
def test_self_attention_of_a_job_does_not_depend_on_its_batch() -> None:
    qkv, caches, ts = _self_attention_case([(2, 50), (1, 9), (2, 300)], 64, torch.float32, 3)
    solo = [c.clone() for c in caches]
    together = torch.ops.tunesmith.self_attention(qkv, caches, ts, 0)
    alone = [
        torch.ops.tunesmith.self_attention(qkv[0:2].clone(), solo[:1], ts[:1], 0),
        torch.ops.tunesmith.self_attention(qkv[2:3].clone(), solo[1:2], ts[1:2], 0),
        torch.ops.tunesmith.self_attention(qkv[3:5].clone(), solo[2:], ts[2:], 0),
    ]
    assert torch.equal(together, torch.cat(alone))


@pytest.mark.usefixtures("compiled_kernels")
def test_self_attention_refuses_what_it_cannot_read() -> None:
    qkv, caches, ts = _self_attention_case([(2, 5)], 16, torch.float32, 0)
    call = torch.ops.tunesmith.self_attention
    with pytest.raises(ValueError, match="bad cache"):
        call(qkv, caches, [14], 0)  # past the cache's 14 positions
    with pytest.raises(ValueError, match="bad cache"):
        call(qkv, caches, ts, 3)  # the caches have 3 layers
    with pytest.raises(ValueError, match="bad cache"):
        call(qkv, [torch.zeros(3, 2, 2, 4, 20, 16)[:, :, :, :, :14]], ts, 0)  # not contiguous
    with pytest.raises(ValueError, match="bad cache"):
        call(qkv[:1].repeat(2, 1), [caches[0], caches[0].bfloat16()], [5, 5], 0)
    with pytest.raises(ValueError, match="rows"):
        call(qkv[:1], caches, ts, 0)
    with pytest.raises(ValueError, match="columns"):
        call(qkv[:, :-3].contiguous(), caches, ts, 0)
    with pytest.raises(ValueError, match="positions"):
        call(qkv, caches, [5, 5], 0)
    with pytest.raises(RuntimeError, match="float32, bfloat16 or int8"):
        call(qkv, [caches[0].half()], ts, 0)
    with pytest.raises(ValueError, match="columns"):  # int8 rows: 16 values, then 4 bytes
        call(qkv, [caches[0].to(torch.int8)], ts, 0)
    with pytest.raises(ValueError, match="head size"):
        big = torch.zeros(1, 2, 1, 1, 4, 512)
        call(torch.zeros(1, 3 * 512), [big], [0], 0)
    with pytest.raises(ValueError, match="head size"):
        call(torch.zeros(1, 0), [torch.zeros(1, 2, 1, 1, 4, 4, dtype=torch.int8)], [0], 0)


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


@pytest.mark.usefixtures("compiled_kernels")
def test_a_built_kernel_is_reused_without_a_compiler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fresh_kernel_state(monkeypatch, tmp_path)
    assert kernels.available()
    built = list((tmp_path / "tunesmith").glob("kernels-*.so"))
    assert len(built) == 1
    _fresh_kernel_state(monkeypatch, tmp_path)
    monkeypatch.setenv("CC", "no-such-compiler")
    assert kernels.available()  # what a container image without gcc does
    _fresh_kernel_state(monkeypatch, tmp_path / "empty")
    assert not kernels.available()  # nothing built, nothing to build with: torch's kernel
