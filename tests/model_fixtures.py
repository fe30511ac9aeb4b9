"""Fixtures for a tiny random MusicGen saved with `save_pretrained` and loaded by path."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tunesmith.engine import MusicGenEngine
from tunesmith.testing.random_melody import save_random_musicgen_melody
from tunesmith.testing.random_model import save_random_musicgen


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random MusicGen checkpoint directory (config, weights, processor)."""
    return save_random_musicgen(tmp_path_factory.mktemp("tiny-musicgen"), preset="tiny")


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir: Path) -> MusicGenEngine:
    """The tiny model loaded through the same path as facebook/musicgen-small, on the CPU."""
    engine = MusicGenEngine(str(tiny_model_dir), device="cpu")
    engine.setup()
    return engine


@pytest.fixture(scope="session")
def tiny_melody_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random musicgen-melody checkpoint directory."""
    return save_random_musicgen_melody(tmp_path_factory.mktemp("tiny-melody"), preset="tiny")


@pytest.fixture(scope="session")
def tiny_melody_engine(tiny_melody_dir: Path) -> MusicGenEngine:
    """The tiny melody model, loaded as facebook/musicgen-melody would be."""
    engine = MusicGenEngine(str(tiny_melody_dir), device="cpu")
    engine.setup()
    return engine


class GatedEngine(MusicGenEngine):
    """The real engine whose loading waits for the test to open the gate."""

    def __init__(self, model: str) -> None:
        super().__init__(model, device="cpu")
        self.gate = threading.Event()

    def setup(self) -> None:
        assert self.gate.wait(60)
        super().setup()
