"""Assembling an engine at load: the checkpoint, its decoder, the step that drives it, EnCodec
and the compute thread (`assemble`).

The checkpoint's family (`tunesmith.engine.registry`) builds the parts: its package's
``assemble``. Runs in the loading thread; `MusicGenEngine.setup` keeps what it returns.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunesmith.config import WINDOW_SECONDS
from tunesmith.engine.loader import LoadedModel, load_model

if TYPE_CHECKING:
    from tunesmith.engine.audio.codec import AudioDecoder
    from tunesmith.engine.melody.generator import MelodyGenerator
    from tunesmith.engine.musicgen.model import FastDecoder
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
    family = importlib.import_module(loaded.family)
    parts: EngineParts = family.assemble(model, loaded, precision, step, max_batch, batch_window)
    return parts


def window_frames(loaded: LoadedModel, max_delay: int) -> int:
    """Frames one window holds: 30 s, or fewer where the model has fewer positions."""
    positions = int(loaded.model.decoder.config.max_position_embeddings)
    limit = positions - 1 - max_delay  # position 0 is the start token
    return min(round(WINDOW_SECONDS * loaded.frame_rate), limit)
