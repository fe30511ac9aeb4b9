"""Audio encoding: exact length, 16-bit, finite, peak-limited, WAV and FLAC."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile

from tunesmith.engine.audio.files import PEAK_LIMIT, encode_audio, prepare_samples
from tunesmith.errors import GenerationFailed

RATE = 32000


def sine(seconds: float, amplitude: float, channels: int = 1) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    wave = (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return np.repeat(wave[None, :], channels, axis=0)  # (channels, frames) as the model emits


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_round_trip_keeps_length_rate_and_signal(fmt: str) -> None:
    audio = sine(1.25, 0.5)
    data = encode_audio(audio, RATE, fmt)  # type: ignore[arg-type]
    decoded, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    info = soundfile.info(io.BytesIO(data))
    assert info.format == fmt.upper() and info.subtype == "PCM_16"
    assert rate == RATE and decoded.shape == (40000,)
    assert np.max(np.abs(decoded - audio[0])) < 2 / 32768


def test_loud_audio_is_scaled_to_the_peak_limit_not_clipped() -> None:
    audio = sine(0.5, 3.0)
    prepared = prepare_samples(audio)
    assert np.max(np.abs(prepared)) == pytest.approx(PEAK_LIMIT, rel=1e-6)
    # scaled, not clipped: the waveform shape is kept
    np.testing.assert_allclose(prepared[:, 0], audio[0] * (PEAK_LIMIT / 3.0), rtol=1e-5, atol=1e-7)


def test_quiet_audio_is_left_alone() -> None:
    audio = sine(0.5, 0.25)
    np.testing.assert_array_equal(prepare_samples(audio)[:, 0], audio[0])


def test_stereo_layouts() -> None:
    stereo = sine(0.5, 0.5, channels=2)
    assert prepare_samples(stereo).shape == (16000, 2)
    assert prepare_samples(stereo.T).shape == (16000, 2)
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
        prepare_samples(np.zeros((1, 0), dtype=np.float32))
