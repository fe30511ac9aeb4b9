"""4-bit weights for ``tunesmith::matvec`` (``csrc/matvec_q4.c``): packing them, and back.

A weight ``(N, K)`` is rounded in groups of `Q4_GROUP` inputs per output row, as llama.cpp's
Q4_0 rounds its blocks: the group's value of largest magnitude becomes -8 exactly (the end of
the range with a level to spare), the others round to the nearest of the 16 levels -8..7 of
its step. Each group's step is a float16 scale: two bytes per 32 weights, 4.5 bits a weight in
all (a float32 scale would cost a ninth more bytes for a precision the 4-bit values lack).

The kernel reads the values in tiles of `Q4_TILE` output rows (``csrc/tunesmith.h``): each 8
inputs of a tile are 64 bytes, four a row, inputs 0-3 in the low nibbles and 4-7 in the high.
"""

import torch

from tunesmith.engine.kernels import Q4_GROUP as _GROUP
from tunesmith.engine.kernels import Q4_TILE as _TILE

__all__ = ["pack_int4", "signed_values", "unpack_int4"]


def pack_int4(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`weight` ``(N, K)`` rounded to 4 bits per group, in the kernel's layout ``(ceil(N / 16),
    Kp / 8, 64)`` uint8 (Kp: K rounded up to the group; the padding decodes to zeros), and its
    float16 scales ``(Kp / group, N)``."""
    weight = weight.detach().float()
    outputs, size = weight.shape
    groups = -(-size // _GROUP)
    padded = weight.new_zeros(outputs, groups * _GROUP)
    padded[:, :size] = weight
    grouped = padded.view(outputs, groups, _GROUP)
    largest = grouped.gather(2, grouped.abs().argmax(dim=2, keepdim=True)).squeeze(2)
    scales = (largest / -8).half()
    # the values are rounded against the float16 step the kernel multiplies by
    step = scales.float()[..., None]
    values = torch.where(step != 0, grouped / step, 0).round_().clamp_(-8, 7)
    tiles = -(-outputs // _TILE)
    codes = torch.full((tiles * _TILE, groups * _GROUP), 8, dtype=torch.uint8)
    codes[:outputs] = (values + 8).to(torch.uint8).view(outputs, -1)
    # [tile, octet, row, 4 inputs] from [tile, row, octet, low or high, 4 inputs]
    octets = codes.view(tiles, _TILE, -1, 2, 4).transpose(1, 2)
    packed = octets[:, :, :, 0] | (octets[:, :, :, 1] << 4)
    return packed.reshape(tiles, -1, _TILE * 4), scales.t().contiguous()


def unpack_int4(packed: torch.Tensor, scales: torch.Tensor, in_features: int) -> torch.Tensor:
    """The float32 weight ``(N, in_features)`` that `pack_int4` 's ``packed, scales`` stand for."""
    groups, outputs = scales.shape
    values = signed_values(packed, outputs).float().view(outputs, groups, -1)
    return (values * scales.t().float()[..., None]).view(outputs, -1)[:, :in_features]


def signed_values(packed: torch.Tensor, outputs: int) -> torch.Tensor:
    """`pack_int4` 's values -8..7 as int8 ``(outputs, Kp)``, in the weight's own order."""
    tiles, octets, width = packed.shape
    rows = packed.view(tiles, octets, width // 4, 4)
    values = torch.cat([rows & 15, rows >> 4], dim=3)  # [tile, octet, row, 8 inputs]
    unpacked = values.transpose(1, 2).reshape(tiles * (width // 4), octets * 8)
    return unpacked[:outputs].to(torch.int8) - 8
