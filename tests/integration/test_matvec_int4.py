"""The compiled int4 matvec (``tunesmith::matvec`` on `pack_int4` 's weights) against its torch
reference, on every instruction set this CPU runs, and the packing itself."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from tunesmith.engine.kernels import Q4_GROUP, Q4_TILE
from tunesmith.engine.kernels import build as native
from tunesmith.engine.kernels.int4 import pack_int4, signed_values, unpack_int4
from tunesmith.engine.kernels.reference import matvec_int4
from tunesmith.engine.musicgen.model.projections import Int4Projection, TorchInt4Projection

# (rows, N, K): one row and tiny; ragged N and K (neither a tile nor a group); long K; a batch
SHAPES = [(1, 5, 3), (2, 1027, 1030), (3, 64, 4096), (16, 256, 1024), (5, 33, 100)]
VARIANTS = {"vpmaddubsw": 0, "vpdpbusd-512": 1}  # csrc/matvec_q4.c's `matvec_q4_variant`
U = 2.0**-24  # float32 unit roundoff


def _inputs(rows: int, outputs: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(rows * 100_003 + outputs * 7 + size)
    x = torch.randn(rows, size, generator=generator)
    # rows of weights at scales 1e-3..10: the float16 scales must carry them all
    spread = 10.0 ** torch.empty(outputs, 1).uniform_(-3, 1, generator=generator)
    return x, torch.randn(outputs, size, generator=generator) * spread


@pytest.fixture
def library(compiled_kernels: None) -> Iterator[ctypes.CDLL]:
    loaded = native.library()
    assert loaded is not None
    yield loaded
    assert loaded.matvec_q4_variant(-1) == 0  # this CPU's fastest again


def _run_variant(library: ctypes.CDLL, variant: str) -> None:
    if library.matvec_q4_variant(VARIANTS[variant]) != 0:
        pytest.skip(f"this CPU (or build) cannot run {variant}")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(("rows", "outputs", "size"), SHAPES)
def test_every_path_this_cpu_runs_computes_the_reference_to_the_bit(
    library: ctypes.CDLL, variant: str, rows: int, outputs: int, size: int
) -> None:
    _run_variant(library, variant)
    x, w = _inputs(rows, outputs, size)
    packed, scales = pack_int4(w)
    y = torch.ops.tunesmith.matvec(x, packed, scales)
    assert y.shape == (rows, outputs) and y.dtype == torch.float32
    assert torch.equal(y, matvec_int4(x, packed, scales))
    # and the reference is the product with the weight the packing stands for, up to the
    # activations' rounding: half an int8 step of each group's max-abs, times that group's
    # weights, plus float32 roundings
    dense = unpack_int4(packed, scales, size).double()
    groups = -(-size // Q4_GROUP)
    padded = F.pad(x.double(), [0, groups * Q4_GROUP - size]).view(rows, groups, Q4_GROUP)
    half_step = padded.abs().amax(dim=2) / 254
    weight_sums = F.pad(dense.abs(), [0, groups * Q4_GROUP - size]).view(outputs, groups, -1)
    bound = half_step @ weight_sums.sum(dim=2).T + 64 * U * (x.double().abs() @ dense.abs().T)
    assert ((y.double() - x.double() @ dense.T).abs() <= bound).all()


def test_the_packed_layout() -> None:
    outputs, size = 20, 64  # a second, partial tile of 16 rows; two groups of 32
    rows, inputs = torch.arange(outputs)[:, None], torch.arange(size)[None, :]
    # every 32 inputs of a row hold all 16 values, -8 among them: each scale is exactly 1
    values = (3 * rows + inputs) % 16 - 8
    packed, scales = pack_int4(values.float())
    assert packed.dtype == torch.uint8 and packed.shape == (2, size // 8, Q4_TILE * 4)
    assert scales.dtype == torch.float16 and torch.equal(scales, torch.ones(2, outputs).half())
    codes = values + 8  # stored as value + 8
    for row in range(outputs):
        tile, j = divmod(row, Q4_TILE)
        for k in range(size):  # inputs 0-3 of an octet low, 4-7 high; four bytes a row
            byte = int(packed[tile, k // 8, 4 * j + k % 4])
            assert (byte & 15 if k % 8 < 4 else byte >> 4) == codes[row, k]
    full = signed_values(packed, 2 * Q4_TILE)
    assert torch.equal(full[:outputs], values.to(torch.int8))
    assert not full[outputs:].any()  # the padding rows decode to zeros


@pytest.mark.parametrize(("outputs", "size"), [(1027, 1030), (5, 3), (64, 4096)])
def test_packing_round_trips(outputs: int, size: int) -> None:
    _, w = _inputs(1, outputs, size)
    packed, scales = pack_int4(w)
    dense = unpack_int4(packed, scales, size)
    assert dense.shape == w.shape and dense.dtype == torch.float32
    step = scales.float().abs().t().repeat_interleave(Q4_GROUP, dim=1)[:, :size]
    error = (dense - w).abs()
    # within half a step, but for values clamped to +7 on the far side of the group's -8
    assert (error <= 1.01 * step).all()
    assert (error <= 0.5001 * step).float().mean() > 0.99
    # the dequantized weight packs to itself: the same levels, the same scales
    again = pack_int4(dense)
    assert torch.equal(again[0], packed) and torch.equal(again[1], scales)


def test_a_zero_group_and_zero_rows_stay_zero(library: ctypes.CDLL) -> None:
    w = torch.randn(20, 70)
    w[3] = 0.0  # a whole row
    w[:, 32:64] = 0.0  # a whole group of every row
    packed, scales = pack_int4(w)
    assert torch.equal(unpack_int4(packed, scales, 70)[:, 32:64], torch.zeros(20, 32))
    x = torch.randn(3, 70)
    x[1] = 0.0  # a zero row: zeros, not 0 * inf = NaN
    y = torch.ops.tunesmith.matvec(x, packed, scales)
    assert torch.equal(y[1], torch.zeros(20)) and torch.equal(y[:, 3], torch.zeros(3))
    assert torch.equal(y, matvec_int4(x, packed, scales))


@pytest.mark.parametrize("activation", [0, 1])
def test_the_torch_reference_projection_computes_the_same(
    library: ctypes.CDLL, activation: int
) -> None:
    x, w = _inputs(3, 130, 200)
    parts = Int4Projection.pack(w)
    compiled = Int4Projection(parts, 200, activation)
    fallback = TorchInt4Projection(parts, 200, activation)
    expected = compiled(x)
    for got in (fallback(x), torch.jit.script(fallback)(x)):
        if activation:  # torch's GELU against glibc's erff (as test_matvec's activation test)
            atol = 4 * U * float(expected.abs().max())
            torch.testing.assert_close(got, expected, rtol=4 * U, atol=atol)
        else:
            assert torch.equal(got, expected)
    # 144 rows of 224 inputs (both padded) at half a byte, and 7 groups x 130 float16 scales
    assert compiled.nbytes == 144 * 224 // 2 + 7 * 130 * 2
    assert torch.equal(compiled.dense(), unpack_int4(*pack_int4(w), 200))


def test_refuses_what_it_cannot_read(library: ctypes.CDLL) -> None:
    x, w = _inputs(2, 8, 64)
    packed, scales = pack_int4(w)
    op = torch.ops.tunesmith.matvec
    with pytest.raises(ValueError, match="float16 scales"):
        op(x, packed, None)
    with pytest.raises(ValueError, match="float16 scales"):
        op(x, packed, scales.float())
    with pytest.raises(ValueError, match="not packed"):
        op(x[:, :32], packed, scales)  # K 32 is one group, not two
    with pytest.raises(ValueError, match="not packed"):
        op(x, packed, torch.ones(2, 17).half())  # 17 outputs take two tiles of 16, not one
