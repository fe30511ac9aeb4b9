"""musicgen-melody through transformers' own `generate`: the reference the fast decoder's
chroma prefix is checked against (parity tests, `tunesmith bench --melody`)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
import torch
from transformers.generation.streamers import BaseStreamer

from tunesmith.engine.melody.chroma import chroma_features
from tunesmith.engine.params import SamplingParams
from tunesmith.errors import GenerationFailed

if TYPE_CHECKING:
    from tunesmith.engine.loader import LoadedModel
    from tunesmith.engine.params import GenerationParams

__all__ = ["MelodyGenerator"]

# Positions kept for the text prompt when sizing a window (a prompt is rarely over 60 tokens);
# a longer one still runs: transformers extends its sinusoidal positions past the table.
PROMPT_POSITIONS: Final = 128

# transformers samples from torch's global generator: one seeded generation at a time
_RNG_LOCK = threading.Lock()


class _Collected(Exception):
    """Raised at the end of the decoding loop, before `generate` decodes the codes to audio."""


class _CodeCollector(BaseStreamer):
    """Keeps what `generate` streams: the start tokens, then each step's ``(K,)`` codes."""

    def __init__(self) -> None:
        self.chunks: list[torch.Tensor] = []

    def put(self, value: torch.Tensor) -> None:
        self.chunks.append(value.reshape(value.shape[0], -1))

    def end(self) -> None:
        # generate's EnCodec decode would follow: the caller decodes the codes itself
        raise _Collected


def _run_here(work: Callable[[], torch.Tensor]) -> torch.Tensor:
    return work()


class MelodyGenerator:
    """Codes from a loaded musicgen-melody, by transformers' `generate` (one call at a time)."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.model: Any = loaded.model
        self.processor: Any = loaded.processor
        self.device = loaded.device
        config = self.model.config
        self.chroma_length = int(config.chroma_length)
        self.num_chroma = int(config.num_chroma)
        stereo = int(getattr(config.decoder, "audio_channels", 1)) == 2
        # stereo interleaves left/right codebooks, each pair delayed together
        self._delays = [k // 2 if stereo else k for k in range(self.num_codebooks)]

    @property
    def num_codebooks(self) -> int:
        return int(self.model.decoder.num_codebooks)

    @property
    def max_frames(self) -> int:
        """Frames one window holds: the positions left after the chroma prefix, the prompt's
        (`PROMPT_POSITIONS`) and the delay pattern's; and no more than the melody the chroma
        covers (the extractor keeps ``chunk_length`` seconds: 30 s, 1500 frames)."""
        positions = int(self.model.config.decoder.max_position_embeddings)
        delay = max(self._delays) + 1  # the start token and the last codebook's lag
        window = positions - self.chroma_length - PROMPT_POSITIONS - delay
        extractor = self.processor.feature_extractor
        frame_rate = int(self.model.config.audio_encoder.frame_rate)
        covered = int(extractor.n_samples) * frame_rate // int(extractor.sampling_rate)
        return min(window, covered)

    def codes_for(
        self,
        prompt: str,
        melody: npt.NDArray[np.float32] | None,
        sample_rate: int,
        frames: int,
        sampling: SamplingParams,
        seed: int,
        run: Callable[[Callable[[], torch.Tensor]], torch.Tensor] = _run_here,
    ) -> torch.Tensor:
        """`generate_codes` for a melody's samples ``(frames, channels)`` at `sample_rate`
        (None: no melody), the generation run by `run` (the engine's compute thread)."""
        chroma = None
        if melody is not None:
            chroma = chroma_features(melody, sample_rate, self.processor.feature_extractor)
        return run(partial(self.generate_codes, prompt, chroma, frames, sampling, seed))

    def track_codes(
        self,
        params: GenerationParams,
        melody: npt.NDArray[np.float32] | None,
        sample_rate: int,
        frames: int,
        run: Callable[[Callable[[], torch.Tensor]], torch.Tensor] = _run_here,
    ) -> torch.Tensor:
        """`codes_for` a request's parameters, its failures as `GenerationFailed`."""
        try:
            return self.codes_for(
                params.prompt, melody, sample_rate, frames, params.sampling, params.seed, run
            )
        except (RuntimeError, ValueError) as exc:
            raise GenerationFailed(f"generation failed: {exc}") from None

    def generate_codes(
        self,
        prompt: str,
        chroma: torch.Tensor | None,
        frames: int,
        sampling: SamplingParams,
        seed: int,
    ) -> torch.Tensor:
        """Audio codes ``(K, frames)`` (delay pattern undone) for `prompt` and a melody's
        `chroma` (`chroma_features`; None: no melody, the model's null chroma). The same
        arguments give the same codes on the same device."""
        if not 1 <= frames <= self.max_frames:
            raise ValueError(f"frames must be 1..{self.max_frames}, got {frames}")
        inputs = self.processor(text=[prompt], padding=True, return_tensors="pt")
        kwargs: dict[str, Any] = {
            "input_ids": inputs["input_ids"].to(self.device),
            "attention_mask": inputs["attention_mask"].to(self.device),
        }
        if chroma is not None:
            if chroma.ndim != 3 or chroma.shape[0] != 1 or chroma.shape[2] != self.num_chroma:
                raise ValueError(f"chroma must be (1, T, {self.num_chroma}), got {chroma.shape}")
            kwargs["input_features"] = chroma.to(self.device, self.model.dtype)
        if sampling.greedy:
            kwargs["do_sample"] = False
        else:  # our "off" values in transformers' terms: top_k 0 is off there too, top_p 1
            kwargs.update(
                do_sample=True,
                temperature=sampling.temperature,
                top_k=sampling.top_k,
                top_p=sampling.top_p if 0 < sampling.top_p < 1 else 1.0,
            )
        # under K - 1 frames transformers skips the delay pattern: make K - 1, keep `frames`
        made = max(frames, max(self._delays))
        collector = _CodeCollector()
        cuda = _cuda_index(self.device)
        with _RNG_LOCK, torch.random.fork_rng(devices=[] if cuda is None else [cuda]):
            # only the generators this generation draws from (torch.manual_seed sets them all)
            torch.default_generator.manual_seed(seed)
            if cuda is not None:
                torch.cuda.default_generators[cuda].manual_seed(seed)
            with contextlib.suppress(_Collected):
                self.model.generate(
                    **kwargs,
                    guidance_scale=sampling.guidance_scale if sampling.guided else 1.0,
                    max_new_tokens=made + max(self._delays),
                    streamer=collector,
                )
        steps = torch.cat(collector.chunks, dim=-1)  # (K, 1 + made + max delay), start first
        codes = [steps[k, 1 + d : 1 + d + frames] for k, d in enumerate(self._delays)]
        return torch.stack(codes)


def _cuda_index(device: torch.device) -> int | None:
    """The CUDA device whose generator `generate` samples from; None on the CPU."""
    if device.type != "cuda":
        return None
    return torch.cuda.current_device() if device.index is None else device.index
