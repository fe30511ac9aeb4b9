"""Single-query attention over the decode cache: a small C kernel (`tunesmith.engine.kernels`).

torch's general attention kernel reads a one-query float32 cache well below the memory
bandwidth, and late in a long track the cache is as many bytes per step as the int8 weights.
``csrc/decode_attention.c`` reads each cached value once. The TorchScript decoder step calls it
through two torch operators (``csrc/ops.cpp``):

- ``tunesmith::self_attention(qkv, caches, ts, layer)``: one decode step's self-attention for
  a batch of jobs, writing the step's keys/values, in one call per layer. ``qkv`` ``(R, 3D)``
  float32 holds every job's rows in job order, each row its query, key and value. Job j's cache
  ``caches[j]`` is ``(layers, 2, rows, H, T, hd)``, contiguous, float32 or bfloat16 (all jobs
  alike), or int8 ``(layers, 2, rows, H, T, hd + SCALE_BYTES)``: each key or value rounded to
  int8 against its largest magnitude, followed by its float32 scale's bytes (`int8_rows`
  decodes them). The rows' keys and values go to position ``ts[j]`` of layer `layer`, then
  each row attends over positions ``0..ts[j]``. Returns ``(R, D)`` float32.
- ``tunesmith::decode_attention(query, cache, length)``: ``query`` ``(rows, H, hd)`` attends
  over ``cache[0/1, :, :, :length]`` (keys/values of a contiguous ``(2, rows, H, T, hd)``
  float32 or bfloat16 cache: the prompt's); returns float32 ``(rows, H, hd)``.

A cache the kernel cannot read raises RuntimeError, wrong shapes ValueError. Where the compiled
kernels are unavailable the decoder uses `tunesmith.engine.kernels.reference.attend` (the same
result up to float rounding, and slower late in a long track).
"""

import torch

from tunesmith.engine.kernels import SCALE_BYTES

__all__ = ["int8_rows"]


def int8_rows(cache: torch.Tensor) -> torch.Tensor:
    """The float32 values an int8 cache ``(..., hd + SCALE_BYTES)`` holds: ``(..., hd)``."""
    values = cache[..., :-SCALE_BYTES].float()
    scales = cache[..., -SCALE_BYTES:].contiguous().view(torch.float32)  # (..., 1)
    return values * scales
