"""The in-process MusicGen engine: a lifecycle (`setup` loads once) and a `generate` call.

Generation goes through transformers' own `generate` on the loaded checkpoint. Requests are
served one at a time (the model is not re-entrant and the sampler seeds torch's generator);
the API tier bounds how many wait (`tunesmith.service`).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tunesmith.engine.loader import LoadedModel, load_model
from tunesmith.errors import GenerationFailed, ModelNotReady, ModelUnavailable, TunesmithError

__all__ = ["GenerationParams", "MusicGenEngine", "ProgressCallback", "Track"]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
"""Called as ``(steps_done, steps_total)`` after each decoder step."""


@dataclass(frozen=True)
class GenerationParams:
    """What one generation needs; the API's request maps onto it (see `tunesmith.service`)."""

    prompt: str
    duration: float
    seed: int
    temperature: float = 1.0
    top_k: int = 250
    top_p: float = 0.0
    guidance_scale: float = 3.0


@dataclass(frozen=True)
class Track:
    """Generated audio: float32 samples ``(frames, channels)`` at `sample_rate`."""

    samples: npt.NDArray[np.float32]
    sample_rate: int

    @property
    def duration(self) -> float:
        return float(self.samples.shape[0] / self.sample_rate)


class _StepCounter:
    """A logits processor that leaves the scores alone and reports each decoder step.

    (A logits processor, not a streamer: transformers 5's MusicGen `generate` drops the
    `streamer` argument before its sampling loop.)
    """

    def __init__(self, total: int, callback: ProgressCallback) -> None:
        self.total = total
        self.done = 0
        self.callback = callback

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        self.done += 1
        self.callback(min(self.done, self.total), self.total)
        return scores


class MusicGenEngine:
    """MusicGen text-to-music on one device. Call `setup` once, then `generate` many times."""

    def __init__(self, model: str, device: str = "auto") -> None:
        self.model_name = model
        self.device_setting = device
        self._loaded: LoadedModel | None = None
        self._lock = threading.Lock()
        self.load_error: str | None = None

    # lifecycle -------------------------------------------------------------------------
    def setup(self) -> None:
        """Load weights and processor (slow; once per process). Raises `ModelUnavailable`."""
        if self._loaded is None:
            try:
                self._loaded = load_model(self.model_name, self.device_setting)
            except TunesmithError as exc:
                self.load_error = exc.message
                raise
            except Exception as exc:  # a crash inside a foreign loader is reported the same way
                self.load_error = f"model {self.model_name!r} could not be loaded: {exc}"
                raise ModelUnavailable(self.load_error) from exc

    @property
    def ready(self) -> bool:
        return self._loaded is not None

    @property
    def loaded(self) -> LoadedModel:
        if self._loaded is None:
            if self.load_error is not None:
                raise ModelUnavailable(self.load_error)
            raise ModelNotReady("the model is still loading", retry_after=10)
        return self._loaded

    @property
    def sample_rate(self) -> int:
        return self.loaded.sample_rate

    def steps_for(self, duration: float) -> int:
        """Decoder steps for `duration` seconds: its frames plus the codebook delay pattern."""
        loaded = self.loaded
        return math.ceil(duration * loaded.frame_rate) + loaded.num_codebooks - 1

    # generation ------------------------------------------------------------------------
    def generate(self, params: GenerationParams, progress: ProgressCallback | None = None) -> Track:
        """Generate exactly ``params.duration`` seconds of audio; same seed, same audio."""
        import torch

        loaded = self.loaded
        steps = self.steps_for(params.duration)
        wanted = round(params.duration * loaded.sample_rate)
        inputs = loaded.processor(text=[params.prompt], padding=True, return_tensors="pt")
        inputs = {k: v.to(loaded.device) for k, v in inputs.items()}
        kwargs: dict[str, Any] = {
            "do_sample": True,
            "max_new_tokens": steps,
            "temperature": params.temperature,
            "top_k": params.top_k,
            "top_p": params.top_p if params.top_p > 0 else 1.0,
            "guidance_scale": params.guidance_scale if params.guidance_scale > 1 else None,
        }
        if progress is not None:
            from transformers import LogitsProcessorList

            kwargs["logits_processor"] = LogitsProcessorList([_StepCounter(steps, progress)])
        with self._lock:
            torch.manual_seed(params.seed)
            try:
                with torch.inference_mode():
                    audio = loaded.model.generate(**inputs, **kwargs)
            except torch.cuda.OutOfMemoryError as exc:
                raise GenerationFailed(f"the GPU ran out of memory: {exc}") from None
            except RuntimeError as exc:
                log.exception("generation failed")
                raise GenerationFailed(f"generation failed: {exc}") from None
        samples = audio[0].float().cpu().numpy()  # (channels, frames)
        if samples.shape[-1] < wanted:
            raise GenerationFailed(
                f"the model produced {samples.shape[-1]} samples, {wanted} were needed"
            )
        return Track(np.ascontiguousarray(samples[:, :wanted].T), loaded.sample_rate)
