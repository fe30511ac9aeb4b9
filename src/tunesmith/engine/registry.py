"""Which model families tunesmith serves, and the ids a server gives its models. Torch-free.

A family is one package under `tunesmith.engine` (`musicgen`, `melody`) and one line in
`FAMILIES`: the checkpoint's ``model_type`` (from its ``config.json``) picks it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

__all__ = ["FAMILIES", "model_id", "model_ids"]

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
