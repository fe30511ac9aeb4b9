"""Cross-attention over a short prompt, folded into the prompt's keys and values.

A decode step's cross-attention multiplies the conditional row by two ``(D, D)`` weights per
layer, ``q_proj`` and ``out_proj`` (MusicGen's attention has no biases). For head ``h`` over
the prompt's positions ``s``::

    score[h, s] = scale * (Wq_h x) . K[s, h]   = x . (scale * Wq_h^T K[s, h])  = x . A[h, s]
    out         = sum_h Wo_h sum_s p[h, s] V[s, h] = sum_{h, s} p[h, s] (Wo_h V[s, h])
                                                   = sum_{h, s} p[h, s] B[h, s]

with ``Wq_h`` the head's ``(hd, D)`` rows of ``q_proj``, ``Wo_h`` its ``(D, hd)`` columns of
``out_proj`` and ``p`` the softmax over ``s``. ``A`` and ``B`` are ``H * S`` vectors of ``D``
values each, computed once per request: a step then reads ``2 * H * S * D`` values instead of
``2 * D * D``, fewer whenever the prompt has fewer tokens than a head has dimensions
(``S < hd``, 64 in every MusicGen checkpoint; typical prompts are shorter). The sums are
the same up to their order (float rounding); in int8 mode ``A`` and ``B`` are rounded to int8
per row as weights are.
"""

from collections.abc import Iterable

import torch

from tunesmith.engine.kernels import matvec

__all__ = ["FoldedCross", "fold"]

# per layer stacked: A (layers, H*S, D) as a weight, its scales or None, B^T (layers, D, H*S)
# as a weight, its scales or None; int8: in `matvec.pack_int8` 's layout and with scales
FoldedCross = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]


def fold(
    cross: torch.Tensor,
    weights: Iterable[tuple[torch.Tensor, torch.Tensor]],
    int8: bool,
    dtype: torch.dtype,
) -> FoldedCross:
    """`cross`: one request's prompt keys/values ``(layers, 2, 1, H, S, hd)``; `weights`: each
    layer's float ``q_proj`` and ``out_proj`` weights ``(D, D)``, in layer order. Returns
    `FoldedCross`: int8 packed with scales if `int8`, else in `dtype` without scales."""
    heads, length, head_dim = cross.shape[3:]
    scale = head_dim**-0.5
    a_parts, b_parts = [], []
    for layer, (wq, wo) in enumerate(weights):
        keys, values = cross[layer, 0, 0].float(), cross[layer, 1, 0].float()  # (H, S, hd)
        hidden = wq.shape[1]
        # A[h, s] = scale * Wq_h^T K[s, h]: (H, S, D) as (H*S, D)
        a = torch.bmm(keys, wq.float().view(heads, head_dim, hidden)) * scale
        # B^T[:, (h, s)] = Wo_h V[s, h]: (D, H, S) as (D, H*S)
        b = torch.einsum("dhi,hsi->dhs", wo.float().view(hidden, heads, head_dim), values)
        a_parts.append(a.reshape(heads * length, hidden))
        b_parts.append(b.reshape(hidden, heads * length))
    if not int8:
        return (
            torch.stack(a_parts).to(dtype).contiguous(),
            None,
            torch.stack(b_parts).to(dtype).contiguous(),
            None,
        )
    a_packed = [matvec.pack_int8(a) for a in a_parts]
    b_packed = [matvec.pack_int8(b) for b in b_parts]
    return (
        torch.stack([w for w, _ in a_packed]),
        torch.stack([s for _, s in a_packed]),
        torch.stack([w for w, _ in b_packed]),
        torch.stack([s for _, s in b_packed]),
    )
