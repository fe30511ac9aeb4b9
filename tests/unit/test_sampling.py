"""Choosing codes: guidance formula, greedy, top-k / top-p support, per-request generators."""

from __future__ import annotations

import pytest
import torch

from tunesmith.engine.musicgen.model.sampling import SamplingParams, guided_logits, pick_tokens


def scores() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(4, 64) * 3


def test_guidance_combines_conditional_and_unconditional_rows() -> None:
    cond, uncond = torch.randn(4, 8), torch.randn(4, 8)
    rows = torch.stack([cond, uncond])
    guided = guided_logits(rows, SamplingParams(guidance_scale=3.0))
    torch.testing.assert_close(guided, uncond + 3.0 * (cond - uncond))
    torch.testing.assert_close(guided_logits(rows[:1], SamplingParams(guidance_scale=1.0)), cond)


def test_greedy_and_top_k_1_are_argmax() -> None:
    s = scores()
    gen = torch.Generator().manual_seed(1)
    assert torch.equal(pick_tokens(s, SamplingParams(greedy=True), gen), s.argmax(-1))
    assert torch.equal(pick_tokens(s, SamplingParams(top_k=1), gen), s.argmax(-1))
    assert torch.equal(pick_tokens(s, SamplingParams(top_k=0, top_p=1e-6), gen), s.argmax(-1))


def test_top_k_limits_the_support() -> None:
    s = scores()
    allowed = s.topk(5, dim=-1).indices
    gen = torch.Generator().manual_seed(2)
    seen = torch.stack([pick_tokens(s, SamplingParams(top_k=5), gen) for _ in range(300)])
    for k in range(4):
        assert set(seen[:, k].tolist()) <= set(allowed[k].tolist())
        assert len(set(seen[:, k].tolist())) > 1  # it samples, it does not just pick the top


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    s = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    gen = torch.Generator().manual_seed(3)
    params = SamplingParams(top_k=0, top_p=0.7)
    seen = {int(pick_tokens(s, params, gen)) for _ in range(300)}
    assert seen == {0, 1}  # 0.5 + 0.3 reaches 0.7; 2 and 3 are cut


def test_same_generator_seed_same_codes_and_temperature_matters() -> None:
    s = scores()
    params = SamplingParams(top_k=50)
    a = [pick_tokens(s, params, torch.Generator().manual_seed(9)) for _ in range(2)]
    assert torch.equal(a[0], a[1])
    gen = torch.Generator().manual_seed(4)
    cold = torch.stack([pick_tokens(s, SamplingParams(temperature=0.05), gen) for _ in range(50)])
    assert (cold == s.argmax(-1)).float().mean() > 0.95


@pytest.mark.parametrize("temperature", [1e-300, 5e-324, 1e-45, 1e-38, 1e-30])
@pytest.mark.parametrize(("top_k", "top_p"), [(250, 0.0), (0, 0.0), (0, 0.5), (0, 1.0), (1, 1e-12)])
def test_a_temperature_below_float32_s_range_picks_the_best_code(
    temperature: float, top_k: int, top_p: float
) -> None:
    # dividing float32 scores by these overflowed to inf (or, rounded to 0, gave NaN), and
    # multinomial refused the probabilities
    s = scores()
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)
    picked = pick_tokens(s, params, torch.Generator().manual_seed(5))
    assert torch.equal(picked, s.argmax(-1))


def test_a_tiny_temperature_shares_the_choice_between_tied_best_codes() -> None:
    s = torch.tensor([[1.0, 4.0, -2.0, 4.0, 3.999]])
    gen = torch.Generator().manual_seed(6)
    params = SamplingParams(temperature=1e-300, top_k=0)
    seen = {int(pick_tokens(s, params, gen)) for _ in range(200)}
    assert seen == {1, 3}


def test_the_highest_temperature_samples_widely_from_finite_probabilities() -> None:
    s = scores()
    gen = torch.Generator().manual_seed(7)
    params = SamplingParams(temperature=10.0, top_k=0)
    seen = torch.stack([pick_tokens(s, params, gen) for _ in range(200)])
    assert all(len(set(seen[:, k].tolist())) > 20 for k in range(4))


@pytest.mark.parametrize("top_p", [5e-324, 1e-46, 1e-45, 1e-12])
@pytest.mark.parametrize("top_k", [0, 50])
def test_a_top_p_that_rounds_to_0_in_float32_keeps_the_best_code(top_p: float, top_k: int) -> None:
    # compared in float32, such a top_p was 0 and cut every code: multinomial then refused a
    # distribution that summed to 0
    s = scores()
    params = SamplingParams(top_k=top_k, top_p=top_p)
    picked = pick_tokens(s, params, torch.Generator().manual_seed(8))
    assert torch.equal(picked, s.argmax(-1))
