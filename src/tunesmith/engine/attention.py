"""Single-query attention over the decode cache: a small C kernel (`tunesmith.engine.native`).

torch's general attention kernel reads a one-query float32 cache at about half the memory
bandwidth on the 2-core AVX2 CPU, and late in a long track the cache is as many bytes per step
as the int8 weights. ``csrc/decode_attention.c`` reads each cached value once. It is
registered as the torch operator ``tunesmith::decode_attention`` so the TorchScript decoder
step can call it. Where the compiled kernels are unavailable, `available` is False and the
decoder uses `F.scaled_dot_product_attention` (the same result up to float rounding, and up to
2x slower late in a long track).
"""

import math

import torch

from tunesmith.engine import native

__all__ = ["available", "decode_attention"]

_MAX_HEAD_DIM = 256  # the kernel keeps one head's sums on its stack


def available() -> bool:
    """Whether the compiled kernel can be used (compiling it on the first call)."""
    return native.available()


@torch.library.custom_op("tunesmith::decode_attention", mutates_args=())
def decode_attention(query: torch.Tensor, cache: torch.Tensor, length: int) -> torch.Tensor:
    """``query`` ``(rows, H, hd)`` attends over ``cache[0/1, :, :, :length]`` (keys/values of a
    contiguous ``(2, rows, H, T, hd)`` float32 or bfloat16 CPU cache); returns float32
    ``(rows, H, hd)``."""
    library = native.library()
    entries = {torch.float32: "decode_attention_f32", torch.bfloat16: "decode_attention_bf16"}
    if library is None or cache.dtype not in entries or not cache.is_contiguous():
        raise RuntimeError(
            "decode_attention needs the compiled kernel and a contiguous float32 or bfloat16 cache"
        )
    if not 0 < length <= cache.shape[3] or query.shape != cache.shape[1:3] + cache.shape[4:]:
        raise ValueError(f"bad shapes: query {tuple(query.shape)}, cache {tuple(cache.shape)}")
    if query.shape[-1] > _MAX_HEAD_DIM:
        raise ValueError(f"head size {query.shape[-1]} is above {_MAX_HEAD_DIM}")
    query = query.contiguous().float()
    out = torch.empty_like(query)
    _, rows, heads, steps, dim = cache.shape
    failed = getattr(library, entries[cache.dtype])(
        query.data_ptr(),
        cache.data_ptr(),
        cache[1].data_ptr(),
        out.data_ptr(),
        rows * heads,
        length,
        steps * dim,
        dim,
        1.0 / math.sqrt(dim),
    )
    if failed:
        raise MemoryError("decode_attention could not allocate its scores")
    return out
