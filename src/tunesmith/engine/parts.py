"""Assembling an engine at load: the checkpoint, its decoder, the step that drives it, EnCodec
and the compute thread, chosen from the checkpoint and the settings (`assemble`).

A text checkpoint gets tunesmith's decoder (`tunesmith.engine.model`) at the resolved precision,
stepped eagerly or as a CUDA graph over a static batch (`tunesmith.engine.cuda`); a
musicgen-melody checkpoint gets transformers' own generation (`tunesmith.engine.melody`). Runs
in the loading thread; `MusicGenEngine.setup` keeps what it returns.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunesmith.config import WINDOW_SECONDS
from tunesmith.engine.loader import LoadedModel, load_model
from tunesmith.engine.process import return_freed_memory
from tunesmith.errors import ConfigError

if TYPE_CHECKING:
    from tunesmith.engine.audio.codec import AudioDecoder
    from tunesmith.engine.melody import MelodyGenerator
    from tunesmith.engine.model import FastDecoder
    from tunesmith.engine.scheduler import BatchScheduler, StepDecoder

__all__ = ["EngineParts", "assemble", "window_frames"]

log = logging.getLogger(__name__)


@dataclass
class EngineParts:
    """What a loaded engine runs on."""

    loaded: LoadedModel
    audio: AudioDecoder
    scheduler: BatchScheduler
    decoder: FastDecoder | None = None  # text checkpoints
    stepper: StepDecoder | None = None  # what the scheduler steps (text checkpoints)
    melody: MelodyGenerator | None = None  # musicgen-melody checkpoints
    step_kind: str = "eager"


def assemble(
    model: str,
    device: str,
    precision: str,
    step: str,
    max_batch: int,
    batch_window: float,
) -> EngineParts:
    """Load `model` on `device` and build what runs it (see `MusicGenEngine` for the settings).

    Raises `ModelUnavailable`, or `ConfigError` for an impossible device, precision or step."""
    loaded = load_model(model, device)
    if loaded.melody:
        return _melody_parts(model, loaded, precision)
    return _text_parts(model, loaded, precision, step, max_batch, batch_window)


def window_frames(loaded: LoadedModel, max_delay: int) -> int:
    """Frames one window holds: 30 s, or fewer where the model has fewer positions."""
    positions = int(loaded.model.decoder.config.max_position_embeddings)
    limit = positions - 1 - max_delay  # position 0 is the start token
    return min(round(WINDOW_SECONDS * loaded.frame_rate), limit)


def _text_parts(
    model: str,
    loaded: LoadedModel,
    precision_setting: str,
    step: str,
    max_batch: int,
    batch_window: float,
) -> EngineParts:
    from tunesmith.engine import kernels
    from tunesmith.engine.audio.codec import AudioDecoder
    from tunesmith.engine.model import FastDecoder, release_decoder_weights, resolve_precision
    from tunesmith.engine.model.store import WeightStore
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
    return EngineParts(loaded, audio, scheduler, decoder, stepper, step_kind=kind)


def _stepper(
    decoder: FastDecoder, loaded: LoadedModel, step: str, max_batch: int
) -> tuple[StepDecoder, str]:
    """What the scheduler steps, and its name: the dynamic decoder itself, or the static batch
    over it (`tunesmith.engine.cuda`), sized to `max_batch` requests of one window each."""
    from tunesmith.engine.cuda import StaticStepper

    kind = step
    if kind == "auto":
        kind = "cuda-graph" if loaded.device.type == "cuda" else "eager"
    if kind == "eager":
        return decoder, kind
    if kind == "cuda-graph" and loaded.device.type != "cuda":
        raise ConfigError("TUNESMITH_STEP: cuda-graph needs a CUDA device")
    if decoder.cache_dtype != decoder.dtype:
        raise ConfigError(f"TUNESMITH_STEP: {kind} runs fp32, fp16 or bf16, not int8 or int4")
    positions = window_frames(loaded, decoder.max_delay) + decoder.max_delay + 1
    stepper = StaticStepper(decoder, max_batch, positions, graphs=kind == "cuda-graph")
    stepper.prepare()
    return stepper, kind


def _melody_parts(model: str, loaded: LoadedModel, precision: str) -> EngineParts:
    """musicgen-melody: transformers' own generation (`tunesmith.engine.melody`), one request
    at a time on the engine's compute thread."""
    from tunesmith.engine.audio.codec import AudioDecoder
    from tunesmith.engine.melody import MelodyGenerator
    from tunesmith.engine.scheduler import BatchScheduler

    if precision not in ("auto", "fp32"):
        raise ConfigError(f"TUNESMITH_PRECISION: {model} (musicgen-melody) runs in fp32 only")
    melody = MelodyGenerator(loaded)
    audio = AudioDecoder(loaded.model.audio_encoder)
    scheduler = BatchScheduler(_NoSteps(), 1, 0.0)  # its compute thread, for `call`
    log.info("engine ready: %s (musicgen-melody, transformers) on %s", model, loaded.device)
    return EngineParts(loaded, audio, scheduler, melody=melody)


class _NoSteps:
    """The step decoder of an engine whose generation runs outside the batch (melody)."""

    def step(self, jobs: list[object]) -> None:
        raise RuntimeError("this engine does not step jobs")
