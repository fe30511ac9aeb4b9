"""The engine on a tiny random MusicGen loaded from a `save_pretrained` directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tunesmith.engine import GenerationParams, MusicGenEngine, load_model
from tunesmith.errors import ConfigError, ModelNotReady, ModelUnavailable


@pytest.mark.parametrize("duration", [1.0, 1.37, 2.5])
def test_duration_and_sample_rate_are_exact(tiny_engine: MusicGenEngine, duration: float) -> None:
    track = tiny_engine.generate(GenerationParams("calm piano", duration, seed=1))
    assert track.sample_rate == 32000
    assert track.samples.shape == (round(duration * 32000), 1)
    assert track.samples.dtype == np.float32
    assert np.isfinite(track.samples).all()


def test_same_seed_same_audio_different_seed_different_audio(tiny_engine: MusicGenEngine) -> None:
    first = tiny_engine.generate(GenerationParams("lofi hip hop beat", 1.5, seed=42))
    again = tiny_engine.generate(GenerationParams("lofi hip hop beat", 1.5, seed=42))
    other = tiny_engine.generate(GenerationParams("lofi hip hop beat", 1.5, seed=43))
    np.testing.assert_array_equal(first.samples, again.samples)
    assert not np.array_equal(first.samples, other.samples)
    assert np.max(np.abs(first.samples - other.samples)) > 1e-4


def test_prompt_and_sampling_parameters_change_the_audio(tiny_engine: MusicGenEngine) -> None:
    base = GenerationParams("calm piano melody", 1.0, seed=5)
    reference = tiny_engine.generate(base).samples
    for changed in (
        GenerationParams("epic orchestral soundtrack", 1.0, seed=5),
        GenerationParams("calm piano melody", 1.0, seed=5, temperature=0.3),
        GenerationParams("calm piano melody", 1.0, seed=5, guidance_scale=1.0),
    ):
        assert not np.array_equal(tiny_engine.generate(changed).samples, reference), changed


def test_progress_counts_every_decoder_step(tiny_engine: MusicGenEngine) -> None:
    seen: list[tuple[int, int]] = []
    tiny_engine.generate(
        GenerationParams("jazz trio", 1.0, seed=3), lambda d, t: seen.append((d, t))
    )
    steps = tiny_engine.steps_for(1.0)
    assert steps == 50 + 3  # 50 frames/s plus the 4-codebook delay pattern
    assert seen[-1] == (steps, steps)
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[0] == 1
    assert len(set(done)) == steps


def test_engine_refuses_work_before_setup(tiny_model_dir: Path) -> None:
    engine = MusicGenEngine(str(tiny_model_dir), device="cpu")
    assert not engine.ready
    with pytest.raises(ModelNotReady):
        engine.generate(GenerationParams("a", 1.0, seed=1))


def test_offline_hub_model_names_the_model_and_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import huggingface_hub.constants

    # as on a machine started with HF_HUB_OFFLINE=1 (the constant is read at import)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(ModelUnavailable) as caught:
        load_model("facebook/musicgen-small", device="cpu")
    assert "facebook/musicgen-small" in caught.value.message
    assert "TUNESMITH_MODEL" in caught.value.message


def test_missing_directory_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable) as caught:
        load_model(str(tmp_path / "nowhere"), device="cpu")
    assert "nowhere" in caught.value.message and "config.json" in caught.value.message


def test_a_model_that_is_not_musicgen_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelUnavailable, match="bert"):
        load_model(str(tmp_path), device="cpu")


def test_cuda_without_a_gpu_is_a_config_error(tiny_model_dir: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="TUNESMITH_DEVICE"):
        load_model(str(tiny_model_dir), device="cuda")
