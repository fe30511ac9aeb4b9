"""Prefill: a job's known audio prompt through the decoder many positions at a time.

A window of a long track (or a continuation) starts from codes that are already known, and a
musicgen-melody job from its conditioning prefix (embeddings, not codes). A
decode step reads every weight for one position; prefill runs a chunk of positions as the
rows of one pass, so the weights are read once per chunk and a 12 s prompt costs a few steps'
time, not 600. It fills the self-attention cache exactly where the steps would (same layout,
same rounding for bfloat16 and int8 caches), and computes no logits: nothing is sampled from a
known position. The step that follows the prompt reads the cache as if it had written it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from tunesmith.engine.musicgen.model.decoder import DecodeJob, FastDecoder

__all__ = ["prefill"]


@torch.inference_mode()
def prefill(decoder: FastDecoder, job: DecodeJob, limit: int) -> None:
    """Run up to `limit` of `job` 's remaining prefill positions through every layer, writing
    their keys and values to its cache: first its conditioning prefix (musicgen-melody, each
    row its own: the null row's differs), advancing ``job.primed``, then its known prompt
    (``job.t`` to ``job.prefix``), advancing ``job.t``."""
    rows = job.rows
    if job.primed < job.offset:
        assert job.lead is not None
        start, end = job.primed, min(job.offset, job.primed + limit)
        lead = job.lead[:, start:end] + decoder.positions[start:end]  # (rows, n, D)
        x = lead.reshape(-1, lead.shape[-1]).to(decoder.dtype)
        _run(decoder, job, x, start, end - start)
        job.primed = end
        return
    start, end = job.t, min(job.prefix, job.t + limit)
    if end <= start:
        return
    tokens = job.tokens[:, start:end].t()  # (n, K)
    x = decoder.embeddings[decoder._codebook_index, tokens].sum(dim=1)  # (n, D)
    if decoder.embed_scale != 1.0:
        x = x * decoder.embed_scale
    first = job.offset + start  # the cache position of token position `start`
    x = (x + decoder.positions[first : first + end - start]).repeat(rows, 1)  # each row's in turn
    _run(decoder, job, x, first, end - start)
    job.t = end


def _run(decoder: FastDecoder, job: DecodeJob, x: torch.Tensor, first: int, n: int) -> None:
    """`x` ``(rows * n, D)``, each row's `n` embedded inputs at cache positions ``first ..
    first + n - 1``, through the layers: their keys and values written, no logits."""
    rows, end = job.rows, first + n
    heads, head_dim = decoder.heads, decoder.head_dim
    # a query at position first + i sees the keys at positions 0 .. first + i
    causal = torch.ones(n, end, dtype=torch.bool, device=x.device).tril(first)
    for index, layer in enumerate(decoder.layers):
        qkv = layer.qkv(x).view(rows, n, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        cache = job.cache[index]  # (2, rows, H, T, row)
        for part in (0, 1):
            _store(cache[part, :, :, first:end], qkv[part + 1])
        if index == len(decoder.layers) - 1:
            break  # the rest of the last layer feeds only the logits, which prefill skips
        keys, values = (_load(cache[part, :, :, :end], head_dim) for part in (0, 1))
        query = qkv[0].to(keys.dtype)
        attended = F.scaled_dot_product_attention(query, keys, values, attn_mask=causal)
        attended = attended.permute(0, 2, 1, 3).reshape(rows * n, heads * head_dim)
        x = layer.out(attended.to(x.dtype).contiguous(), x)
        if job.cross is not None:
            # cross-attention for the conditional row only: the unconditional row attends to
            # an all-masked prompt, which adds exactly zero (as in the step)
            conditional = x[:n]
            prompt = job.cross[index, :, 0]  # (2, H, S, hd)
            query = layer.cross_q(conditional.contiguous()).view(n, heads, head_dim)
            crossed = F.scaled_dot_product_attention(
                query.transpose(0, 1).to(prompt.dtype), prompt[0], prompt[1]
            )
            crossed = crossed.transpose(0, 1).reshape(n, heads * head_dim).to(x.dtype)
            x[:n] += layer.cross_out(crossed.contiguous())
        x = layer.fc2(layer.fc1(x), x)


def _store(target: torch.Tensor, values: torch.Tensor) -> None:
    """Write float `values` ``(rows, H, n, hd)`` into a cache slice of the same shape, rounded
    as the attention kernels store a row (`csrc/decode_attention.c`): plain, bfloat16, or int8
    against the row's largest magnitude with its float32 scale in the row's last bytes."""
    if target.dtype != torch.int8:
        target.copy_(values)
        return
    head_dim = values.shape[-1]
    values = values.float()
    top = values.abs().amax(dim=-1, keepdim=True)
    inverse = torch.where(top > 0, 127.0 / top, torch.zeros_like(top))
    target[..., :head_dim] = (values * inverse).clamp(-127.0, 127.0).round().to(torch.int8)
    target[..., head_dim:] = (top / 127.0).contiguous().view(torch.int8)


def _load(cache: torch.Tensor, head_dim: int) -> torch.Tensor:
    """A cache slice ``(rows, H, T, row)`` as the values attention reads from it."""
    if cache.dtype != torch.int8:
        return cache
    scale = cache[..., head_dim:].contiguous().view(torch.float32)
    return cache[..., :head_dim].float() * scale
