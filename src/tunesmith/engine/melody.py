"""musicgen-melody: its chroma features, its loading, and its generation through transformers.

The melody model conditions the decoder on a prefix (a projected 12-bin chroma of the melody,
then the projected text states) instead of cross-attention, so the engine's fast decoder does
not run it; `MelodyGenerator` runs transformers' own `generate`.

transformers' `MusicgenMelodyFeatureExtractor` (and so its processor's `from_pretrained`) needs
torchaudio, which has no release for our torch. `chroma_features` computes the extractor's exact
formula with `torch.stft` and `transformers.audio_utils.chroma_filter_bank`, and
`MelodyFeatureConfig` holds the extractor's saved configuration, loaded and saved without
torchaudio, under the extractor's name, so a checkpoint reads and writes as the hub's does.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
import torch
from transformers.audio_utils import chroma_filter_bank
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.generation.streamers import BaseStreamer

from tunesmith.engine.model.sampling import SamplingParams
from tunesmith.errors import GenerationFailed

if TYPE_CHECKING:
    from tunesmith.engine.loader import LoadedModel
    from tunesmith.engine.params import GenerationParams

__all__ = ["MelodyFeatureConfig", "MelodyGenerator", "chroma_features", "load_melody_model"]

# Positions kept for the text prompt when sizing a window (a prompt is rarely over 60 tokens);
# a longer one still runs: transformers extends its sinusoidal positions past the table.
PROMPT_POSITIONS: Final = 128

# transformers samples from torch's global generator: one seeded generation at a time
_RNG_LOCK = threading.Lock()


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
    audio = np.asarray(samples, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[:, None]
    if audio.ndim != 2 or audio.shape[0] == 0 or audio.shape[1] == 0:
        raise ValueError(f"melody samples must be (frames, channels), got shape {audio.shape}")
    rate = int(feature_extractor.sampling_rate)
    # the extractor resamples each channel, then takes their mean
    channels = _resample(torch.from_numpy(audio.T.copy()), int(sample_rate), rate)
    wav = channels.mean(dim=0, keepdim=True)[:, : int(feature_extractor.n_samples)]
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


def load_melody_model(source: str, device: torch.device | str) -> tuple[Any, Any]:
    """A musicgen-melody checkpoint (hub id or `save_pretrained` directory) -> ``(model,
    processor)``, the model float32 in eval mode on `device`.

    The processor is transformers' `MusicgenMelodyProcessor` built from its parts (the
    tokenizer, and the extractor's configuration as a `MelodyFeatureConfig`), each loaded with
    `from_pretrained`. Errors are transformers' own (`OSError`, `ValueError`)."""
    from transformers import AutoTokenizer, MusicgenMelodyForConditionalGeneration

    # the package-level name is a placeholder that refuses to exist without torchaudio
    from transformers.models.musicgen_melody.processing_musicgen_melody import (
        MusicgenMelodyProcessor,
    )

    model: Any = MusicgenMelodyForConditionalGeneration.from_pretrained(source, dtype=torch.float32)
    processor = MusicgenMelodyProcessor(  # type: ignore[no-untyped-call]
        feature_extractor=MelodyFeatureConfig.from_pretrained(source),
        tokenizer=AutoTokenizer.from_pretrained(source),
    )
    model.to(torch.device(device))
    model.eval()
    return model, processor


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
