"""Assembling an engine at load: the checkpoint, its decoder, the step that drives it, EnCodec
and the compute thread (`assemble`).

The checkpoint's family (`tunesmith.engine.registry`) builds the parts: its package's
``assemble``. Runs in the loading thread; `MusicGenEngine.setup` keeps what it returns.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from tunesmith.config import WINDOW_SECONDS
from tunesmith.engine.loader import LoadedModel, load_model

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import torch

    from tunesmith.engine.audio.codec import AudioDecoder
    from tunesmith.engine.musicgen.model import Conditioning, FastDecoder
    from tunesmith.engine.scheduler import BatchScheduler, StepDecoder

__all__ = ["Conditioner", "EngineParts", "WindowConditioning", "assemble", "window_frames"]

# one text's conditioning of the window that starts at a given frame of the track (a sectioned
# track picks each window's text: `tunesmith.engine.sections`)
WindowConditioning = Callable[[int], "Conditioning"]


class Conditioner(Protocol):
    """A family's conditioning of a track (on the compute thread): the text's cross-attention
    keys and values (`musicgen`), or the chroma-and-text prefix (`melody`)."""

    def track(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        melody: npt.NDArray[np.float32] | None,
        sample_rate: int,
        windowed: bool,
    ) -> WindowConditioning:
        """The conditioning of each window of a track for a tokenized prompt and a melody
        ``(frames, channels)`` at `sample_rate` (None: none); `windowed`: the track takes
        several windows."""
        ...


log = logging.getLogger(__name__)


@dataclass
class EngineParts:
    """What a loaded engine runs on."""

    loaded: LoadedModel
    audio: AudioDecoder
    scheduler: BatchScheduler
    decoder: FastDecoder
    stepper: StepDecoder  # what the scheduler steps: the decoder, or a static batch over it
    conditioner: Conditioner
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
