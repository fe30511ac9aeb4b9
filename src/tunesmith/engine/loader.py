"""Loading a MusicGen checkpoint (HF hub id or local directory) and choosing its device.

Every checkpoint loads here, through its family's ``load`` (`tunesmith.engine.registry`), so
the default hub model, a downloaded copy and the tiny test model all go through the same path.
`tunesmith.engine.checkpoint` finds (or downloads) the files first, so loading reads local
files only. Loader failures
become `ModelUnavailable` with a message that names the model and says how to fix it.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunesmith.engine.checkpoint import checkpoint_dir, copy_checkpoint, offline_fix
from tunesmith.engine.registry import family_of, read_config
from tunesmith.errors import ConfigError, ModelUnavailable

if TYPE_CHECKING:
    import torch

__all__ = ["LoadedModel", "load_model", "resolve_device", "save_model"]

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A MusicGen model with its processor, on its device, in eval mode."""

    name: str
    model: Any  # transformers MusicgenForConditionalGeneration
    processor: Any  # transformers MusicgenProcessor
    device: torch.device
    directory: Path | None = None  # the checkpoint's files (a hub model's cached snapshot)
    family: str = "tunesmith.engine.musicgen"  # the package that runs it (`engine.registry`)

    @property
    def sample_rate(self) -> int:
        return int(self.model.config.audio_encoder.sampling_rate)

    @property
    def frame_rate(self) -> int:
        return int(self.model.config.audio_encoder.frame_rate)

    @property
    def num_codebooks(self) -> int:
        return int(self.model.decoder.num_codebooks)

    @property
    def melody(self) -> bool:
        """Whether this is a musicgen-melody model (conditioned on a chroma prefix)."""
        return str(getattr(self.model.config, "model_type", "")) == "musicgen_melody"

    @property
    def audio_channels(self) -> int:
        """Output channels: stereo MusicGen interleaves left/right codebooks in the decoder
        and decodes each half with a mono EnCodec."""
        return int(getattr(self.model.decoder.config, "audio_channels", 1))


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when present, else CPU; ``cuda`` without a GPU is a `ConfigError`."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("TUNESMITH_DEVICE: cuda was asked for but no CUDA device is available")
    return torch.device(device)


def load_model(name: str, device: str = "auto") -> LoadedModel:
    """Load model and processor from a hub id or a local directory made by `save_pretrained`."""
    target = resolve_device(device)
    directory = checkpoint_dir(name)
    source = str(directory)
    try:
        family = family_of(name, read_config(directory))
        model, processor = importlib.import_module(family).load(source, target)
    except (OSError, ValueError) as exc:
        detail = " ".join(str(exc).split())
        raise ModelUnavailable(
            f"could not load model {name!r} from {source}: {detail} " + offline_fix(name)
        ) from None
    log.info("loaded %s on %s", name, target)
    return LoadedModel(name, model, processor, target, directory, family)


def save_model(name: str, output: Path) -> Path:
    """Copy a model (hub id or directory) to `output` so an offline machine can load it."""
    directory = checkpoint_dir(name)
    family_of(name, read_config(directory))  # only checkpoints tunesmith serves
    copy_checkpoint(directory, output)
    return output
