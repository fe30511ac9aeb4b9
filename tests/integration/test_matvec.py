"""The compiled matvec kernel (``tunesmith::matvec``) against exact products, and its modules."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tunesmith.engine.kernels import ACTIVATIONS
from tunesmith.engine.kernels import build as native
from tunesmith.engine.kernels.int4 import pack_int4
from tunesmith.engine.kernels.matvec import pack_int8, unpack_int8
from tunesmith.engine.musicgen.model.projections import (
    DenseProjection,
    FbgemmInt8Projection,
    Int4Projection,
    Int8Projection,
    TorchInt4Projection,
)

SHAPES = [(1, 5, 3), (2, 1027, 1030), (3, 64, 4096), (16, 256, 1024)]  # (rows, N, K)
U = 2.0**-24  # float32 unit roundoff


def _inputs(rows: int, outputs: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(rows * 100_003 + outputs * 7 + size)
    x = torch.randn(rows, size, generator=generator)
    return x, torch.randn(outputs, size, generator=generator)


def _f32_bound(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    # Each output is a K-term float32 dot product: its rounding error is at most ~K·u·Σ|x_k w_k|
    # in the worst case and, with high probability, λ·√K·u·Σ|x_k w_k| for a small λ (Higham &
    # Mary's probabilistic bound); λ = 4. Seen: < 0.5 of that. One dropped or doubled term
    # (~Σ|x_k w_k| / K) is 10-50x more than this for the larger K.
    return 4 * U * math.sqrt(x.shape[1]) * (x.double().abs() @ w.double().abs().T)


def _assert_f32(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> None:
    error = (y.double() - x.double() @ w.double().T).abs()
    assert y.dtype == torch.float32 and y.shape == error.shape
    assert (error <= _f32_bound(x, w)).all(), error.max()


def _unpack(packed: torch.Tensor, outputs: int, size: int) -> torch.Tensor:
    """The int8 ``(N, K)`` weight back from `pack_int8`'s ``(N/4, K/16, 4, 16)`` tiles."""
    assert packed.shape == (-(-outputs // 4), -(-size // 16), 4, 16)
    full = packed.transpose(1, 2).reshape(packed.shape[0] * 4, -1)
    assert not full[outputs:].any() and not full[:, size:].any()  # zero padding
    return full[:outputs, :size]


@pytest.mark.usefixtures("compiled_kernels")
@pytest.mark.parametrize(("rows", "outputs", "size"), SHAPES)
def test_float32_matches_the_exact_product(rows: int, outputs: int, size: int) -> None:
    x, w = _inputs(rows, outputs, size)
    _assert_f32(torch.ops.tunesmith.matvec(x, w, None), x, w)


@pytest.mark.usefixtures("compiled_kernels")
@pytest.mark.parametrize(("rows", "outputs", "size"), SHAPES)
def test_int8_is_the_dequantized_product_up_to_int16_rows(
    rows: int, outputs: int, size: int
) -> None:
    x, w = _inputs(rows, outputs, size)
    packed, scale = pack_int8(w)
    q = _unpack(packed, outputs, size).double()
    # symmetric per-row rounding: within half a step (plus float32 rounding of w / scale)
    assert ((q * scale[:, None] - w).abs() <= scale[:, None] * (0.5 + 1e-5)).all()
    assert (q.abs().amax(dim=1) == 127).all()
    # what folding reads back (tunesmith.engine.musicgen.model.cross): the same dequantized weight
    assert torch.equal(unpack_int8(packed, scale, size), q.float() * scale[:, None])
    y = torch.ops.tunesmith.matvec(x, packed, scale)
    expected = (x.double() @ q.T) * scale.double()
    # Each row is rounded to int16 steps of (row max-abs) / limit, limit >= 16512 for K <= 8192
    # (csrc/matvec.c), so each x_k moves by <= max|x| / 33024 and an output by that times
    # scale·Σ|q|; the integer sums are exact, then a few float32 roundings (~1e-7 relative).
    top = x.double().abs().amax(dim=1, keepdim=True)
    bound = 4e-5 * top * (q.abs().sum(dim=1) * scale.double())
    assert ((y.double() - expected).abs() <= bound).all(), (y.double() - expected).abs().max()


@pytest.mark.usefixtures("compiled_kernels")
@pytest.mark.parametrize("precision", ["fp32", "int8", "int4"])
def test_a_row_does_not_depend_on_its_batch_or_the_threads(precision: str) -> None:
    x, w = _inputs(5, 1027, 1030)  # odd rows (the last one unpaired), threaded, ragged tails
    packs = {"fp32": lambda w: (w, None), "int8": pack_int8, "int4": pack_int4}
    weight, scale = packs[precision](w)
    together = torch.ops.tunesmith.matvec(x, weight, scale)
    for r in range(len(x)):
        alone = torch.ops.tunesmith.matvec(x[r : r + 1], weight, scale)
        assert torch.equal(alone, together[r : r + 1]), f"row {r} of 5"
    assert torch.equal(torch.ops.tunesmith.matvec(x.flip(0), weight, scale), together.flip(0))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # the kernels share torch's OpenMP runtime
        assert torch.equal(torch.ops.tunesmith.matvec(x, weight, scale), together)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.usefixtures("compiled_kernels")
def test_int8_sums_do_not_overflow() -> None:
    size = 8192  # int16 rows near their limit times 127: one int32 lane is ~2^31 - 2^17
    # a row of 16512 (= the int16 limit at this K) makes the int16 step exactly 1 and the weights
    # of 127 a scale of exactly 1, so the total 8192 * 127 * 16512 (> 2^34) is exact in float32
    x = torch.stack([torch.full((size,), 16512.0), torch.ones(size), torch.zeros(size)])
    packed, scale = pack_int8(torch.full((6, size), 127.0))
    y = torch.ops.tunesmith.matvec(x, packed, scale)
    assert torch.equal(y[0], torch.full((6,), 8192 * 127 * 16512.0))
    torch.testing.assert_close(y[1], torch.full((6,), 8192 * 127.0), rtol=4 * U, atol=0)
    assert torch.equal(y[2], torch.zeros(6))  # an all-zero row: zeros, not 0 * inf = NaN


@pytest.mark.usefixtures("compiled_kernels")
def test_refuses_what_it_cannot_read() -> None:
    x, w = _inputs(2, 8, 32)
    packed, scale = pack_int8(w)
    op = torch.ops.tunesmith.matvec
    with pytest.raises(ValueError, match="float32 rows"):
        op(x.double(), w, None)
    with pytest.raises(ValueError, match="bad shapes"):
        op(x[:, :31], w, None)
    with pytest.raises(ValueError, match="not packed"):
        op(x[:, :16], packed, scale)  # K 16 needs one chunk of 16, not two
    with pytest.raises(ValueError, match="not packed"):
        op(x, torch.ones(8, 32, dtype=torch.int8), scale)
    with pytest.raises(ValueError, match="int8 one with float32 scales"):
        op(x, packed, None)
    with pytest.raises(ValueError, match="contiguous weight"):
        op(x, torch.randn(32, 8).T, None)


@pytest.mark.usefixtures("compiled_kernels")
@pytest.mark.parametrize(("activation", "approximate"), [(1, "none"), (2, "tanh")])
def test_the_activation_is_applied_to_the_products(activation: int, approximate: str) -> None:
    x, w = _inputs(3, 1030, 257)
    x = x * 0.1  # products spread over GELU's curve: -5..5
    packed, scale = pack_int8(w)
    for weight, extra in ((w, None), (packed, scale), pack_int4(w)):
        plain = torch.ops.tunesmith.matvec(x, weight, extra)
        fused = torch.ops.tunesmith.matvec(x, weight, extra, activation)
        assert plain.abs().max() > 3  # both tails of the curve, not only its linear middle
        # glibc's vector erff / tanhf against torch's: a few float32 roundings of 1 + erf(..)
        # apart, times x / 2 (on the left tail, where the result is near 0, relatively more)
        expected = F.gelu(plain, approximate=approximate)
        torch.testing.assert_close(fused, expected, rtol=4 * U, atol=4 * U * plain.abs().max())
        alone = torch.ops.tunesmith.matvec(x[1:2], weight, extra, activation)
        assert torch.equal(alone, fused[1:2])  # rows stay independent
    with pytest.raises(ValueError, match="unknown activation"):
        torch.ops.tunesmith.matvec(x, w, None, 3)


@pytest.mark.parametrize("compiled", [True, False])
def test_a_projection_ends_in_its_activation_with_or_without_the_kernel(
    compiled: bool, request: pytest.FixtureRequest
) -> None:
    if compiled:
        request.getfixturevalue("compiled_kernels")
    x, w = _inputs(2, 64, 48)
    plain = DenseProjection(w, 0, compiled=compiled)(x)
    fused = DenseProjection(w, 0, compiled=compiled, activation=ACTIVATIONS["gelu"])
    expected = F.gelu(plain)
    close = {"rtol": 4 * U, "atol": 4 * U * plain.abs().max()}  # as the test above
    torch.testing.assert_close(fused(x), expected, **close)
    torch.testing.assert_close(torch.jit.script(fused)(x), expected, **close)
    fbgemm = FbgemmInt8Projection(w, ACTIVATIONS["gelu_new"])
    assert torch.equal(fbgemm(x), F.gelu(FbgemmInt8Projection(w)(x), approximate="tanh"))


@pytest.mark.parametrize(
    "kernel", ["compiled-f32", "compiled-int8", "compiled-int4", "linear", "fbgemm", "torch-int4"]
)
def test_a_projection_begins_with_its_layer_norm_and_adds_the_residual(
    kernel: str, request: pytest.FixtureRequest
) -> None:
    if kernel.startswith("compiled"):
        request.getfixturevalue("compiled_kernels")
    x, w = _inputs(3, 96, 80)
    x = x * 4 + 1  # rows far from mean 0, variance 1: the norm has work to do
    generator = torch.Generator().manual_seed(7)
    norm = [torch.randn(80, generator=generator), torch.randn(80, generator=generator)]
    residual = torch.randn(3, 96, generator=generator)
    module = {
        "compiled-f32": lambda n: DenseProjection(w, 0, compiled=True, norm=n),
        "compiled-int8": lambda n: Int8Projection.quantize(w, norm=n),
        "linear": lambda n: DenseProjection(w, 4, compiled=False, norm=n),
        "fbgemm": lambda n: FbgemmInt8Projection(w, norm=n),
        "compiled-int4": lambda n: Int4Projection.quantize(w, norm=n),
        "torch-int4": lambda n: TorchInt4Projection.quantize(w, norm=n),
    }[kernel]
    normed = F.layer_norm(x, [80], norm[0], norm[1], 1e-5)
    expected = module(None)(normed) + residual  # the same kernel on torch's layer norm
    fused = module(norm)
    for got in (fused(x, residual), torch.jit.script(fused)(x, residual)):
        # the compiled norm sums in double: its rows differ from torch's by a float32 rounding
        # or two, which the products carry (int8: rounded again to int16 steps, ~1e-5; int4:
        # to int8 steps, where a rounding can cross a boundary: one step of one input, ~1e-3;
        # int4's reference normalizes with torch: exact)
        relative = {"compiled-int8": 4e-5, "compiled-int4": 2e-3, "torch-int4": 0.0}
        bound = relative.get(kernel, 8 * U) * expected.abs().max()
        torch.testing.assert_close(got, expected, rtol=0, atol=float(bound))
    assert not torch.allclose(fused(x), module(None)(x), atol=1e-3)  # the norm changed x


@pytest.mark.usefixtures("compiled_kernels")
def test_the_fused_arguments_are_checked() -> None:
    x, w = _inputs(2, 8, 32)
    op = torch.ops.tunesmith.matvec
    with pytest.raises(ValueError, match="weight and bias, or neither"):
        op(x, w, None, 0, torch.ones(32), None)
    with pytest.raises(ValueError, match="32 values"):
        op(x, w, None, 0, torch.ones(31), torch.zeros(31))
    with pytest.raises(ValueError, match="residual must be"):
        op(x, w, None, 0, None, None, torch.zeros(2, 9))
    a, b = torch.randn(1, 12, 32), torch.randn(1, 32, 12)
    fold = torch.ops.tunesmith.folded_attention
    with pytest.raises(ValueError, match="one float32 row"):
        fold(x, a, None, b, None, 0, 4, torch.ones(32), torch.zeros(32))
    with pytest.raises(ValueError, match="for layer 1"):
        fold(x[:1], a, None, b, None, 1, 4, torch.ones(32), torch.zeros(32))
    with pytest.raises(ValueError, match="12 scores for 5 heads"):
        fold(x[:1], a, None, b, None, 0, 5, torch.ones(32), torch.zeros(32))


@pytest.mark.usefixtures("compiled_kernels")
def test_the_modules_use_the_op_eagerly_and_scripted() -> None:
    x, w = _inputs(3, 130, 200)
    dense, int8 = DenseProjection(w, 0, compiled=True), Int8Projection.quantize(w)
    for module, expected in [
        (dense, torch.ops.tunesmith.matvec(x, w, None)),
        (int8, torch.ops.tunesmith.matvec(x, *pack_int8(w))),
        (Int4Projection.quantize(w), torch.ops.tunesmith.matvec(x, *pack_int4(w))),
    ]:
        assert torch.equal(module(x), expected)
        assert torch.equal(torch.jit.script(module)(x), expected)


@pytest.mark.usefixtures("compiled_kernels")
def test_the_portable_build_computes_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, w = _inputs(3, 1027, 1030)
    packed, scale = pack_int8(w)
    native_f32 = torch.ops.tunesmith.matvec(x, w, None)
    native_i8 = torch.ops.tunesmith.matvec(x, packed, scale)
    q4 = pack_int4(w)
    native_q4 = torch.ops.tunesmith.matvec(x, *q4)
    monkeypatch.setattr(
        f"{native.__name__}.torch.backends.cpu.get_cpu_capability", lambda: "DEFAULT"
    )
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setattr(native, "_library", None)
    assert "-mavx2" not in native._flags()
    portable = native.library()
    assert portable is not None and Path(portable._name).parent == tmp_path / "tunesmith"
    portable_f32 = torch.ops.tunesmith.matvec(x, w, None)
    _assert_f32(portable_f32, x, w)  # float sums in another order: each within the bound
    assert ((portable_f32 - native_f32).abs() <= 2 * _f32_bound(x, w)).all()
    # the same exact integer sums; -ffast-math lets gcc order the float32 scaling differently per
    # build (a * scale * step here, a * (step * scale) with AVX2): a float32 rounding or two apart
    portable_i8 = torch.ops.tunesmith.matvec(x, packed, scale)
    torch.testing.assert_close(portable_i8, native_i8, rtol=4 * U, atol=0)
    # int4: the same integers, then the same float32 roundings in the same order (no fused
    # multiply-add in either, csrc/matvec_q4.c): the same to the bit
    portable_q4 = torch.ops.tunesmith.matvec(x, *q4)
    assert torch.equal(portable_q4, native_q4)
    for weight, got, extra in ((w, portable_f32, None), (packed, portable_i8, scale)):
        alone = torch.cat([torch.ops.tunesmith.matvec(row[None], weight, extra) for row in x])
        assert torch.equal(alone, got)  # rows independent in this build too


@pytest.mark.usefixtures("compiled_kernels")
def test_every_int8_path_this_cpu_runs_gives_the_same_sums() -> None:
    # vpmaddwd, 256-bit and 512-bit vpdpwssd: the kernel picks the fastest the CPU has, and
    # each sums the same integers, so a request's result does not depend on the CPU's features
    library = native.library()
    assert library is not None
    x, w = _inputs(16, 1027, 1030)
    packed, scale = pack_int8(w)
    results = {}
    try:
        for variant in (0, 1, 2):
            if library.matvec_i8_variant(variant) == 0:
                results[variant] = [
                    torch.ops.tunesmith.matvec(x[:rows], packed, scale) for rows in (2, 3, 16)
                ]
    finally:
        assert library.matvec_i8_variant(-1) == 0
    assert 0 in results  # every AVX2 or portable build runs vpmaddwd's integers
    assert library.matvec_i8_variant(3) == 1
    for got in results.values():
        for ours, base in zip(got, results[0], strict=True):
            assert torch.equal(ours, base)


@pytest.mark.usefixtures("compiled_kernels")
@pytest.mark.parametrize(("outputs", "size"), [(1027, 1030), (64, 4096), (5, 3)])
def test_every_float32_path_this_cpu_runs_is_exact_and_row_independent(
    outputs: int, size: int
) -> None:
    # 256- and 512-bit registers sum different lanes, so their bits differ; each must hold the
    # products to the float32 bound, and a row its result whatever its batch
    library = native.library()
    assert library is not None
    x, w = _inputs(7, outputs, size)
    ran = []
    try:
        for variant in (0, 1):
            if library.matvec_f32_variant(variant) != 0:
                continue
            ran.append(variant)
            together = torch.ops.tunesmith.matvec(x, w, None)
            _assert_f32(together, x, w)
            alone = torch.cat([torch.ops.tunesmith.matvec(row[None], w, None) for row in x])
            assert torch.equal(alone, together)
            assert torch.equal(torch.ops.tunesmith.matvec(x[:4], w, None), together[:4])
    finally:
        assert library.matvec_f32_variant(-1) == 0
    assert 0 in ran and library.matvec_f32_variant(2) == 1


@pytest.mark.usefixtures("compiled_kernels")
def test_loading_the_kernels_keeps_the_process_subnormals() -> None:
    # built with -ffast-math itself, the library would switch the whole process to
    # flush-to-zero on load: Python's, numpy's and torch's subnormals would read as 0
    import numpy as np

    assert float("5e-324") > 0
    assert np.float32(1e-45) * np.float32(1) > 0
    assert torch.tensor(1e-40, dtype=torch.float32).mul(1).item() > 0
