"""The torch reference implementations of the compiled kernels' steps.

The decoder runs them where the compiled kernels cannot be had (no compiler, a build error,
a CUDA device), and the tests hold the compiled kernels against them. Each is TorchScript-able:
the scripted decoder step calls them without Python in between.
"""

import torch
import torch.nn.functional as F

from tunesmith.engine.kernels import ACTIVATIONS
from tunesmith.engine.kernels.int4 import signed_values

__all__ = ["activate", "attend", "finish", "layer_norm", "matvec_int4"]

# TorchScript reads no module globals: `activate` spells the header's codes, checked here
if (ACTIVATIONS["gelu"], ACTIVATIONS["gelu_new"]) != (1, 2):
    raise ImportError("csrc/tunesmith.h's activation codes differ from kernels.reference's")


def activate(y: torch.Tensor, activation: int) -> torch.Tensor:
    """`activation` (an `ACTIVATIONS` code, 0 for none) applied to `y`."""
    if activation == 1:
        return F.gelu(y)
    if activation == 2:
        return F.gelu(y, approximate="tanh")
    return y


def layer_norm(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None
) -> torch.Tensor:
    """A projection's layer norm over rows ``(rows, K)``, eps 1e-5 (none given: `x`)."""
    if weight is None or bias is None:
        return x
    return F.layer_norm(x, [x.shape[1]], weight, bias, 1e-5)


def finish(y: torch.Tensor, activation: int, residual: torch.Tensor | None) -> torch.Tensor:
    """A projection's end: `activation`, then the residual added."""
    y = activate(y, activation)
    return y if residual is None else y + residual


def matvec_int4(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """``x`` ``(rows, K)`` times the int4 weight `pack_int4` packed, as ``csrc/matvec_q4.c``
    computes it, to the bit: each row rounded to int8 per group against the group's max-abs,
    the integer sums of a group exact (in float32: each below 2^24), then group by group
    ``y += (scale * step) * sum`` in float32."""
    rows, size = x.shape
    groups, outputs = scales.shape
    values = signed_values(packed, outputs).view(outputs, groups, -1)
    group = values.shape[2]
    grouped = F.pad(x.float(), [0, groups * group - size]).view(rows, groups, group)
    top = grouped.abs().amax(dim=2)
    inverse = torch.where(top > 0, torch.full_like(top, 127.0) / top, torch.zeros_like(top))
    rounded = torch.round(grouped * inverse[..., None])
    steps = top * torch.tensor(1.0 / 127.0, dtype=torch.float32)
    # (groups, rows, outputs): the exact integer sums, and each group's float32 term
    sums = torch.bmm(rounded.transpose(0, 1), values.permute(1, 2, 0).float())
    terms = (scales.float()[:, None, :] * steps.t()[:, :, None]) * sums
    y = terms[0]
    for g in range(1, groups):  # in the kernel's order: float sums depend on it
        y = y + terms[g]
    return y


def attend(q: torch.Tensor, kv: torch.Tensor, length: int, heads: int) -> torch.Tensor:
    """``q`` ``(n, D)`` over the first `length` positions of ``kv`` ``(2, n, H, T, hd)``
    -> ``(n, D)`` float, as ``tunesmith::decode_attention`` computes it."""
    n = q.shape[0]
    query = q.view(n, heads, 1, q.shape[1] // heads).to(kv.dtype)
    keys, values = kv[0, :, :, :length], kv[1, :, :, :length]
    out = F.scaled_dot_product_attention(query, keys, values)
    return out.reshape(n, q.shape[1])
