"""Building a musicgen-melody engine at load."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from tunesmith.engine.parts import EngineParts
from tunesmith.errors import ConfigError

if TYPE_CHECKING:
    from tunesmith.engine.loader import LoadedModel

__all__ = ["assemble"]

log = logging.getLogger(__name__)


def assemble(
    model: str,
    loaded: LoadedModel,
    precision: str,
    step: str,
    max_batch: int,
    batch_window: float,
) -> EngineParts:
    """musicgen-melody: transformers' own generation (`tunesmith.engine.melody`), one request
    at a time on the engine's compute thread."""
    from tunesmith.engine.audio.codec import AudioDecoder
    from tunesmith.engine.melody.generator import MelodyGenerator
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
