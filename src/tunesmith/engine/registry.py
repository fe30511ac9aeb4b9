"""Which model families tunesmith serves, and the ids a server gives its models. Torch-free.

A family is one package under `tunesmith.engine` (`musicgen`, `melody`) and one line in
`FAMILIES`: the checkpoint's ``model_type`` (from its ``config.json``) picks it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from tunesmith.errors import ModelUnavailable

__all__ = ["FAMILIES", "Capabilities", "capabilities", "family_of", "model_id", "model_ids"]

# config.json model_type -> the family package that runs it
FAMILIES: Final[dict[str, str]] = {
    "musicgen": "tunesmith.engine.musicgen",
    "musicgen_melody": "tunesmith.engine.melody",
}

_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def model_id(checkpoint: str) -> str:
    """The id a server lists a checkpoint under: its last path part (``facebook/musicgen-small``
    -> ``musicgen-small``; ``/models/my-melody/`` -> ``my-melody``)."""
    tail = checkpoint.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]
    return _ID_CHARS.sub("-", tail).strip("-") or "model"


def model_ids(checkpoints: Iterable[str]) -> dict[str, str]:
    """``{id: checkpoint}`` in order; two checkpoints with one id are a `ValueError`."""
    ids: dict[str, str] = {}
    for checkpoint in checkpoints:
        key = model_id(checkpoint)
        if key in ids:
            raise ValueError(
                f"{ids[key]!r} and {checkpoint!r} would both be served as {key!r}: "
                "rename one directory"
            )
        ids[key] = checkpoint
    return ids


@dataclass(frozen=True)
class Capabilities:
    """What a checkpoint can do, known from its config before it loads (`GET /models`)."""

    family: str  # the package under tunesmith.engine that runs it
    text: bool  # conditioned on a text prompt (every family so far)
    melody: bool  # follows a melody's chroma (musicgen-melody)
    continuation: bool  # continues given audio
    stereo: bool
    sample_rate: int
    frame_rate: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_config(directory: Path) -> dict[str, Any]:
    """A checkpoint directory's ``config.json`` (`ModelUnavailable` if missing or unreadable)."""
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(f"{directory} has no readable config.json: {exc}") from None
    if not isinstance(config, dict):
        raise ModelUnavailable(f"{directory}/config.json is not a JSON object")
    return config


def family_of(name: str, config: dict[str, Any]) -> str:
    """The family package for a checkpoint's config; any other model type is refused."""
    model_type = str(config.get("model_type"))
    if model_type not in FAMILIES:
        raise ModelUnavailable(
            f"model {name!r} is a {model_type!r} model; tunesmith serves MusicGen "
            f"text-to-music checkpoints (model_type {' or '.join(map(repr, FAMILIES))}, e.g. "
            "facebook/musicgen-small)"
        )
    return FAMILIES[model_type]


def capabilities(name: str, directory: Path) -> Capabilities:
    """What checkpoint `name` (its files in `directory`) can do, from its config alone."""
    config = read_config(directory)
    family = family_of(name, config)
    decoder = config.get("decoder") or {}
    codec = config.get("audio_encoder") or {}
    return Capabilities(
        family=family.rsplit(".", 1)[-1],
        text=True,
        melody=config.get("model_type") == "musicgen_melody",
        continuation=True,
        stereo=int(decoder.get("audio_channels", 1)) == 2,
        sample_rate=int(codec.get("sampling_rate", 32000)),
        frame_rate=int(codec.get("frame_rate", 50)),
    )
