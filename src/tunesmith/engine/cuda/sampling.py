"""Guidance and sampling for a whole batch on the device, with no host sync and no RNG state.

The dynamic step (`tunesmith.engine.musicgen.model.sampling`) samples request by request with each
request's `torch.Generator`. A CUDA graph cannot branch per request or read a Python value,
so here every request's parameters are tensors (one entry per slot) and the same operators
run for all of them: guidance where the slot's scale asks for it, then temperature, top-k and
top-p as masks over the scores sorted once, then inverse-CDF sampling.

The random numbers come from a counter-based hash of (the request's key, the position, the
codebook), not from a generator's state: a request draws the same numbers whatever shares its
batch, whichever slot it sits in, and however often a graph is captured or replayed. The key
is drawn from the request's own seeded generator when it joins (`draw_key`), so a seed still
fixes the track, and each window of a long track gets its own key.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from tunesmith.engine.musicgen.model.sampling import SamplingParams

__all__ = ["SlotSampling", "draw_key", "guide", "sample", "uniforms"]

_LOW32 = 0xFFFFFFFF


class SlotSampling(NamedTuple):
    """Each slot's sampling parameters, ``(B,)`` tensors on the device."""

    guidance: torch.Tensor  # float32: the scale; <= 1 uses the conditional row alone
    temperature: torch.Tensor  # float32
    top_k: torch.Tensor  # int64: 0 or >= V keeps every code
    top_p: torch.Tensor  # float32: 0 or >= 1 keeps every code
    greedy: torch.Tensor  # bool: the best code, no draw
    key: torch.Tensor  # int64 in [0, 2^62): the request's random stream

    @classmethod
    def empty(cls, slots: int, device: torch.device) -> SlotSampling:
        def zeros(dtype: torch.dtype) -> torch.Tensor:
            return torch.zeros(slots, dtype=dtype, device=device)

        return cls(
            zeros(torch.float32),
            torch.ones(slots, dtype=torch.float32, device=device),
            zeros(torch.int64),
            zeros(torch.float32),
            zeros(torch.bool),
            zeros(torch.int64),
        )

    def set(self, slot: int, params: SamplingParams, key: torch.Tensor) -> None:
        """Write `params` and the key (a one-element device tensor: no sync) for `slot`."""
        self.guidance[slot] = params.guidance_scale
        self.temperature[slot] = params.temperature
        self.top_k[slot] = params.top_k
        self.top_p[slot] = params.top_p
        self.greedy[slot] = params.greedy
        self.key[slot : slot + 1].copy_(key)


def draw_key(generator: torch.Generator) -> torch.Tensor:
    """A request's key for one window, drawn from (and advancing) its seeded generator."""
    return torch.randint(0, 1 << 62, (1,), generator=generator, device=generator.device)


def guide(logits: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
    """``(B, 2, K, V)`` logits (each slot's conditional row, then its unconditional one) ->
    ``(B, K, V)`` guided scores, ``uncond + (cond - uncond) * scale`` as transformers computes
    them, or the conditional row where the slot's scale is <= 1."""
    cond, uncond = logits[:, 0], logits[:, 1]
    scale = guidance.view(-1, 1, 1)
    return torch.where(scale > 1, uncond + (cond - uncond) * scale, cond)


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``x * c mod 2^32`` for ``0 <= x < 2^32`` in int64 without overflow (16-bit halves)."""
    low = (x & 0xFFFF) * c
    high = (((x >> 16) * c) & 0xFFFF) << 16
    return (low + high) & _LOW32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash with full avalanche (the "lowbias32" constants)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def uniforms(key: torch.Tensor, position: torch.Tensor, codebooks: int) -> torch.Tensor:
    """``(B, K)`` numbers in [0, 1), a pure function of each slot's key and position."""
    k = torch.arange(codebooks, device=key.device)
    counter = position.view(-1, 1) * codebooks + k  # below 2^32 for any window
    h = _mix32(counter & _LOW32)
    h = _mix32(h ^ (key.view(-1, 1) & _LOW32))
    h = _mix32(h ^ ((key.view(-1, 1) >> 32) & _LOW32))
    return (h >> 8).to(torch.float32) * (1.0 / (1 << 24))


def sample(scores: torch.Tensor, params: SlotSampling, position: torch.Tensor) -> torch.Tensor:
    """One code per slot and codebook from guided ``(B, K, V)`` float32 scores: the semantics
    of `musicgen.model.sampling.pick_tokens` (temperature measured from the best score,
    top-k, then top-p keeping at least the best code), drawn with `uniforms`."""
    _, codebooks, vocab = scores.shape
    # stable: among equal scores the lowest code first, as argmax picks it
    ordered, order = scores.sort(dim=-1, descending=True, stable=True)
    rank = torch.arange(vocab, device=scores.device)
    floor = torch.finfo(torch.float32).tiny
    cooled = (ordered - ordered[..., :1]) / params.temperature.clamp(min=floor).view(-1, 1, 1)
    k = torch.where((params.top_k > 0) & (params.top_k < vocab), params.top_k, vocab)
    cooled = cooled.masked_fill(rank >= k.view(-1, 1, 1), float("-inf"))
    probs = torch.softmax(cooled, dim=-1)
    p = params.top_p.view(-1, 1, 1)
    before = probs.cumsum(dim=-1) - probs  # mass of the likelier codes
    cut = (p > 0) & (p < 1) & (before >= p) & (rank > 0)
    cdf = probs.masked_fill(cut, 0.0).cumsum(dim=-1)
    target = uniforms(params.key, position, codebooks) * cdf[..., -1]
    drawn = (cdf <= target.unsqueeze(-1)).sum(dim=-1).clamp(max=vocab - 1)
    drawn = torch.where(params.greedy.view(-1, 1), 0, drawn)
    return order.gather(-1, drawn.unsqueeze(-1)).squeeze(-1)
