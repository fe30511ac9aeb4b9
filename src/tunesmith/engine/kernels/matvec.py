"""``y = x @ W.T`` for a few activation rows: the compiled kernel in ``csrc/matvec.c``.

A decode step multiplies one or two rows per request by every decoder weight once, so it is
bound by reading the weights. This kernel reads them closer to the memory bandwidth than
torch's ``mm(W, x.T)`` in float32, and than fbgemm's dynamic int8 on its own prepacked int8
layout (`pack_int8`). For int8 the activations are rounded to int16 per row (fbgemm rounds them
to 8 bits per call) and the products summed exactly. Each output is computed the same way
whatever the other rows, so a row's result does not depend on what it is batched with.

The TorchScript decoder step calls it as the operator ``tunesmith::matvec(x, weight, scale,
activation, norm_weight, norm_bias, residual)`` (``csrc/ops.cpp``, see
`tunesmith.engine.kernels`): ``x`` ``(rows, K)`` float32, layer-normalized first when given a
norm's weight and bias, times a weight ``(N, K)`` transposed -> ``(rows, N)`` float32, then the
activation and the residual added; the weight float32 ``(N, K)`` with ``scale`` None, or int8
as `pack_int8` lays it out with its ``scale``. A wrong input raises ValueError.
"""

import torch

from tunesmith.engine.kernels import CHUNK as _CHUNK
from tunesmith.engine.kernels import TILE as _TILE

__all__ = ["pack_int8", "unpack_int8"]


def pack_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`weight` ``(N, K)`` rounded to int8 per output row (symmetric) in the kernel's layout
    ``(ceil(N / 4), ceil(K / 16), 4, 16)``, zero-padded; and the ``(N,)`` float32 scales."""
    weight = weight.detach().float()
    outputs, size = weight.shape
    scale = weight.abs().amax(dim=1).clamp(min=1e-8) / 127.0
    padded = weight.new_zeros(-(-outputs // _TILE) * _TILE, -(-size // _CHUNK) * _CHUNK)
    padded[:outputs, :size] = torch.round(weight / scale[:, None])
    tiles = padded.to(torch.int8).view(padded.shape[0] // _TILE, _TILE, -1, _CHUNK)
    return tiles.transpose(1, 2).contiguous(), scale.contiguous()


def unpack_int8(packed: torch.Tensor, scale: torch.Tensor, size: int) -> torch.Tensor:
    """The float32 weight ``(N, size)`` that `pack_int8` 's ``packed, scale`` stand for."""
    tiles, chunks = packed.shape[0], packed.shape[1]
    rows = packed.transpose(1, 2).reshape(tiles * _TILE, chunks * _CHUNK)
    return rows[: scale.shape[0], :size].float() * scale[:, None]
