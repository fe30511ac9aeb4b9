"""musicgen-melody's chroma features, computed without torchaudio.

transformers' `MusicgenMelodyFeatureExtractor` (and so its processor's `from_pretrained`) needs
torchaudio, which has no release for our torch. `chroma_features` computes the extractor's exact
formula with `torch.stft` and `transformers.audio_utils.chroma_filter_bank`, and
`MelodyFeatureConfig` holds the extractor's saved configuration, loaded and saved without
torchaudio, under the extractor's name, so a checkpoint reads and writes as the hub's does.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from transformers.audio_utils import chroma_filter_bank
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor

__all__ = [
    "MelodyFeatureConfig",
    "chroma_features",
    "melody_stretch",
    "melody_wave",
    "wave_chroma",
]


class MelodyFeatureConfig(SequenceFeatureExtractor):
    """`MusicgenMelodyFeatureExtractor`'s configuration (same arguments, defaults, attributes
    and saved form), without its torchaudio spectrogram: `chroma_features` computes that."""

    model_input_names = ["input_features"]  # noqa: RUF012 - the base class's own declaration

    def __init__(
        self,
        feature_size: int = 12,
        sampling_rate: int = 32000,
        hop_length: int = 4096,
        chunk_length: int = 30,
        n_fft: int = 16384,
        num_chroma: int = 12,
        padding_value: float = 0.0,
        return_attention_mask: bool = False,
        stem_indices: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            feature_size=feature_size,
            sampling_rate=sampling_rate,
            padding_value=padding_value,
            return_attention_mask=return_attention_mask,
            **kwargs,
        )
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.chunk_length = chunk_length
        self.n_samples = chunk_length * sampling_rate
        self.sampling_rate = sampling_rate
        # as the extractor, which does not save num_chroma: a loaded one always has 12
        filters = chroma_filter_bank(
            sampling_rate=sampling_rate, num_frequency_bins=n_fft, tuning=0, num_chroma=num_chroma
        )
        self.chroma_filters = torch.from_numpy(filters).float()
        self.stem_indices = [3, 2] if stem_indices is None else list(stem_indices)

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output.pop("chroma_filters", None)
        output["feature_extractor_type"] = "MusicgenMelodyFeatureExtractor"
        return output


def chroma_features(
    samples: npt.NDArray[np.float32], sample_rate: int, feature_extractor: Any
) -> torch.Tensor:
    """The model's ``input_features`` ``(1, T, 12)`` float32 for a melody, as the extractor
    computes them: mono mix, resample, cut to ``chunk_length`` seconds (``T <= 235``), a
    normalized power STFT folded into chroma bins, then one-hot on each frame's loudest bin.

    `samples` are ``(frames, channels)`` (or ``(frames,)``) at `sample_rate`; `feature_extractor`
    is a `MelodyFeatureConfig` or transformers' extractor (what a processor holds)."""
    return wave_chroma(melody_wave(samples, sample_rate, feature_extractor), feature_extractor)


def melody_wave(
    samples: npt.NDArray[np.float32], sample_rate: int, feature_extractor: Any
) -> torch.Tensor:
    """A melody ``(frames, channels)`` at `sample_rate` as the extractor hears it: each channel
    resampled to its rate, then their mean, ``(1, N)``."""
    audio = np.asarray(samples, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[:, None]
    if audio.ndim != 2 or audio.shape[0] == 0 or audio.shape[1] == 0:
        raise ValueError(f"melody samples must be (frames, channels), got shape {audio.shape}")
    rate = int(feature_extractor.sampling_rate)
    channels = _resample(torch.from_numpy(audio.T.copy()), int(sample_rate), rate)
    return channels.mean(dim=0, keepdim=True)


def melody_stretch(wave: torch.Tensor, start: float, feature_extractor: Any) -> torch.Tensor:
    """``chunk_length`` seconds of a `melody_wave` from `start` seconds, the melody cycled where
    it runs out: what audiocraft conditions a long track's window that starts there on."""
    rate, length = int(feature_extractor.sampling_rate), int(feature_extractor.n_samples)
    first = int(start * rate)
    positions = torch.arange(first, first + length) % wave.shape[-1]
    return wave[:, positions]


def wave_chroma(wave: torch.Tensor, feature_extractor: Any) -> torch.Tensor:
    """`chroma_features` of a `melody_wave` ``(1, N)``: its first ``chunk_length`` seconds."""
    wav = wave[:, : int(feature_extractor.n_samples)]
    n_fft, hop = int(feature_extractor.n_fft), int(feature_extractor.hop_length)
    if wav.shape[-1] < n_fft:  # centred in silence, the odd sample on the right
        pad = n_fft - wav.shape[-1]
        wav = torch.nn.functional.pad(wav, (pad // 2, pad // 2 + pad % 2), "constant", 0)
    # torchaudio's Spectrogram(power=2, normalized=True): periodic Hann, reflect-centred frames,
    # the complex STFT divided by the window's L2 norm
    window = torch.hann_window(n_fft)
    stft = torch.stft(
        wav,
        n_fft=n_fft,
        hop_length=hop,
        win_length=n_fft,
        window=window,
        center=True,
        pad_mode="reflect",
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    stft /= window.pow(2.0).sum().sqrt()
    spec = stft.abs().pow(2.0)
    filters = feature_extractor.chroma_filters.to(torch.float32)
    raw = torch.einsum("cf, ...ft->...ct", filters, spec)
    norm = torch.nn.functional.normalize(raw, p=float("inf"), dim=-2, eps=1e-6).transpose(1, 2)
    one_hot = torch.zeros_like(norm)
    return one_hot.scatter_(-1, norm.argmax(-1, keepdim=True), 1.0)


def _resample(wav: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """``(C, N)`` from `orig` to `new` Hz as the extractor resamples, torchaudio's
    ``resample(wav, orig, new, rolloff=0.945, lowpass_filter_width=24)`` step by step in
    `wav`'s dtype. Not `audio.files`' polyphase filter: its band edge lies elsewhere, which
    moves the loudest chroma bin of noisy frames (cymbals, breath)."""
    if orig == new:
        return wav
    gcd = math.gcd(orig, new)
    orig, new = orig // gcd, new // gcd
    zeros, base = 24, min(orig, new) * 0.945  # zero crossings each side; the cutoff
    width = math.ceil(zeros * orig / base)
    # one windowed-sinc filter per output phase: a conv1d with stride orig, new channels
    idx = torch.arange(-width, width + orig, dtype=wav.dtype)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=wav.dtype)[:, None, None] / new + idx
    t *= base
    t = t.clamp_(-zeros, zeros)
    window = torch.cos(t * math.pi / zeros / 2) ** 2
    t *= math.pi
    kernels = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t)
    kernels *= window * (base / orig)
    padded = torch.nn.functional.pad(wav, (width, width + orig))
    out = torch.nn.functional.conv1d(padded[:, None], kernels, stride=orig)
    out = out.transpose(1, 2).reshape(wav.shape[0], -1)
    return out[:, : math.ceil(new * wav.shape[-1] / orig)]
