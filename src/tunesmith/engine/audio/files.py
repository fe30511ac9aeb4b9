"""Turning model output samples into a file: checked finite, normalized, encoded in-process;
and reading an uploaded file back into samples (`read_audio`).

Normalization follows audiocraft's ``audio_write`` strategies, with one rule on top: nothing
leaves louder than -1 dBTP (`CEILING`).

* ``peak`` and ``rms`` apply one gain to the whole track: the strategy's gain (true peak to
  -1 dBTP; mono-mix RMS to -18 dBFS), then, if the true peak (4x oversampled, as BS.1770's
  meter) would still exceed -1 dBTP, less gain.
* ``loudness`` lands on the BS.1770 integrated loudness target with the true peak at -1 dBTP
  or under: a gain, and the look-ahead limiter (`limiter`) on the moments that would pass.
* ``limit`` keeps the track's level and limits only those moments.
* ``clip`` and ``none`` never look ahead: each output sample depends on its input sample
  alone, so a stream of the track can equal the file. Samples beyond +-`CEILING` are clipped
  (-1 dBFS sample peak); samples within it are kept exactly. Intersample peaks are not
  bounded there: that needs the neighbourhood of every sample.

This module knows nothing of the request schema: the caller passes plain names.
"""

from __future__ import annotations

import io
import math
from functools import partial
from typing import Final

import numpy as np
import numpy.typing as npt

from tunesmith.errors import GenerationFailed
from tunesmith.formats import CONTENT_TYPES, NAMES, encoded_rate
from tunesmith.formats import FORMATS as TABLE

__all__ = [
    "CEILING",
    "CONTENT_TYPES",
    "DEFAULT_LOUDNESS_LUFS",
    "FORMATS",
    "NORMALIZATIONS",
    "encode_audio",
    "encoded_rate",
    "prepare_samples",
    "read_audio",
    "stream_pcm",
    "true_peak",
    "wav_header",
]

CEILING: Final = 10 ** (-1 / 20)  # -1 dBTP as a linear amplitude
DEFAULT_LOUDNESS_LUFS: Final = -14.0  # audiocraft's loudness_headroom_db
RMS_TARGET: Final = 10 ** (-18 / 20)  # audiocraft's rms_headroom_db
# Integrated loudness below this is silence (BS.1770's absolute gate): it is not raised.
_SILENCE_LUFS: Final = -70.0

FORMATS: Final = NAMES  # what `encode_audio` writes
NORMALIZATIONS: Final = ("peak", "loudness", "rms", "clip", "none", "limit")


