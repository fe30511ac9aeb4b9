"""Audio encoding: every format at the exact length, finite, normalized under -1 dBTP."""

from __future__ import annotations

import io
import math
from typing import get_args

import numpy as np
import pyloudnorm
import pytest
import soundfile

from tunesmith.engine.audio.files import (
    CEILING,
    CONTENT_TYPES,
    FORMATS,
    NORMALIZATIONS,
    encode_audio,
    encoded_rate,
    prepare_samples,
    true_peak,
)
from tunesmith.errors import GenerationFailed
from tunesmith.schema import AudioFormat, Normalization

RATE = 32000
SOUNDFILE_NAMES = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "ogg": ("OGG", "VORBIS"),
    "opus": ("OGG", "OPUS"),
}


def sine(seconds: float, amplitude: float, channels: int = 1) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    wave = (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return np.repeat(wave[None, :], channels, axis=0)  # (channels, frames) as the model emits


def music(seconds: float, channels: int = 2, level: float = 1.0) -> np.ndarray:
    """A few seconds of something music-like: partials over band-limited noise, not silence."""
    rng = np.random.default_rng(7)
    t = np.arange(round(seconds * RATE)) / RATE
    chans = []
    for c in range(channels):
        tones = sum(
            0.12 / (k + 1) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
            for k, f in enumerate([110, 220, 330, 440, 660, 880, 1320])
        )
        noise = np.convolve(rng.standard_normal(t.size), np.hanning(9) / 9, "same") * 0.05
        envelope = 0.6 + 0.4 * np.sin(2 * np.pi * (0.5 + 0.1 * c) * t) ** 2
        chans.append(level * envelope * (tones + noise))
    return np.asarray(chans, dtype=np.float32)


def lufs(audio: np.ndarray, rate: int = RATE) -> float:
    return float(pyloudnorm.Meter(rate).integrated_loudness(np.asarray(audio, dtype=np.float64)))


def db(linear: float) -> float:
    return 20 * math.log10(linear)


def decode(data: bytes) -> tuple[np.ndarray, int]:
    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return samples, rate


def test_the_schema_names_what_the_encoder_writes() -> None:
    assert get_args(AudioFormat) == FORMATS == tuple(CONTENT_TYPES)
    assert get_args(Normalization) == NORMALIZATIONS


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_decodes_back_at_its_rate_channels_and_length(fmt: str, channels: int) -> None:
    audio = music(1.25, channels)
    data = encode_audio(audio, RATE, fmt)
    info = soundfile.info(io.BytesIO(data))
    assert (info.format, info.subtype) == SOUNDFILE_NAMES[fmt]
    decoded, rate = decode(data)
    # Opus is resampled to 48 kHz; every other format keeps the model's rate
    assert rate == encoded_rate(fmt, RATE) == (48000 if fmt == "opus" else RATE)
    assert decoded.shape == (round(1.25 * rate), channels)


def test_opus_of_an_odd_length_rounds_its_frames_up() -> None:
    decoded, rate = decode(encode_audio(music(1.1, 1)[:, :32001], RATE, "opus"))
    assert (rate, decoded.shape[0]) == (48000, math.ceil(32001 * 3 / 2))


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_lossless_formats_keep_the_signal(fmt: str) -> None:
    audio = sine(1.25, 0.5)
    decoded, _ = decode(encode_audio(audio, RATE, fmt, "none"))
    assert np.max(np.abs(decoded[:, 0] - audio[0])) < 2 / 32768


@pytest.mark.parametrize("fmt", ["mp3", "ogg", "opus"])
def test_lossy_formats_keep_the_loudness(fmt: str) -> None:
    audio = music(3.0)
    decoded, rate = decode(encode_audio(audio, RATE, fmt, "loudness", -20.0))
    assert lufs(decoded, rate) == pytest.approx(-20.0, abs=0.5)


@pytest.mark.parametrize("target", [-14.0, -23.0, -9.0])
def test_loudness_lands_within_half_a_unit_of_its_target(target: float) -> None:
    for level in (0.05, 4.0):  # raised from quiet and lowered from loud alike
        prepared = prepare_samples(music(4.0, level=level), RATE, "loudness", target)
        assert lufs(prepared) == pytest.approx(target, abs=0.5)
        assert true_peak(prepared) <= CEILING
    decoded, _ = decode(encode_audio(music(4.0), RATE, "wav", "loudness", target))
    assert lufs(decoded) == pytest.approx(target, abs=0.5)


def test_loudness_that_would_pass_the_ceiling_is_held_under_it() -> None:
    prepared = prepare_samples(music(4.0), RATE, "loudness", -2.0)
    assert -1.2 <= db(true_peak(prepared)) <= -1.0  # limited to the ceiling, a hair under
    assert lufs(prepared) < -2.0  # the ceiling wins over the target


def test_peak_puts_the_true_peak_at_minus_one_dbtp_both_ways() -> None:
    for level in (0.05, 3.0):
        prepared = prepare_samples(music(2.0, level=level), RATE, "peak")
        assert db(true_peak(prepared)) == pytest.approx(-1.0, abs=0.01)


def test_peak_scales_rather_than_clips() -> None:
    # the waveform's shape is kept
    loud = sine(0.5, 3.0)
    prepared = prepare_samples(loud, RATE, "peak")[:, 0]
    gain = np.max(np.abs(prepared)) / 3.0
    np.testing.assert_allclose(prepared, loud[0] * gain, rtol=1e-5, atol=1e-7)


def test_rms_reaches_minus_eighteen_dbfs() -> None:
    prepared = prepare_samples(music(2.0, level=0.1), RATE, "rms")
    mono = prepared.mean(axis=1)
    assert db(float(np.sqrt(np.mean(mono.astype(np.float64) ** 2)))) == pytest.approx(-18, abs=0.01)


@pytest.mark.parametrize("normalization", ["peak", "loudness", "rms"])
@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_no_global_strategy_leaves_above_minus_one_dbtp(normalization: str, fmt: str) -> None:
    # a spiky signal: its true peak lies between samples, above its sample peak
    spiky = np.zeros((2, 2 * RATE), dtype=np.float32)
    spiky[:, ::997] = 0.9
    spiky[:, 1::997] = -0.9
    for audio in (music(2.0, level=4.0), spiky, music(2.0, level=0.01)):
        prepared = prepare_samples(audio, RATE, normalization, -5.0)
        assert true_peak(prepared) <= CEILING
        decoded, _ = decode(encode_audio(audio, RATE, fmt, normalization, -5.0))
        assert db(true_peak(decoded)) <= -1.0 + 1e-3


@pytest.mark.parametrize("normalization", ["clip", "none"])
def test_clip_and_none_are_sample_local(normalization: str) -> None:
    audio = music(1.0, level=5.0)
    prepared = prepare_samples(audio, RATE, normalization)
    # samples within the ceiling are kept exactly; the others are clipped to it
    np.testing.assert_array_equal(prepared, np.clip(audio.T, -CEILING, CEILING))
    assert np.max(np.abs(prepared)) == pytest.approx(CEILING)
    # so any prefix prepares to the prefix of the whole: a stream can equal the file
    np.testing.assert_array_equal(
        prepare_samples(audio[:, :1234], RATE, normalization), prepared[:1234]
    )
    quiet = sine(0.5, 0.25)
    np.testing.assert_array_equal(prepare_samples(quiet, RATE, normalization)[:, 0], quiet[0])


def test_silence_and_short_audio_pass_through() -> None:
    silence = np.zeros((1, RATE), dtype=np.float32)
    for normalization in NORMALIZATIONS:
        assert not prepare_samples(silence, RATE, normalization).any()
    short = sine(0.1, 0.25)  # shorter than BS.1770's 400 ms block: loudness is unmeasurable
    np.testing.assert_array_equal(prepare_samples(short, RATE, "loudness")[:, 0], short[0])


def test_stereo_layouts() -> None:
    stereo = sine(0.5, 0.5, channels=2)
    assert prepare_samples(stereo, RATE).shape == (16000, 2)
    assert prepare_samples(stereo.T, RATE).shape == (16000, 2)
    data = encode_audio(stereo, RATE, "wav")
    assert soundfile.info(io.BytesIO(data)).channels == 2


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_refused(bad: float) -> None:
    audio = sine(0.5, 0.5)
    audio[0, 100] = bad
    with pytest.raises(GenerationFailed, match="non-finite"):
        encode_audio(audio, RATE, "wav")


def test_empty_audio_is_refused() -> None:
    with pytest.raises(GenerationFailed):
        prepare_samples(np.zeros((1, 0), dtype=np.float32), RATE)


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match="format"):
        encode_audio(sine(0.5, 0.5), RATE, "aac")
    with pytest.raises(ValueError, match="normalization"):
        prepare_samples(sine(0.5, 0.5), RATE, "x")
