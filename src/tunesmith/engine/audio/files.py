"""Turning model output samples into a file: checked finite, peak-limited, 16-bit encoded."""

from __future__ import annotations

import io
from typing import Final

import numpy as np
import numpy.typing as npt

from tunesmith.errors import GenerationFailed

__all__ = ["CONTENT_TYPES", "FORMATS", "PEAK_LIMIT", "encode_audio", "prepare_samples"]

# Peak after limiting: -0.1 dBFS leaves headroom so 16-bit rounding never clips.
PEAK_LIMIT: Final = 10 ** (-0.1 / 20)
CONTENT_TYPES: Final[dict[str, str]] = {"wav": "audio/wav", "flac": "audio/flac"}
_SOUNDFILE_FORMATS: Final = {"wav": "WAV", "flac": "FLAC"}
FORMATS: Final = tuple(_SOUNDFILE_FORMATS)  # what `encode_audio` writes


def prepare_samples(samples: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Samples as float32 ``(frames, channels)``, finite, scaled down if they peak above the limit.

    Accepts ``(frames,)``, ``(channels, frames)`` (as the model emits) or ``(frames, channels)``
    with at most 8 channels. Non-finite samples mean the model failed: `GenerationFailed`.
    """
    audio = np.asarray(samples, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[:, None]
    elif audio.ndim == 2 and audio.shape[0] <= 8 and audio.shape[0] < audio.shape[1]:
        audio = audio.T
    if audio.ndim != 2 or audio.size == 0 or audio.shape[1] > 8:
        raise GenerationFailed(f"audio has an unexpected shape {audio.shape}")
    if not np.isfinite(audio).all():
        raise GenerationFailed("the model produced non-finite audio samples (NaN or infinity)")
    peak = float(np.max(np.abs(audio)))
    if peak > PEAK_LIMIT:
        audio = audio * np.float32(PEAK_LIMIT / peak)
    return np.ascontiguousarray(audio)


def encode_audio(samples: npt.ArrayLike, sample_rate: int, fmt: str = "wav") -> bytes:
    """Encode samples as 16-bit PCM WAV or FLAC bytes."""
    import soundfile

    if fmt not in _SOUNDFILE_FORMATS:
        raise ValueError(f"unsupported audio format {fmt!r}")
    audio = prepare_samples(samples)
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, sample_rate, format=_SOUNDFILE_FORMATS[fmt], subtype="PCM_16")
    return buffer.getvalue()
