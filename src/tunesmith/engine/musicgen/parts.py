"""Building a MusicGen decoder engine at load: tunesmith's decoder at the resolved precision,
stepped eagerly or as a CUDA graph over a static batch (`tunesmith.engine.cuda`). Text MusicGen
(mono, stereo) here; musicgen-melody (`tunesmith.engine.melody.parts`) builds through `build`
with its own conditioner and steps."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from tunesmith.engine.parts import Conditioner, EngineParts, WindowConditioning, window_frames
from tunesmith.engine.process import return_freed_memory
from tunesmith.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import torch

    from tunesmith.engine.loader import LoadedModel
    from tunesmith.engine.musicgen.model import FastDecoder
    from tunesmith.engine.scheduler import StepDecoder

__all__ = ["TextConditioner", "assemble", "build"]

log = logging.getLogger(__name__)


class TextConditioner:
    """Text MusicGen's conditioning: the prompt's cross-attention keys and values, computed once
    and shared by every window of the track."""

    def __init__(self, decoder: FastDecoder) -> None:
        self.decoder = decoder

    def track(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        melody: npt.NDArray[np.float32] | None,
        sample_rate: int,
        windowed: bool,
    ) -> WindowConditioning:
        if melody is not None:
            raise ValueError("this model follows no melody")
        conditioning = self.decoder.condition(input_ids, attention_mask)
        return lambda start: conditioning


def assemble(
    model: str,
    loaded: LoadedModel,
    precision_setting: str,
    step: str,
    max_batch: int,
    batch_window: float,
) -> EngineParts:
    """The decoder, EnCodec, the step and the compute thread for a text checkpoint (see
    `MusicGenEngine` for the settings)."""
    return build(model, loaded, precision_setting, step, max_batch, batch_window, TextConditioner)


def build(
    model: str,
    loaded: LoadedModel,
    precision_setting: str,
    step: str,
    max_batch: int,
    batch_window: float,
    conditioner: Callable[[FastDecoder], Conditioner],
) -> EngineParts:
    """The decoder at the resolved precision, EnCodec, the step and the compute thread, with
    the family's `conditioner` over the decoder."""
    from tunesmith.engine import kernels
    from tunesmith.engine.audio.codec import AudioDecoder
    from tunesmith.engine.musicgen.model import (
        FastDecoder,
        release_decoder_weights,
        resolve_precision,
    )
    from tunesmith.engine.musicgen.model.store import WeightStore
    from tunesmith.engine.scheduler import BatchScheduler

    precision = resolve_precision(precision_setting, loaded.device)
    store = WeightStore.for_checkpoint(loaded.directory, precision, kernels.LAYOUT)
    decoder = FastDecoder(loaded.model, precision, loaded.device, store)
    if decoder.kernels.cause is not None:  # wanted (CPU) but not had: slower, other numerics
        log.warning(
            "compiled kernels unavailable, the decoder runs torch's (slower, more memory): "
            "%s. Fix: %s",
            decoder.kernels.cause,
            decoder.kernels.fix,
        )
    if precision != "fp32":  # the decoder holds converted copies of its Linear weights
        release_decoder_weights(loaded.model)
    audio = AudioDecoder(loaded.model.audio_encoder)  # folds EnCodec's weight norm
    return_freed_memory()  # after it: the file pages folding read are dropped too
    stepper, kind = _stepper(decoder, loaded, step, max_batch)
    scheduler = BatchScheduler(stepper, max_batch, batch_window)
    log.info(
        "engine ready: %s, %s on %s, kernels %s, step %s",
        model,
        precision,
        loaded.device,
        decoder.kernels.describe(),
        kind,
    )
    return EngineParts(loaded, audio, scheduler, decoder, stepper, conditioner(decoder), kind)


def _stepper(
    decoder: FastDecoder, loaded: LoadedModel, step: str, max_batch: int
) -> tuple[StepDecoder, str]:
    """What the scheduler steps, and its name: the dynamic decoder itself, or the static batch
    over it (`tunesmith.engine.cuda`), sized to `max_batch` requests of one window each."""
    from tunesmith.engine.cuda import StaticStepper

    kind = step
    if kind == "auto":
        # the static batch holds cross-attention prompts, not musicgen-melody's input prefix
        cuda = loaded.device.type == "cuda" and decoder.cross_attention
        kind = "cuda-graph" if cuda else "eager"
    if kind == "eager":
        return decoder, kind
    if not decoder.cross_attention:
        raise ConfigError(
            f"TUNESMITH_STEP: {kind} runs text MusicGen only; musicgen-melody's chroma prefix "
            "steps eagerly (TUNESMITH_STEP=eager or auto)"
        )
    if kind == "cuda-graph" and loaded.device.type != "cuda":
        raise ConfigError("TUNESMITH_STEP: cuda-graph needs a CUDA device")
    if decoder.cache_dtype != decoder.dtype:
        raise ConfigError(f"TUNESMITH_STEP: {kind} runs fp32, fp16 or bf16, not int8 or int4")
    positions = window_frames(loaded, decoder.max_delay) + decoder.max_delay + 1
    stepper = StaticStepper(decoder, max_batch, positions, graphs=kind == "cuda-graph")
    stepper.prepare()
    return stepper, kind
