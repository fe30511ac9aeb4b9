"""musicgen-melody on a tiny random checkpoint saved with `save_pretrained` and loaded back:
codes from `MelodyGenerator` against transformers' own `generate`, seeds, melodies, lengths."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tunesmith.engine.loader import LoadedModel
from tunesmith.engine.melody.chroma import MelodyFeatureConfig, chroma_features
from tunesmith.engine.melody.generator import MelodyGenerator
from tunesmith.engine.melody.loader import load as load_melody_model
from tunesmith.engine.musicgen.model.sampling import SamplingParams
from tunesmith.testing.random_melody import save_random_musicgen_melody

PROMPT = "calm piano melody for a rainy evening"
RATE = 32000


@pytest.fixture(scope="module")
def melody_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_musicgen_melody(tmp_path_factory.mktemp("tiny-melody"), preset="tiny")


@pytest.fixture(scope="module")
def generator(melody_dir: Path) -> MelodyGenerator:
    model, processor = load_melody_model(str(melody_dir), "cpu")
    return MelodyGenerator(LoadedModel("tiny-melody", model, processor, torch.device("cpu")))


def _chroma(generator: MelodyGenerator, freqs: list[float]) -> torch.Tensor:
    t = np.arange(RATE // 2) / RATE
    line = np.concatenate([0.5 * np.sin(2 * np.pi * f * t) for f in freqs])
    return chroma_features(line[:, None], RATE, generator.processor.feature_extractor)


def _audio(generator: MelodyGenerator, codes: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        audio: torch.Tensor = generator.model.audio_encoder.decode(
            codes[None, None], audio_scales=[None]
        ).audio_values
    return audio


def test_it_saves_what_the_hub_checkpoint_holds(melody_dir: Path, tmp_path: Path) -> None:
    saved = json.loads((melody_dir / "processor_config.json").read_text())
    assert saved["processor_class"] == "MusicgenMelodyProcessor"
    assert saved["feature_extractor"] == {
        "chunk_length": 30,
        "feature_extractor_type": "MusicgenMelodyFeatureExtractor",
        "feature_size": 12,
        "hop_length": 4096,
        "n_fft": 16384,
        "n_samples": 960000,
        "padding_side": "right",
        "padding_value": 0.0,
        "return_attention_mask": False,
        "sampling_rate": 32000,
        "stem_indices": [3, 2],
    }  # facebook/musicgen-melody's preprocessor_config.json, nested as transformers 5 writes
    config = json.loads((melody_dir / "config.json").read_text())
    assert (config["model_type"], config["chroma_length"]) == ("musicgen_melody", 235)
    assert (
        MelodyFeatureConfig.from_pretrained(melody_dir).to_dict() == MelodyFeatureConfig().to_dict()
    )
    again = save_random_musicgen_melody(tmp_path / "again")
    for name in sorted(p.name for p in melody_dir.iterdir()):
        assert filecmp.cmp(melody_dir / name, again / name, shallow=False), name


def test_codes_are_generates_own(generator: MelodyGenerator) -> None:
    """transformers' `generate`, seeded the same, decodes to the audio our codes decode to."""
    chroma = _chroma(generator, [440.0, 523.25])
    for sampling in (SamplingParams(), SamplingParams(greedy=True)):
        codes = generator.generate_codes(PROMPT, chroma, 30, sampling, seed=7)
        assert codes.shape == (4, 30) and codes.dtype == torch.long
        assert int(codes.min()) >= 0 and int(codes.max()) < 64  # the tiny codebooks
        inputs = generator.processor(text=[PROMPT], padding=True, return_tensors="pt")
        torch.manual_seed(7)
        audio = generator.model.generate(
            **inputs,
            input_features=chroma,
            max_new_tokens=30 + 3,
            do_sample=not sampling.greedy,
            guidance_scale=3.0,
            top_k=250,
        )
        assert audio.shape == (1, 1, 30 * 640)  # 32 kHz / 50 frames/s
        torch.testing.assert_close(_audio(generator, codes), audio, rtol=0, atol=1e-6)


def test_a_seed_gives_the_same_codes_and_leaves_the_global_generator_alone(
    generator: MelodyGenerator,
) -> None:
    chroma = _chroma(generator, [440.0])
    state = torch.get_rng_state()
    first = generator.generate_codes(PROMPT, chroma, 40, SamplingParams(), seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(
        generator.generate_codes(PROMPT, chroma, 40, SamplingParams(), seed=3), first
    )
    assert not torch.equal(generator.generate_codes(PROMPT, chroma, 40, SamplingParams(), 4), first)


def test_the_melody_steers_the_codes(generator: MelodyGenerator) -> None:
    greedy = SamplingParams(greedy=True)
    a = generator.generate_codes(PROMPT, _chroma(generator, [440.0, 329.63]), 40, greedy, 0)
    c = generator.generate_codes(PROMPT, _chroma(generator, [261.63, 392.0]), 40, greedy, 0)
    none = generator.generate_codes(PROMPT, None, 40, greedy, 0)
    assert none.shape == (4, 40)
    assert not torch.equal(a, c) and not torch.equal(a, none) and not torch.equal(c, none)


@pytest.mark.parametrize("frames", [1, 2])
def test_under_k_minus_1_frames_are_the_start_of_k_minus_1(
    generator: MelodyGenerator, frames: int
) -> None:
    """transformers drops the delay pattern under K - 1 frames: K - 1 are made, then cut. (A
    track is not in general the start of a longer one: its last frames see the pattern end.)"""
    chroma = _chroma(generator, [440.0])
    three = generator.generate_codes(PROMPT, chroma, 3, SamplingParams(), seed=5)
    short = generator.generate_codes(PROMPT, chroma, frames, SamplingParams(), seed=5)
    assert torch.equal(short, three[:, :frames])
    assert _audio(generator, short).shape == (1, 1, frames * 640)


def test_a_window_is_bounded_by_positions_and_the_melody_covered(
    generator: MelodyGenerator,
) -> None:
    assert generator.num_codebooks == 4
    # min(2048 - 235 chroma - 128 prompt - 4 delay, 30 s of melody at 50 frames/s)
    assert generator.max_frames == 1500
    for frames in (0, generator.max_frames + 1):
        with pytest.raises(ValueError, match="frames must be"):
            generator.generate_codes(PROMPT, None, frames, SamplingParams(), 0)
    with pytest.raises(ValueError, match="chroma must be"):
        generator.generate_codes(PROMPT, torch.zeros(1, 5, 11), 5, SamplingParams(), 0)
