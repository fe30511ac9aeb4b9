"""EnCodec decoding of a track's codes: transformers' EnCodec modules, run a second at a time,
as the codes arrive.

transformers decodes a track in one pass. Its last stages then hold tensors of 64 channels by
every output sample (82 MB per 10 s of 32 kHz audio, several alive at once), and each layer
streams them through memory. Here the decoder runs as it is built, causally, one chunk of
`CHUNK_FRAMES` frames at a time (`CodecStream`), so a track's audio can be played while its
later codes are still being generated:

- the codebook lookup is per frame; the convolution before the LSTM gets the few frames before
  the chunk as context; the LSTM carries its state from chunk to chunk;
- the upsampling stack after the LSTM is causal, so an output sample depends on only a few
  frames before it (`context_frames`, worked out from its layers): each chunk runs with that
  many frames before it as context, whose output is dropped.

The result is the whole-track decode up to float rounding (kernels sum in another order for
another length), and faster: a chunk's tensors stay in the caches. The chunks are always the
same for the same codes, so streamed and whole decodes give the same samples. A decoder this
does not recognise (non-causal convolutions, other layer types) is decoded in one pass, at the
end.

Two more things: weight normalisation is folded into the weights once (as loaded, every
convolution recomputes its weight on every call), and one chunk runs at a time: concurrent
decodes would have their threads contend. Each piece of the work goes through a `run`
function: the engine passes its compute thread's (`BatchScheduler.call`), so concurrent decodes
take turns chunk by chunk with each other and with the decode steps, and a short track's audio
does not wait for the whole of a long one's.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

__all__ = ["AudioDecoder", "CodecStream", "context_frames", "encode_channels", "encode_codes"]

CHUNK_FRAMES = 50  # 1 s of musicgen audio: intermediate tensors of ~8 MB, inside the L3 cache

Runner = Callable[[Callable[[], torch.Tensor]], torch.Tensor]
"""Runs a piece of decoding work and returns its result (on the engine's compute thread)."""


def _here(work: Callable[[], torch.Tensor]) -> torch.Tensor:
    return work()


def _reach(module: Any, before: int) -> int | None:
    """Samples at the start of `module`'s output that depend on input before its own start,
    given `before` such samples in its input; None for a module this cannot bound."""
    from transformers.models.encodec.modeling_encodec import (
        EncodecConv1d,
        EncodecConvTranspose1d,
        EncodecResnetBlock,
    )

    if isinstance(module, (torch.nn.ELU, torch.nn.Identity)):
        return before
    if isinstance(module, EncodecConv1d):
        conv = module.conv
        if not module.causal or conv.stride[0] != 1 or module.norm_type != "weight_norm":
            return None
        return before + (conv.kernel_size[0] - 1) * conv.dilation[0]
    if isinstance(module, EncodecConvTranspose1d):
        transposed = module.conv
        if not module.causal or module.trim_right_ratio != 1.0 or module.norm_type != "weight_norm":
            return None
        stride = transposed.stride[0]
        return before * stride + transposed.kernel_size[0] - stride
    if isinstance(module, EncodecResnetBlock):
        reach = _reach_through(module.block, before)
        shortcut = _reach(module.shortcut, before)
        return None if reach is None or shortcut is None else max(reach, shortcut)
    return None


def _reach_through(layers: Any, before: int) -> int | None:
    """`_reach` of `layers` applied one after another."""
    reach: int | None = before
    for layer in layers:
        reach = None if reach is None else _reach(layer, reach)
    return reach


class _PolyphaseTranspose(torch.nn.Module):
    """A causal EnCodec transposed convolution (trimmed on the right, as
    `EncodecConvTranspose1d` does with ``trim_right_ratio`` 1) as one matrix product.

    With stride s, output sample ``q * s + r`` is taps ``r, r + s, ...`` of the weight against
    inputs ``q, q - 1, ...``: the s phases are a plain convolution with ``ceil(k / s)`` taps,
    computed as an mm of the phases' weights by the input's shifted copies, then interleaved.
    The same sums in another order: float rounding apart, the same output, and faster than
    torch's transposed convolutions for these shapes."""

    weight: torch.Tensor
    bias: torch.Tensor

    def __init__(self, module: Any) -> None:
        super().__init__()
        conv = module.conv
        weight = conv.weight.detach()  # (in, out, k), weight norm already folded
        inputs, outputs, kernel = weight.shape
        stride = int(conv.stride[0])
        self.stride, self.outputs, self.taps = stride, outputs, -(-kernel // stride)
        padded = F.pad(weight, (0, self.taps * stride - kernel))
        phases = padded.view(inputs, outputs, self.taps, stride).permute(3, 1, 2, 0).flip(2)
        # weight[(r, o), (m, i)]: input channel i at shift m (m = taps - 1: the current input)
        self.register_buffer("weight", phases.reshape(stride * outputs, -1).contiguous())
        self.register_buffer("bias", conv.bias.detach().repeat(stride)[:, None])

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        length = hidden.shape[-1]
        padded = F.pad(hidden[0], (self.taps - 1, 0))
        shifted = torch.cat([padded[:, m : m + length] for m in range(self.taps)])
        phases = torch.addmm(self.bias, self.weight, shifted)  # (s * out, length)
        out = phases.view(self.stride, self.outputs, length).permute(1, 2, 0)
        return out.reshape(1, self.outputs, length * self.stride)


def context_frames(layers: list[Any], hop: int) -> int | None:
    """Frames of context a chunk of `layers` (the stack after the LSTM) needs before it, so
    that its kept output is exact; None when the stack cannot be run in chunks."""
    reach = _reach_through(layers, 0)
    return None if reach is None else math.ceil(reach / hop) + 1  # one frame to spare


class AudioDecoder:
    """Decodes ``(K, frames)`` codes to ``(1, samples)`` audio with a loaded EnCodec model."""

    def __init__(self, audio_encoder: Any, chunk_frames: int = CHUNK_FRAMES) -> None:
        from transformers.models.encodec.modeling_encodec import (
            EncodecConvTranspose1d,
            EncodecLSTM,
        )

        for module in audio_encoder.modules():
            if parametrize.is_parametrized(module, "weight"):  # the same weights, computed once
                parametrize.remove_parametrizations(module, "weight")
        self.model = audio_encoder
        self.chunk_frames = chunk_frames
        config = audio_encoder.config
        self.hop = math.prod(config.upsampling_ratios)  # output samples per frame
        layers = list(audio_encoder.decoder.layers)
        lstm = [i for i, layer in enumerate(layers) if isinstance(layer, EncodecLSTM)]
        self.context: int | None = None  # frames of context the stack after the LSTM needs
        self.head_context: int | None = None  # and the layers before it
        self._head: list[Any] = []
        self._lstm: Any = None
        self._stack: list[Any] = []
        if len(lstm) == 1 and config.chunk_length is None:
            self._head, self._stack = layers[: lstm[0]], layers[lstm[0] + 1 :]
            self._lstm = layers[lstm[0]].lstm
            self.head_context = _reach_through(self._head, 0)
            self.context = context_frames(self._stack, self.hop)
        if self.context is not None and self.head_context is not None:
            self._stack = [
                _PolyphaseTranspose(layer) if isinstance(layer, EncodecConvTranspose1d) else layer
                for layer in self._stack
            ]
        else:
            self.context = None
        self._lock = threading.Lock()

    @property
    def streams(self) -> bool:
        """Whether audio comes out chunk by chunk (else all of it once the codes are in)."""
        return self.context is not None

    def stream(self) -> CodecStream:
        """A decoder of one channel's codes fed a chunk at a time (`CodecStream`)."""
        return CodecStream(self)

    def decode(self, codes: torch.Tensor, run: Runner = _here) -> torch.Tensor:
        """The audio of one channel's codes: ``(K, frames)`` long -> ``(1, frames * hop)``,
        the same samples a `CodecStream` fed these codes gives. `run` runs each piece."""
        if self.context is None:  # transformers' own pass
            return run(partial(self._whole, codes))
        stream = self.stream()
        chunks, start = [], 0
        for end in self.chunk_ends(codes.shape[1]):
            chunks.append(run(partial(stream.decode, codes[:, start:end])))
            start = end
        return run(partial(self._join, chunks))

    def chunk_ends(self, frames: int) -> list[int]:
        """Where the chunks of a `frames` long track end: a quarter and a half chunk first, so
        the first audio comes after a few steps, then every `chunk_frames`. The first holds at
        least the frames the layers before the LSTM pad at the start (reflected, as the whole
        track's are)."""
        first = (self.head_context or 0) + 1
        step = self.chunk_frames
        ramp = {max(first, step // 4), max(first, step // 2)}
        ends = sorted(e for e in ramp | set(range(step, frames, step)) if first <= e < frames)
        return [*ends, frames]

    @torch.inference_mode()
    def _join(self, chunks: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(chunks, dim=-1)

    @torch.inference_mode()
    def _whole(self, codes: torch.Tensor) -> torch.Tensor:
        with self._lock:
            decoded = self.model.decode(codes[None, None], audio_scales=[None])
        audio: torch.Tensor = decoded.audio_values[0]
        return audio


class CodecStream:
    """One channel's codes decoded as they come: each `decode` takes the next frames and
    returns their audio. Fed chunks that end where `AudioDecoder.chunk_ends` says, it gives
    exactly what `AudioDecoder.decode` gives for the whole."""

    def __init__(self, decoder: AudioDecoder) -> None:
        if decoder.context is None or decoder.head_context is None:
            raise ValueError("this EnCodec decoder cannot be run in chunks")
        self.decoder = decoder
        self._embedded: torch.Tensor | None = None  # the last frames before the LSTM: context
        self._hidden: torch.Tensor | None = None  # the last frames after it: the stack's context
        self._state: tuple[torch.Tensor, torch.Tensor] | None = None  # the LSTM's
        self.frames = 0

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """The audio ``(1, frames * hop)`` of the next ``(K, frames)`` codes."""
        d = self.decoder
        assert d.context is not None and d.head_context is not None
        with d._lock:  # per chunk: a short track's decode need not wait for a long one
            embedded = d.model.quantizer.decode(codes[:, None])  # (1, D, frames)
            hidden = _with_context(embedded, self._embedded, d._head, 1)
            self._embedded = _tail(embedded, self._embedded, d.head_context + 1)
            steps = hidden.permute(2, 0, 1)
            out, self._state = d._lstm(steps, self._state)
            hidden = (out + steps).permute(1, 2, 0)
            audio = _with_context(hidden, self._hidden, d._stack, d.hop)
            self._hidden = _tail(hidden, self._hidden, d.context)
        self.frames += codes.shape[1]
        return audio[0]


def _with_context(
    new: torch.Tensor, before: torch.Tensor | None, layers: list[Any], hop: int
) -> torch.Tensor:
    """`layers` over `new` frames, run with the frames `before` them, whose output is dropped."""
    out = new if before is None else torch.cat([before, new], dim=-1)
    for layer in layers:
        out = layer(out)
    skip = 0 if before is None else before.shape[-1] * hop
    return out[..., skip:]


def _tail(new: torch.Tensor, before: torch.Tensor | None, frames: int) -> torch.Tensor:
    """The last `frames` frames of `before` followed by `new`."""
    joined = new if before is None else torch.cat([before, new], dim=-1)
    return joined[..., max(0, joined.shape[-1] - frames) :].clone()


@torch.inference_mode()
def encode_codes(audio_encoder: Any, samples: Any) -> torch.Tensor:
    """EnCodec codes ``(K, frames)`` of one channel's samples (a 1-D float array at the
    codec's rate), cut to whole frames: the codes then decode back to the same span."""
    hop = math.prod(audio_encoder.config.upsampling_ratios)
    audio = torch.as_tensor(samples, dtype=torch.float32)
    audio = audio[: audio.shape[0] // hop * hop]
    device = next(audio_encoder.parameters()).device
    encoded = audio_encoder.encode(audio.to(device)[None, None])
    codes: torch.Tensor = encoded.audio_codes[0, 0]  # (chunks, batch, K, frames) -> (K, frames)
    return codes


def encode_channels(audio_encoder: Any, samples: Any) -> torch.Tensor:
    """EnCodec codes of ``(frames, channels)`` samples: ``(K, frames)`` for one channel; for
    two, each encoded alone and interleaved as a stereo MusicGen's codebooks (L0 R0 L1 R1...)."""
    parts = [encode_codes(audio_encoder, samples[:, c]) for c in range(samples.shape[1])]
    if len(parts) == 1:
        return parts[0]
    return torch.stack(parts, dim=1).reshape(-1, parts[0].shape[1])
