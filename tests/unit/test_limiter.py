"""The look-ahead true-peak limiter, and loudness normalization that lands on its target."""

from __future__ import annotations

import numpy as np
import pyloudnorm
import pytest

from tunesmith.engine.audio.files import CEILING, prepare_samples, true_peak
from tunesmith.engine.audio.limiter import limit

RATE = 32000
HIT_EVERY = RATE // 2  # a drum hit each half second


def drums_over_a_pad(seconds: float = 12.0, level: float = 0.05) -> np.ndarray:
    """``(frames, 2)``: a quiet pad with sharp hits ~25 dB above it, the kind of track whose
    peaks stop one gain from reaching a loudness target under -1 dBTP."""
    rng = np.random.default_rng(3)
    t = np.arange(round(seconds * RATE)) / RATE
    pad = level * np.sin(2 * np.pi * 220 * t) + 0.4 * level * rng.standard_normal(t.size)
    hit = 0.9 * np.exp(-np.arange(200) / 40) * np.sign(np.sin(np.arange(200) * 0.7))
    for start in range(0, t.size - 200, HIT_EVERY):
        pad[start : start + 200] += hit
    return np.stack([pad, 0.8 * pad], axis=1).astype(np.float32)


def lufs(audio: np.ndarray) -> float:
    return float(pyloudnorm.Meter(RATE).integrated_loudness(audio.astype(np.float64)))


def dbtp(audio: np.ndarray) -> float:
    return 20 * float(np.log10(true_peak(audio)))


def test_loudness_lands_where_one_gain_cannot() -> None:
    audio = drums_over_a_pad()
    # one gain that respects the ceiling falls short of -16 LUFS by several LU
    one_gain = audio * (CEILING / true_peak(audio))
    assert lufs(one_gain) < -18.0
    landed = prepare_samples(audio, RATE, "loudness", -16.0)
    assert lufs(landed) == pytest.approx(-16.0, abs=0.5)
    assert dbtp(landed) <= -1.0


def test_limit_keeps_audio_under_the_ceiling_as_it_is() -> None:
    quiet = drums_over_a_pad() * np.float32(0.5)
    assert dbtp(quiet) < -1.0
    np.testing.assert_array_equal(limit(quiet, RATE, CEILING), quiet)
    np.testing.assert_array_equal(prepare_samples(quiet, RATE, "limit"), quiet)


def test_limit_changes_only_the_moments_around_the_peaks() -> None:
    audio = drums_over_a_pad(level=0.1) * np.float32(2.0)  # the pad stays under the ceiling
    out = limit(audio, RATE, CEILING)
    assert dbtp(out) <= -1.0
    gain = out[:, 0] / np.where(np.abs(audio[:, 0]) > 1e-4, audio[:, 0], np.inf)
    near_hit = np.zeros(audio.shape[0], dtype=bool)
    for start in range(0, audio.shape[0], HIT_EVERY):  # 5 ms before a hit to 200 ms after
        near_hit[max(0, start - 160) : start + 6400] = True
    steady = ~near_hit & np.isfinite(gain) & (np.abs(audio[:, 0]) > 1e-4)
    np.testing.assert_allclose(gain[steady], 1.0, atol=1e-5)
    assert np.nanmin(gain[near_hit & (np.abs(audio[:, 0]) > 1e-4)]) < 0.5  # the hits came down


def test_the_gain_moves_without_clicks() -> None:
    audio = drums_over_a_pad() * np.float32(6.0)
    ones = np.ones_like(audio)
    # the limiter's gain is what it does to a constant signal with the same peaks nearby
    probe = audio.copy()
    probe[:, 1] = 0.01  # a steady channel that carries the gain the loud one imposes
    gain = limit(probe, RATE, CEILING)[:, 1] / 0.01
    assert gain.min() < 0.2
    # a 5 ms ramp at most: no step between two samples larger than 1/160 of full scale
    assert float(np.max(np.abs(np.diff(gain)))) <= 1 / 160 + 1e-6
    assert limit(ones * 0.5, RATE, CEILING).shape == ones.shape


def test_a_peak_at_the_first_sample_is_limited_too() -> None:
    audio = np.full((RATE, 1), 0.01, dtype=np.float32)
    audio[0] = 1.0
    assert dbtp(limit(audio, RATE, CEILING)) <= -1.0
