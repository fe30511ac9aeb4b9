"""Checkpoints other than musicgen-small's shape: stereo output, and medium's layer and head
counts through the FastDecoder, against transformers (tiny random weights in each layout)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tunesmith.benchmark.reference import compare_scores, engine_scores, reference_scores
from tunesmith.engine import GenerationParams, MusicGenEngine
from tunesmith.engine.loader import LoadedModel, load_model
from tunesmith.engine.musicgen.model.decoder import FastDecoder
from tunesmith.testing.random_model import PRESETS, cached_random_musicgen, save_random_musicgen

PROMPT = "80s pop track with bassy drums and synth"
SHORT_PROMPT = "piano"  # fewer tokens than a head's size: cross-attention runs folded


@pytest.fixture(scope="module")
def stereo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_musicgen(tmp_path_factory.mktemp("tiny-stereo"), preset="tiny-stereo")


@pytest.fixture(scope="module")
def medium_shaped(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    path = save_random_musicgen(tmp_path_factory.mktemp("tiny-medium"), preset="tiny-medium")
    return load_model(str(path), device="cpu")


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_stereo_model_makes_two_different_channels(stereo_dir: Path, precision: str) -> None:
    engine = MusicGenEngine(str(stereo_dir), "cpu", precision=precision)
    engine.setup()
    params = GenerationParams("calm piano", 1.5, seed=3)
    try:
        assert engine.loaded.audio_channels == 2
        codes = engine.generate_codes(params)
        track = engine.generate(params)
        other = engine.generate(GenerationParams("lofi hip hop beat", 1.5, seed=4))
    finally:
        engine.close()
    assert codes.shape == (8, 75)  # left and right codebooks interleaved
    assert not torch.equal(codes[0::2], codes[1::2])
    assert track.samples.shape == (48000, 2)
    left, right = track.samples[:, 0], track.samples[:, 1]
    # a random EnCodec's output varies little with its codes: the yardstick is how much two
    # tracks differ; left and right differ by as much, not by a copy's rounding
    between_tracks = float(np.std(other.samples[:, 0] - left))
    assert between_tracks > 0
    assert float(np.std(left - right)) > 0.25 * between_tracks


def test_the_medium_preset_has_musicgen_mediums_shape() -> None:
    small, medium = PRESETS["small"], PRESETS["medium"]
    decoder = medium["decoder"]
    shape = (decoder["num_hidden_layers"], decoder["hidden_size"])
    assert shape == (48, 1536)
    assert (decoder["num_attention_heads"], decoder["ffn_dim"]) == (24, 6144)
    assert medium["text"] == small["text"] and medium["audio"] == small["audio"]  # t5-base
    tiny, tiny_medium = PRESETS["tiny"]["decoder"], PRESETS["tiny-medium"]["decoder"]
    small_decoder = small["decoder"]
    for name in ("num_hidden_layers", "hidden_size", "num_attention_heads"):  # medium's ratios
        assert tiny_medium[name] * small_decoder[name] == tiny[name] * decoder[name], name


@pytest.mark.parametrize("prompt", [PROMPT, SHORT_PROMPT])
def test_medium_shaped_decoder_matches_transformers_greedy_codes(
    medium_shaped: LoadedModel, prompt: str
) -> None:
    config = medium_shaped.model.decoder.config
    assert (config.num_hidden_layers, config.num_attention_heads) == (4, 6)  # not tiny's 2, 4
    frames = 60
    steps = frames + medium_shaped.num_codebooks - 1
    expected = reference_scores(medium_shaped.model, medium_shaped.processor, prompt, steps, 3.0)
    decoder = FastDecoder(medium_shaped.model, "fp32", medium_shaped.device)
    assert len(decoder.layers) == 4 and decoder.heads == 6
    if shutil.which("cc"):  # the compiled kernels are what run wherever a C compiler is
        assert decoder.kernels.path == "compiled"
        assert all(layer.compiled_attention for layer in decoder.layers)
        assert decoder.fold_cross
    tokens_in = medium_shaped.processor(text=[prompt], return_tensors="pt")["input_ids"].shape[1]
    assert (tokens_in < decoder.head_dim) == (prompt == SHORT_PROMPT)  # which one folds
    ours, tokens = engine_scores(decoder, medium_shaped.processor, prompt, frames, 3.0)
    result = compare_scores(expected, ours)
    assert result.steps == steps
    assert result.codes_equal, result
    assert result.max_abs_diff <= 1e-5 * max(1.0, result.scale), result
    assert len(torch.unique(tokens[0, 1 : frames + 1])) > 1  # the codes really vary


def test_medium_shaped_model_generates_at_int8(medium_shaped: LoadedModel) -> None:
    engine = MusicGenEngine(medium_shaped.name, "cpu", precision="int8")
    engine.setup()
    try:
        track = engine.generate(GenerationParams("ambient drone", 1.0, seed=1))
    finally:
        engine.close()
    assert track.samples.shape == (32000, 1) and np.abs(track.samples).max() > 0


def test_a_random_checkpoint_is_saved_once_into_the_cache(tmp_path: Path) -> None:
    path, saved_now = cached_random_musicgen("tiny-medium", tmp_path)
    assert saved_now and path.parent == tmp_path
    config = json.loads((path / "config.json").read_text())
    assert config["decoder"]["num_attention_heads"] == 6
    assert cached_random_musicgen("tiny-medium", tmp_path) == (path, False)  # reused
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no partial save left behind
    other, saved_now = cached_random_musicgen("tiny-medium", tmp_path, seed=1)
    assert saved_now and other != path  # other weights, another directory
