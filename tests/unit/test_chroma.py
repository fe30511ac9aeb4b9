"""`chroma_features` against musicgen-melody's feature extractor, re-derived here in numpy.

transformers' extractor cannot run here (it needs torchaudio), so `reference` redoes its
computation step by step in float64: torchaudio's sinc resampling (``rolloff=0.945``,
``lowpass_filter_width=24``) per channel, the channel mean, the cut to ``n_samples``, the centred
zero padding of a signal under ``n_fft``, torchaudio's ``Spectrogram(power=2, normalized=True)``
(periodic Hann, reflect-padded centred frames, the STFT over the window's L2 norm), the chroma
filter bank (``tuning=0``, 12 bins), the max normalisation and the one-hot of each frame's argmax.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from transformers.audio_utils import chroma_filter_bank

from tunesmith.engine.melody.chroma import MelodyFeatureConfig, chroma_features

EXTRACTOR = MelodyFeatureConfig()  # musicgen-melody's: 32 kHz, n_fft 16384, hop 4096, 30 s
RATE = 32000
Array = npt.NDArray[np.float64]


def _torchaudio_resample(x: Array, orig: int, new: int) -> Array:
    """torchaudio.functional.resample(x, orig, new, rolloff=0.945, lowpass_filter_width=24)."""
    width_lp, rolloff = 24, 0.945
    gcd = math.gcd(orig, new)
    orig, new = orig // gcd, new // gcd
    base = min(orig, new) * rolloff
    width = math.ceil(width_lp * orig / base)
    t = np.arange(0, -new, -1)[:, None] / new + np.arange(-width, width + orig)[None, :] / orig
    t = np.clip(t * base, -width_lp, width_lp)
    window = np.cos(t * math.pi / width_lp / 2) ** 2
    t *= math.pi
    sinc = np.where(t == 0, 1.0, np.sin(t) / np.where(t == 0, 1.0, t))
    kernels = sinc * window * (base / orig)  # (new, taps): one output phase per row
    padded = np.pad(x, (width, width + orig))
    blocks = sliding_window_view(padded, kernels.shape[1])[::orig]
    return (blocks @ kernels.T).reshape(-1)[: math.ceil(new * len(x) / orig)]


def reference(samples: npt.NDArray[np.float32], rate: int) -> npt.NDArray[np.float64]:
    """The extractor's ``input_features[0]`` ``(T, 12)`` for ``(frames, channels)`` samples."""
    channels = samples.astype(np.float64).T
    if rate != RATE:
        channels = np.stack([_torchaudio_resample(c, rate, RATE) for c in channels])
    wav = channels.mean(axis=0)[: EXTRACTOR.n_samples]
    n_fft, hop = EXTRACTOR.n_fft, EXTRACTOR.hop_length
    if len(wav) < n_fft:
        pad = n_fft - len(wav)
        wav = np.pad(wav, (pad // 2, pad // 2 + pad % 2))
    frames = sliding_window_view(np.pad(wav, n_fft // 2, mode="reflect"), n_fft)[::hop]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    spec = np.abs(np.fft.rfft(frames * window, axis=-1) / np.sqrt((window**2).sum())) ** 2
    filters = chroma_filter_bank(
        num_frequency_bins=n_fft, num_chroma=12, sampling_rate=RATE, tuning=0
    )
    raw = spec @ filters.T
    norm = raw / np.maximum(raw.max(axis=-1, keepdims=True), 1e-6)
    return np.eye(12)[norm.argmax(axis=-1)]


def tone(freq: float, seconds: float, rate: int = RATE, amp: float = 0.5) -> Array:
    t = np.arange(round(seconds * rate)) / rate
    return amp * np.sin(2 * np.pi * freq * t)


def ours(samples: npt.NDArray[np.floating], rate: int) -> torch.Tensor:
    return chroma_features(samples.astype(np.float32), rate, EXTRACTOR)


@pytest.mark.parametrize(
    ("freq", "pitch_class"), [(440.0, 9), (261.63, 0), (329.63, 4), (196.0, 7), (1108.73, 1)]
)
def test_a_pure_tone_lands_in_its_pitch_class(freq: float, pitch_class: int) -> None:
    """Bins start at C (A4 = 440 Hz is bin 9), as the extractor's filter bank orders them."""
    features = ours(tone(freq, 2.0)[:, None], RATE)
    assert features.dtype == torch.float32
    assert features.shape == (1, 1 + 2 * RATE // 4096, 12)
    assert torch.equal(features.sum(-1), torch.ones(1, features.shape[1]))  # one-hot frames
    assert (features[0].argmax(-1) == pitch_class).all()
    np.testing.assert_array_equal(features[0].numpy(), reference(tone(freq, 2.0)[:, None], RATE))


@pytest.mark.parametrize(("rate", "channels"), [(RATE, 1), (44100, 2), (48000, 1)])
def test_noise_is_the_extractors_formula(rate: int, channels: int) -> None:
    """Noise leaves each frame's winner to the details (power, window, filters, frames, and
    the resampler's band edge), where a tone's would survive most mistakes."""
    noise = np.random.default_rng(rate).standard_normal((4 * rate, channels)) * 0.1
    expected = reference(noise.astype(np.float32), rate)
    assert len(set(expected.argmax(-1))) > 3  # the frames do not all agree: a real test
    np.testing.assert_array_equal(ours(noise, rate)[0].numpy(), expected)


def test_a_stereo_melody_at_44k1_is_mixed_and_resampled_as_the_extractor() -> None:
    """Left a line of notes, right a quieter drone: the mean of the two, at 32 kHz."""
    rate = 44100
    notes = [261.63, 329.63, 392.0, 493.88, 440.0, 349.23]
    left = np.concatenate([tone(f, 0.75, rate) for f in notes])
    right = tone(146.83, len(left) / rate, rate, amp=0.2)
    stereo = np.stack([left, right], axis=1).astype(np.float32)
    features = ours(stereo, rate)
    assert features.shape == (1, 1 + math.ceil(len(left) * RATE / rate) // 4096, 12)
    np.testing.assert_array_equal(features[0].numpy(), reference(stereo, rate))
    assert {0, 4, 7, 11, 9, 5} <= set(features[0].argmax(-1).tolist())  # each note shows


@pytest.mark.parametrize("length", [6400, 6401, 1])
def test_a_short_melody_is_centred_in_silence_as_the_extractor_pads(length: int) -> None:
    """Under n_fft (0.51 s) the extractor pads zeros both sides to n_fft: 5 frames."""
    short = tone(440.0, length / RATE)[:, None].astype(np.float32)
    features = ours(short, RATE)
    assert features.shape == (1, 5, 12)
    np.testing.assert_array_equal(features[0].numpy(), reference(short, RATE))


def test_a_long_melody_is_cut_to_the_extractors_30_seconds() -> None:
    long = np.concatenate([tone(440.0, 30.0), tone(261.63, 2.0)])[:, None]
    features = ours(long, RATE)
    assert features.shape == (1, 235, 12)  # the model's chroma_length
    assert (features[0].argmax(-1)[-3:] == 9).all()  # the C after 30 s is gone


def test_one_dimensional_samples_are_mono_and_empty_ones_refused() -> None:
    mono = tone(440.0, 1.0)
    assert torch.equal(ours(mono, RATE), ours(mono[:, None], RATE))
    with pytest.raises(ValueError, match="frames, channels"):
        ours(np.zeros((0, 1)), RATE)
