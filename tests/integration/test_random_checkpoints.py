"""The random checkpoints the tests, the benchmarks and the README's "try it" command use make
audio like a trained one's in the ways measurements see: centred on zero, at a level that is
not silence, and different for different codes (noise, not one fixed pattern)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tunesmith.engine import GenerationParams, MusicGenEngine
from tunesmith.testing.random_model import CODEC_RMS, save_random_musicgen


@pytest.fixture(scope="module")
def stereo_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MusicGenEngine]:
    path = save_random_musicgen(tmp_path_factory.mktemp("tiny-stereo"), preset="tiny-stereo")
    engine = MusicGenEngine(str(path), device="cpu")
    engine.setup()
    yield engine
    engine.close()


@pytest.fixture(params=["tiny", "tiny-stereo", "tiny-melody"])
def engine(request: pytest.FixtureRequest) -> MusicGenEngine:
    name = {"tiny": "tiny_engine", "tiny-stereo": "stereo_engine"}.get(
        request.param, "tiny_melody_engine"
    )
    found: MusicGenEngine = request.getfixturevalue(name)
    return found


@pytest.mark.parametrize(("prompt", "seed"), [("calm piano melody", 1), ("ambient drone", 7)])
def test_generated_audio_is_centred_and_not_silent(
    engine: MusicGenEngine, prompt: str, seed: int
) -> None:
    samples = engine.generate(GenerationParams(prompt, 2.0, seed=seed)).samples
    for channel in samples.T:
        mean = float(channel.mean())
        rms = float(np.sqrt(np.mean(np.square(channel - mean))))
        assert rms > CODEC_RMS / 4, f"nearly silent: RMS {rms:.3g}"
        assert abs(mean) < 0.1 * rms, f"a DC offset: mean {mean:.3g}, RMS {rms:.3g}"


def test_different_codes_give_unrelated_audio(tiny_engine: MusicGenEngine) -> None:
    first = tiny_engine.generate(GenerationParams("lofi hip hop beat", 2.0, seed=1)).samples[:, 0]
    other = tiny_engine.generate(GenerationParams("lofi hip hop beat", 2.0, seed=2)).samples[:, 0]
    assert abs(np.corrcoef(first, other)[0, 1]) < 0.5


def test_the_checkpoint_is_the_same_byte_for_byte(tmp_path: Path) -> None:
    first = save_random_musicgen(tmp_path / "first", preset="tiny")
    again = save_random_musicgen(tmp_path / "again", preset="tiny")
    weights = "model.safetensors"
    assert (first / weights).read_bytes() == (again / weights).read_bytes()
