"""MusicGen: loading, generation and audio encoding."""

from tunesmith.engine.audio import CONTENT_TYPES, encode_audio
from tunesmith.engine.loader import LoadedModel, load_model, save_model
from tunesmith.engine.musicgen import (
    GenerationParams,
    MusicGenEngine,
    ProgressCallback,
    Track,
    engine_for,
)

__all__ = [
    "CONTENT_TYPES",
    "GenerationParams",
    "LoadedModel",
    "MusicGenEngine",
    "ProgressCallback",
    "Track",
    "encode_audio",
    "engine_for",
    "load_model",
    "save_model",
]
