"""What one generation takes (`GenerationParams`, `SamplingParams`) and gives (`Track`).

Torch-free: the API and AWS tiers import it without loading the engine."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tunesmith import defaults

__all__ = ["GenerationParams", "ProgressCallback", "SamplingParams", "SectionParams", "Track"]

ProgressCallback = Callable[[int, int], None]
"""Called as ``(steps_done, steps_total)`` after each decoder step (from the decode thread)."""


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = defaults.TEMPERATURE
    top_k: int = defaults.TOP_K  # 0: off
    top_p: float = defaults.TOP_P  # 0: off
    guidance_scale: float = defaults.GUIDANCE_SCALE  # <= 1: off (no unconditional row)
    greedy: bool = False  # argmax instead of sampling (parity checks, benchmarks)

    @property
    def guided(self) -> bool:
        return self.guidance_scale > 1


@dataclass(frozen=True)
class SectionParams:
    """One part of a sectioned track: the whole text it is conditioned on, and its length."""

    prompt: str
    seconds: float


@dataclass(frozen=True)
class GenerationParams:
    """What one generation needs; the API's request maps onto it (see `tunesmith.service`)."""

    prompt: str
    duration: float
    seed: int
    temperature: float = defaults.TEMPERATURE
    top_k: int = defaults.TOP_K
    top_p: float = defaults.TOP_P
    guidance_scale: float = defaults.GUIDANCE_SCALE
    greedy: bool = False  # argmax decoding: for parity checks and benchmarks
    # played in order, each from a window of its own conditioned on its prompt (`prompt` then
    # unused); their seconds sum to `duration`, a continuation's given audio included
    # (`tunesmith.engine.sections`). Empty: one prompt throughout.
    sections: tuple[SectionParams, ...] = ()

    @property
    def sampling(self) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            guidance_scale=self.guidance_scale,
            greedy=self.greedy,
        )


@dataclass(frozen=True)
class Track:
    """Generated audio: float32 samples ``(frames, channels)`` at `sample_rate`."""

    samples: npt.NDArray[np.float32]
    sample_rate: int

    @property
    def duration(self) -> float:
        return float(self.samples.shape[0] / self.sample_rate)
