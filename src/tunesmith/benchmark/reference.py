"""The reference: transformers' own MusicGen `generate`, and comparisons against it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Comparison", "compare_scores", "engine_scores", "reference_scores"]


@dataclass(frozen=True)
class Comparison:
    """How two runs' per-step scores ``(steps, K, V)`` compare."""

    steps: int
    max_abs_diff: float  # largest logit difference
    scale: float  # largest logit magnitude, for scale
    codes_equal: bool  # argmax codes identical at every step
    first_mismatch: int | None  # step of the first differing argmax
    gap_at_mismatch: float | None  # reference's top-1 minus top-2 score there (near-tie?)
    top1_agreement: float  # share of (step, codebook) argmaxes that agree
    mean_kl: float  # mean KL(reference || other) of the softmax distributions

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def reference_scores(
    model: Any,
    processor: Any,
    prompt: str,
    steps: int,
    guidance_scale: float,
    chroma: torch.Tensor | None = None,
    codes: torch.Tensor | None = None,
) -> torch.Tensor:
    """transformers' greedy `generate`: the guided scores of every step, ``(steps, K, V)``;
    for musicgen-melody with a melody's `chroma` ``(1, T, 12)``; after the known `codes`
    ``(K, F)`` (a continuation) where given."""
    inputs = processor(text=[prompt], padding=True, return_tensors="pt")
    if chroma is not None:
        inputs["input_features"] = chroma
    if codes is not None:
        inputs["decoder_input_ids"] = codes
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    out = model.generate(
        **inputs,
        do_sample=False,
        guidance_scale=guidance_scale if guidance_scale > 1 else None,
        max_new_tokens=steps,
        return_dict_in_generate=True,
        output_scores=True,
    )
    return torch.stack(out.scores).float().cpu()


def compare_scores(reference: torch.Tensor, other: torch.Tensor) -> Comparison:
    """Compare two ``(steps, K, V)`` score tensors step by step."""
    steps = min(reference.shape[0], other.shape[0])
    reference, other = reference[:steps].float(), other[:steps].float()
    ref_top, other_top = reference.argmax(-1), other.argmax(-1)
    agree = ref_top == other_top
    mismatch = (~agree).any(dim=-1).nonzero()
    first = int(mismatch[0]) if len(mismatch) else None
    gap = None
    if first is not None:
        codebook = int((~agree[first]).nonzero()[0])
        top2 = reference[first, codebook].topk(2).values
        gap = float(top2[0] - top2[1])
    log_p = torch.log_softmax(reference, dim=-1)
    log_q = torch.log_softmax(other, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean()
    return Comparison(
        steps=steps,
        max_abs_diff=float((reference - other).abs().max()),
        scale=float(reference.abs().max()),
        codes_equal=first is None,
        first_mismatch=first,
        gap_at_mismatch=gap,
        top1_agreement=float(agree.float().mean()),
        mean_kl=float(kl),
    )


def engine_scores(
    decoder: Any,
    processor: Any,
    prompt: str,
    frames: int,
    guidance_scale: float,
    teacher: torch.Tensor | None = None,
    step: Any = None,
    conditioning: Any = None,
    codes: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """tunesmith's loop, greedy (or forced to `teacher`'s codes): ``(scores, tokens)``.

    `decoder` is a `FastDecoder`; `step` what steps its jobs (a `StepDecoder`: the engine's
    `stepper`; default the decoder itself); `conditioning` a `Conditioning` to open the job
    with instead of the prompt's (musicgen-melody's prefix), `codes` ``(K, F)`` known codes it
    starts from; scores are ``(steps, K, V)`` (after the prefill), tokens ``(K, steps + 1)``.
    """
    from tunesmith.engine.musicgen.model.sampling import SamplingParams

    sampling = SamplingParams(guidance_scale=guidance_scale, greedy=True)
    if conditioning is None:
        inputs = processor(text=[prompt], padding=True, return_tensors="pt")
        conditioning = decoder.condition(inputs["input_ids"], inputs["attention_mask"])
    generator = torch.Generator(device=decoder.device)
    generator.manual_seed(0)
    job = decoder.prime(decoder.open(conditioning, frames, sampling, generator, codes))
    job.scores, job.teacher = [], teacher
    stepper = decoder if step is None else step
    while not job.done:
        stepper.step([job])
    return torch.stack(job.scores).float().cpu(), job.tokens.cpu()
