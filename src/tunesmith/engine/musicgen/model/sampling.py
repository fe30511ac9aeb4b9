"""Choosing the next codes: classifier-free guidance, then temperature, top-k, top-p, sampling.

The order and formulas are those of transformers' MusicGen `generate` (and audiocraft):
``uncond + (cond - uncond) * guidance_scale``, then the warpers. Each request samples with its
own `torch.Generator`, so its codes do not depend on which other requests share its batch.
"""

from __future__ import annotations

import torch

from tunesmith.engine.params import SamplingParams

__all__ = ["SamplingParams", "guided_logits", "pick_tokens"]


def guided_logits(rows: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """``(rows, K, V)`` logits of one request (conditional first) -> guided ``(K, V)`` scores."""
    if not params.guided:
        return rows[0]
    cond, uncond = rows[0], rows[1]
    return uncond + (cond - uncond) * params.guidance_scale


def pick_tokens(
    scores: torch.Tensor, params: SamplingParams, generator: torch.Generator
) -> torch.Tensor:
    """One code per codebook from ``(K, V)`` scores."""
    if params.greedy:
        return scores.argmax(dim=-1)
    if params.temperature != 1.0:
        scores = _cooled(scores, params.temperature)
    if 0 < params.top_k < scores.shape[-1]:
        values, indices = scores.topk(params.top_k, dim=-1)  # sorted, largest first
    elif params.top_p > 0:
        values, indices = scores.sort(dim=-1, descending=True)
    else:
        probs = torch.softmax(scores, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    probs = torch.softmax(values, dim=-1)
    if 0 < params.top_p < 1:
        before = probs.cumsum(dim=-1) - probs  # mass of the likelier codes
        cut = before >= params.top_p
        cut[..., 0] = False  # the best one always stays, even where top_p rounds to 0 in float32
        probs = probs.masked_fill(cut, 0.0)
    choice = torch.multinomial(probs, 1, generator=generator)
    return indices.gather(-1, choice).squeeze(-1)


def _cooled(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """``scores / temperature``, up to a shift softmax ignores: measured from each row's best
    score, so a temperature that overflows the gaps (or rounds to 0 in float32) turns them into
    -inf, a choice among the best codes, rather than inf - inf = NaN."""
    floor = torch.finfo(scores.dtype).tiny
    gaps = scores - scores.amax(dim=-1, keepdim=True)
    return gaps / max(temperature, floor)
