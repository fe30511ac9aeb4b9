"""MusicGen: loading, generation and audio encoding.

engine.py     the facade: `MusicGenEngine` (setup / generate / close)
parts.py      what `setup` assembles from the checkpoint and the settings
params.py     what a generation takes and gives
windows.py    tracks longer than one window, and continuations
scheduler.py  batching against a small step protocol, on the one compute thread
melody.py     musicgen-melody: chroma features and transformers' generation
process.py    threads that end with their work; memory given back after loading
kernels/      the compiled kernels, their build, and the torch references
model/        the decoder: weight conversion, projections, layers, prompts, sampling
cuda/         the static batch whose step is one CUDA graph replay
audio/        EnCodec decoding and file encoding
"""

from tunesmith.engine.audio import CONTENT_TYPES, encode_audio, encoded_rate
from tunesmith.engine.engine import (
    GenerationParams,
    MusicGenEngine,
    ProgressCallback,
    Track,
    engine_for,
)
from tunesmith.engine.loader import LoadedModel, load_model, save_model

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
