"""MusicGen: loading, generation and audio encoding.

base.py       the torch-free contract: the `Engine` protocol the other tiers depend on
params.py     what a generation takes and gives (torch-free)
registry.py   the families tunesmith serves, picked by the checkpoint's config; model ids
engine.py     the facade: `MusicGenEngine` (setup / generate / close), `engine_for`
loader.py     every checkpoint through its family's loader, on its device
parts.py      what `setup` assembles, through the checkpoint's family
scheduler.py  batching against a small step protocol, on the one compute thread
streaming.py  chunked audio while the codes are made
sections.py   sectioned tracks: where each part starts, its text per window
process.py    threads that end with their work; memory given back after loading
musicgen/     text MusicGen (mono, stereo): loader, parts, windows, the fast decoder (model/)
melody/       musicgen-melody: chroma, loader, the chroma prefix, parts, the oracle
kernels/      the compiled kernels, their build, and the torch references
cuda/         the static batch whose step is one CUDA graph replay
audio/        EnCodec decoding and file encoding

A new family is one package here with ``load`` and ``assemble``, and one line in
`registry.FAMILIES`.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tunesmith.engine.audio import CONTENT_TYPES, encode_audio, encoded_rate
    from tunesmith.engine.engine import (
        GenerationParams,
        MusicGenEngine,
        ProgressCallback,
        Track,
        engine_for,
    )
    from tunesmith.engine.loader import LoadedModel, load_model, save_model

# Loaded on first use, so the torch-free tiers (the Lambda, the API) can import
# `tunesmith.engine.registry` and `.base` without numpy or torch.
_HOMES = {
    "CONTENT_TYPES": "audio",
    "encode_audio": "audio",
    "encoded_rate": "audio",
    "GenerationParams": "engine",
    "MusicGenEngine": "engine",
    "ProgressCallback": "engine",
    "Track": "engine",
    "engine_for": "engine",
    "LoadedModel": "loader",
    "load_model": "loader",
    "save_model": "loader",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{home}"), name)


__all__ = [
    "CONTENT_TYPES",
    "GenerationParams",
    "LoadedModel",
    "MusicGenEngine",
    "ProgressCallback",
    "Track",
    "encode_audio",
    "encoded_rate",
    "engine_for",
    "load_model",
    "save_model",
]
