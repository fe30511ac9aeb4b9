"""Single-query attention over the decode cache: a small C kernel (`tunesmith.engine.native`).

torch's general attention kernel reads a one-query float32 cache at about half the memory
bandwidth on the 2-core AVX2 CPU, and late in a long track the cache is as many bytes per step
as the int8 weights. ``csrc/decode_attention.c`` reads each cached value once. Two torch
operators call it from the TorchScript decoder step: ``tunesmith::self_attention`` writes a
step's keys/values and attends for every job of a batch in one call per layer, and
``tunesmith::decode_attention`` attends over one tensor of keys/values (the prompt's).
Where the compiled kernels are unavailable, `available` is False and the decoder uses
`F.scaled_dot_product_attention` (the same result up to float rounding, and up to 2x slower
late in a long track).
"""

import ctypes
import math

import torch

from tunesmith.engine import native

__all__ = ["available", "decode_attention", "self_attention"]

_MAX_HEAD_DIM = 256  # the kernel keeps one head's sums on its stack
_KERNEL_SUFFIX = {torch.float32: "f32", torch.bfloat16: "bf16"}  # cache dtype -> entry point


def available() -> bool:
    """Whether the compiled kernel can be used (compiling it on the first call)."""
    return native.available()


@torch.library.custom_op("tunesmith::decode_attention", mutates_args=())
def decode_attention(query: torch.Tensor, cache: torch.Tensor, length: int) -> torch.Tensor:
    """``query`` ``(rows, H, hd)`` attends over ``cache[0/1, :, :, :length]`` (keys/values of a
    contiguous ``(2, rows, H, T, hd)`` float32 or bfloat16 CPU cache); returns float32
    ``(rows, H, hd)``."""
    library = native.library()
    if library is None or cache.dtype not in _KERNEL_SUFFIX or not cache.is_contiguous():
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
    failed = getattr(library, f"decode_attention_{_KERNEL_SUFFIX[cache.dtype]}")(
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


@torch.library.custom_op("tunesmith::self_attention", mutates_args=("caches",))
def self_attention(
    qkv: torch.Tensor, caches: list[torch.Tensor], ts: list[int], layer: int
) -> torch.Tensor:
    """One decode step's self-attention for a batch of jobs, writing the step's keys/values.

    ``qkv`` ``(R, 3D)`` float32 holds every job's rows in job order, each row its query, key
    and value. Job j's cache ``caches[j]`` is ``(layers, 2, rows, H, T, hd)``, contiguous,
    float32 or bfloat16 (all jobs alike): its rows' keys and values go to position ``ts[j]``
    of layer `layer`, then each row attends over positions ``0..ts[j]``. Returns ``(R, D)``
    float32. One call per layer for the batch, where `decode_attention` per job took ~25 us of
    dispatch each plus the ops writing the cache.
    """
    library = native.library()
    if library is None or not caches or caches[0].dtype not in _KERNEL_SUFFIX:
        raise RuntimeError(
            "self_attention needs the compiled kernel and float32 or bfloat16 caches"
        )
    if qkv.dtype != torch.float32 or qkv.dim() != 2 or not qkv.is_contiguous():
        raise ValueError(f"qkv must be contiguous float32 (R, 3D), not {qkv.dtype} {qkv.shape}")
    if qkv.device.type != "cpu" or any(cache.device.type != "cpu" for cache in caches):
        raise ValueError("self_attention takes CPU tensors")
    if len(ts) != len(caches):
        raise ValueError(f"{len(caches)} caches but {len(ts)} positions")
    dtype, heads, dim = caches[0].dtype, caches[0].shape[3], caches[0].shape[5]
    if qkv.shape[1] != 3 * heads * dim:
        raise ValueError(f"qkv has {qkv.shape[1]} columns, not 3 x {heads} heads x {dim}")
    if dim > _MAX_HEAD_DIM:
        raise ValueError(f"head size {dim} is above {_MAX_HEAD_DIM}")
    pointers, steps, rows = [], [], []
    for cache, t in zip(caches, ts, strict=True):
        if (
            cache.dim() != 6
            or cache.dtype != dtype
            or not cache.is_contiguous()
            or cache.shape[1] != 2
            or cache.shape[3] != heads
            or cache.shape[5] != dim
            or not 0 <= layer < cache.shape[0]
            or not 0 <= t < cache.shape[4]
        ):
            raise ValueError(
                f"bad cache {cache.dtype} {tuple(cache.shape)} for layer {layer}, position {t}"
            )
        pointers.append(cache.data_ptr() + layer * cache.stride(0) * cache.element_size())
        steps.append(cache.shape[4])
        rows.append(cache.shape[2])
    if sum(rows) != qkv.shape[0]:
        raise ValueError(f"the caches hold {sum(rows)} rows, qkv {qkv.shape[0]}")
    out = qkv.new_empty((qkv.shape[0], heads * dim))
    count = len(caches)
    failed = getattr(library, f"self_attention_{_KERNEL_SUFFIX[dtype]}")(
        qkv.data_ptr(),
        out.data_ptr(),
        count,
        (ctypes.c_void_p * count)(*pointers),
        (ctypes.c_long * count)(*ts),
        (ctypes.c_long * count)(*steps),
        (ctypes.c_long * count)(*rows),
        heads,
        dim,
        1.0 / math.sqrt(dim),
    )
    if failed:
        raise MemoryError("self_attention could not allocate its scores")
    return out
