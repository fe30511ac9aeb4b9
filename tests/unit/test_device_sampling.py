"""Sampling on the device for a static batch (`tunesmith.engine.cuda.sampling`)."""

from __future__ import annotations

import pytest
import torch

from tunesmith.engine.cuda.sampling import SlotSampling, draw_key, guide, sample, uniforms
from tunesmith.engine.musicgen.model.sampling import SamplingParams

CPU = torch.device("cpu")


def params(slots: int, **values: SamplingParams | int) -> SlotSampling:
    """`slots` slots, each with `SamplingParams()`, keys 0..slots-1."""
    state = SlotSampling.empty(slots, CPU)
    for slot in range(slots):
        state.set(slot, SamplingParams(), torch.tensor([slot]))
    return state


def with_params(state: SlotSampling, slot: int, p: SamplingParams, key: int) -> SlotSampling:
    state.set(slot, p, torch.tensor([key]))
    return state


def test_uniforms_are_a_function_of_key_position_and_codebook() -> None:
    keys = torch.tensor([0, 1, 1 << 40, (1 << 62) - 1])
    position = torch.tensor([5, 5, 5, 5])
    u = uniforms(keys, position, 4)
    assert u.shape == (4, 4) and u.dtype == torch.float32
    assert torch.equal(u, uniforms(keys, position, 4))  # no state
    assert len(torch.unique(u)) == 16  # every key and codebook its own number
    # the high half of the key counts too
    assert not torch.equal(uniforms(torch.tensor([1 << 40]), position[:1], 4), u[0:1])
    assert not torch.equal(uniforms(keys, position + 1, 4), u)


def test_uniforms_are_uniform() -> None:
    positions = torch.arange(20000)
    u = uniforms(torch.full((20000,), 12345), positions, 4).flatten()
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    counts = torch.histc(u, bins=20, min=0.0, max=1.0)
    expected = u.numel() / 20
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 45  # 19 degrees of freedom: p < 0.001 above ~43.8


def test_guidance_per_slot() -> None:
    logits = torch.randn(2, 2, 4, 16)
    scale = torch.tensor([3.0, 1.0])
    scores = guide(logits, scale)
    cond, uncond = logits[:, 0], logits[:, 1]
    assert torch.equal(scores[0], uncond[0] + (cond[0] - uncond[0]) * 3.0)
    assert torch.equal(scores[1], cond[1])  # scale 1: the conditional row alone


def test_greedy_and_top_k_1_pick_the_best_code_the_lowest_on_a_tie() -> None:
    scores = torch.randn(3, 4, 64)
    scores[2, :, 7] = scores[2, :, 9] = 100.0  # a tie: argmax picks 7
    state = params(3)
    with_params(state, 0, SamplingParams(greedy=True), 0)
    with_params(state, 1, SamplingParams(top_k=1), 1)
    with_params(state, 2, SamplingParams(greedy=True), 2)
    picked = sample(scores, state, torch.tensor([3, 3, 3]))
    assert torch.equal(picked, scores.argmax(dim=-1))
    assert picked[2].tolist() == [7, 7, 7, 7]


def draws(scores: torch.Tensor, p: SamplingParams, n: int = 4000) -> torch.Tensor:
    """`n` draws of codebook 0's code from one slot's ``(1, V)`` scores, by position."""
    state = with_params(SlotSampling.empty(1, CPU), 0, p, 77)
    batch = scores.expand(n, 1, -1)
    many = SlotSampling(*(field.expand(n).contiguous() for field in state))
    return sample(batch, many, torch.arange(n))[:, 0]


def test_draws_follow_the_softmax() -> None:
    scores = torch.tensor([[2.0, 1.0, 0.0, -1.0, -30.0]])
    drawn = draws(scores, SamplingParams(top_k=0))
    share = torch.bincount(drawn, minlength=5).float() / drawn.numel()
    expected = torch.softmax(scores[0], dim=-1)
    assert torch.allclose(share, expected, atol=0.03), (share, expected)
    cooled = draws(scores, SamplingParams(top_k=0, temperature=0.5))
    share = torch.bincount(cooled, minlength=5).float() / cooled.numel()
    assert torch.allclose(share, torch.softmax(scores[0] / 0.5, dim=-1), atol=0.03)


@pytest.mark.parametrize(
    ("p", "allowed"),
    [
        (SamplingParams(top_k=2), {0, 1}),
        (SamplingParams(top_k=0, top_p=0.6), {0, 1}),  # .56 + .21 passes 0.6
        (SamplingParams(top_k=3, top_p=0.7), {0, 1}),  # within the top 3: .63 + .23
        (SamplingParams(top_k=0, top_p=1e-9), {0}),  # the best one always stays
        (SamplingParams(top_k=0, temperature=1e-40), {0}),  # cooled to a choice of the best
    ],
)
def test_top_k_top_p_and_temperature_bound_what_is_drawn(
    p: SamplingParams, allowed: set[int]
) -> None:
    scores = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]])  # softmax: .56 .21 .13 .08 .03
    # codes in scores order are 0..4 but the slot sees them shuffled: order is found by sorting
    perm = torch.tensor([3, 0, 4, 1, 2])
    drawn = draws(scores[:, perm], p, n=2000)
    found = {int(perm[c]) for c in torch.unique(drawn)}
    assert found == allowed


def test_a_key_drawn_from_a_seeded_generator_is_reproducible() -> None:
    def key(seed: int) -> list[int]:
        generator = torch.Generator().manual_seed(seed)
        return [int(draw_key(generator)), int(draw_key(generator))]

    assert key(1) == key(1)
    assert key(1) != key(2)
    assert key(1)[0] != key(1)[1]  # each window of a track its own stream