def _as_frames(samples: npt.ArrayLike) -> npt.NDArray[np.float32]:
    audio = np.asarray(samples, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[:, None]
    elif audio.ndim == 2 and audio.shape[0] <= 8 and audio.shape[0] < audio.shape[1]:
        audio = audio.T
    if audio.ndim != 2 or audio.size == 0 or audio.shape[1] > 8:
        raise GenerationFailed(f"audio has an unexpected shape {audio.shape}")
    if not np.isfinite(audio).all():
        raise GenerationFailed("the model produced non-finite audio samples (NaN or infinity)")
    return audio


def true_peak(audio: npt.NDArray[np.floating]) -> float:
    """The true peak of ``(frames, channels)`` audio, linear: the peak of 4x oversampling."""
    from scipy.signal import resample_poly

    sample_peak = float(np.max(np.abs(audio)))
    if audio.shape[0] < 2:
        return sample_peak
    oversampled = resample_poly(audio.astype(np.float64), 4, 1, axis=0)
    return max(sample_peak, float(np.max(np.abs(oversampled))))


def _loudness(audio: npt.NDArray[np.float32], sample_rate: int) -> float | None:
    """BS.1770 integrated loudness in LUFS, or None when it cannot be measured (too short)."""
    import pyloudnorm

    meter = pyloudnorm.Meter(sample_rate)
    if audio.shape[0] < round(meter.block_size * sample_rate):
        return None
    return float(meter.integrated_loudness(audio.astype(np.float64)))


def _strategy_gain(audio: npt.NDArray[np.float32], normalization: str, peak: float) -> float:
    if normalization == "peak":
        return CEILING / peak if peak > 0 else 1.0
    rms = float(np.sqrt(np.mean(np.mean(audio, axis=1, dtype=np.float64) ** 2)))
    return RMS_TARGET / rms if rms > 0 else 1.0


def prepare_samples(
    samples: npt.ArrayLike,
    sample_rate: int,
    normalization: str = "peak",
    loudness_lufs: float = DEFAULT_LOUDNESS_LUFS,
) -> npt.NDArray[np.float32]:
    """Samples as float32 ``(frames, channels)``, finite and normalized (see the module doc).

    Accepts ``(frames,)``, ``(channels, frames)`` (as the model emits) or ``(frames, channels)``
    with at most 8 channels. Non-finite samples mean the model failed: `GenerationFailed`.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}")
    audio = _as_frames(samples)
    if normalization in ("clip", "none"):
        return np.ascontiguousarray(np.clip(audio, -CEILING, CEILING), dtype=np.float32)
    # one 16-bit step of margin: rounding to PCM must not carry the peak over the ceiling
    limit = CEILING - 2.0**-15
    if normalization in ("loudness", "limit"):
        return _limited(audio, sample_rate, normalization, loudness_lufs, limit)
    peak = true_peak(audio)
    gain = _strategy_gain(audio, normalization, peak)
    if peak * gain > limit:
        gain = limit / peak
    return np.ascontiguousarray(audio * np.float32(gain), dtype=np.float32)


def _limited(
    audio: npt.NDArray[np.float32],
    sample_rate: int,
    normalization: str,
    loudness_lufs: float,
    ceiling: float,
) -> npt.NDArray[np.float32]:
    from tunesmith.engine.audio.limiter import land_loudness, limit

    if normalization == "limit":
        return np.ascontiguousarray(limit(audio, sample_rate, ceiling))
    measured = _loudness(audio, sample_rate)
    if measured is None or not math.isfinite(measured) or measured < _SILENCE_LUFS:
        return np.ascontiguousarray(limit(audio, sample_rate, ceiling))  # silence is not raised
    out = land_loudness(
        audio, sample_rate, loudness_lufs, ceiling, partial(_loudness, sample_rate=sample_rate)
    )
    return np.ascontiguousarray(out, dtype=np.float32)


def _resample(audio: npt.NDArray[np.float32], rate: int, to: int) -> npt.NDArray[np.float32]:
    from scipy.signal import resample_poly

    if rate == to:
        return audio
    common = math.gcd(rate, to)
    resampled = resample_poly(audio.astype(np.float64), to // common, rate // common, axis=0)
    return np.ascontiguousarray(resampled, dtype=np.float32)


def encode_audio(
    samples: npt.ArrayLike,
    sample_rate: int,
    fmt: str = "wav",
    normalization: str = "peak",
    loudness_lufs: float = DEFAULT_LOUDNESS_LUFS,
) -> bytes:
    """Normalize samples and encode them as `fmt` bytes (16-bit PCM for WAV and FLAC).

    The file holds every frame (MP3, Vorbis and Opus read back at the exact length); an Opus
    file is resampled to 48 kHz first (`encoded_rate`).
    """
    import soundfile

    if fmt not in TABLE:
        raise ValueError(f"unsupported audio format {fmt!r}")
    audio = prepare_samples(samples, sample_rate, normalization, loudness_lufs)
    rate = encoded_rate(fmt, sample_rate)
    audio = _resample(audio, sample_rate, rate)
    container, subtype = TABLE[fmt].container, TABLE[fmt].subtype
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, rate, format=container, subtype=subtype)
    return buffer.getvalue()


def wav_header(frames: int, channels: int, sample_rate: int) -> bytes:
    """The 44-byte header of a 16-bit PCM WAV file of `frames` frames: the one libsndfile
    writes for `encode_audio`'s WAV, so a header and `stream_pcm` chunks make that file."""
    import struct

    size = frames * channels * 2
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + size,
        b"WAVE",
        b"fmt ",
        16,
        1,  # PCM
        channels,
        sample_rate,
        sample_rate * channels * 2,
        channels * 2,
        16,
        b"data",
        size,
    )


def stream_pcm(samples: npt.NDArray[np.float32]) -> bytes:
    """16-bit PCM of a chunk of samples ``(frames, channels)`` as a stream plays them: clipped
    at `CEILING`, as ``clip`` and ``none`` do. A stream cannot apply a whole-track gain (peak,
    rms, loudness): for those it is the track before normalization, clipped alike."""
    import soundfile

    if samples.ndim != 2 or not np.isfinite(samples).all():
        raise GenerationFailed("the model produced non-finite audio samples (NaN or infinity)")
    audio = np.ascontiguousarray(np.clip(samples, -CEILING, CEILING), dtype=np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, 8000, format="RAW", subtype="PCM_16")  # rate: unused
    return buffer.getvalue()


def read_audio(
    data: bytes, sample_rate: int, channels: int
) -> tuple[npt.NDArray[np.float32], float]:
    """Decode a file's bytes (anything libsndfile reads: WAV, FLAC, Ogg Vorbis/Opus, MP3...)
    into float32 samples ``(frames, channels)`` at `sample_rate` with `channels` channels
    (mixed down to mono, or mono doubled for stereo), and the file's own length in seconds.

    Raises `ValueError` with a readable reason for bytes that are not decodable audio."""
    import soundfile

    try:
        audio, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except soundfile.LibsndfileError as exc:
        raise ValueError(f"not a readable audio file ({exc.error_string})") from None
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"not a readable audio file ({exc})") from None
    if audio.shape[0] == 0 or audio.shape[1] == 0:
        raise ValueError("the audio file holds no samples")
    if not np.isfinite(audio).all():
        raise ValueError("the audio file holds non-finite samples")
    seconds = audio.shape[0] / rate
    if audio.shape[1] != channels:
        mono = audio.mean(axis=1, keepdims=True)
        audio = np.repeat(mono, channels, axis=1) if channels > 1 else mono
    audio = _resample(np.ascontiguousarray(audio, dtype=np.float32), int(rate), sample_rate)
    return np.ascontiguousarray(audio, dtype=np.float32), float(seconds)
