"""A request turned into encoded audio: the one step the service, the SageMaker container and
the CLI share (generate, then encode; storing and answering stay with each caller)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from tunesmith.engine import (
    CONTENT_TYPES,
    GenerationParams,
    MusicGenEngine,
    encode_audio,
    encoded_rate,
)
from tunesmith.engine.engine import ProgressCallback
from tunesmith.schema import MAX_SEED, AudioFormat, GenerateRequest

__all__ = ["RenderedAudio", "params_for", "render"]


@dataclass(frozen=True)
class RenderedAudio:
    """One finished track, encoded: its bytes and what a caller reports about it.

    `sample_rate` is the file's (48 kHz for Opus), not necessarily the model's."""

    data: bytes
    content_type: str
    format: AudioFormat
    params: GenerationParams
    duration: float
    sample_rate: int
    channels: int


def params_for(request: GenerateRequest, seed: int | None = None) -> GenerationParams:
    """Engine parameters for a request; a missing seed is drawn at random (and reported)."""
    if seed is None:
        seed = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED + 1)
    return GenerationParams(
        prompt=request.prompt,
        duration=request.duration,
        seed=seed,
        temperature=request.temperature,
        top_k=request.top_k,
        top_p=request.top_p,
        guidance_scale=request.guidance_scale,
    )


def render(
    engine: MusicGenEngine,
    request: GenerateRequest,
    fmt: AudioFormat | None = None,
    progress: ProgressCallback | None = None,
) -> RenderedAudio:
    """Generate `request` on `engine` and encode it as `fmt` (default: the request's format).

    Blocking; raises the engine's `TunesmithError` s (`GenerationFailed`, `ModelNotReady`...)."""
    fmt = fmt or request.format
    params = params_for(request)
    track = engine.generate(params, progress)
    return RenderedAudio(
        data=encode_audio(
            track.samples, track.sample_rate, fmt, request.normalization, request.loudness_lufs
        ),
        content_type=CONTENT_TYPES[fmt],
        format=fmt,
        params=params,
        duration=track.duration,
        sample_rate=encoded_rate(fmt, track.sample_rate),
        channels=int(track.samples.shape[1]),
    )
