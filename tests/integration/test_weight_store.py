"""Loading a quantized decoder tensor by tensor, and keeping the converted weights on disk."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from tunesmith.engine import GenerationParams, MusicGenEngine, kernels
from tunesmith.engine.kernels.matvec import pack_int8
from tunesmith.engine.loader import load_model
from tunesmith.engine.musicgen.model.decoder import FastDecoder
from tunesmith.engine.musicgen.model.store import WeightStore
from tunesmith.engine.process import drop_file_pages
from tunesmith.testing.random_model import save_random_musicgen

pytestmark = pytest.mark.usefixtures("compiled_kernels")


@pytest.fixture
def store_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "weights"
    monkeypatch.setenv("TUNESMITH_WEIGHT_CACHE", str(directory))
    return directory


def _buffers(decoder: FastDecoder) -> dict[str, torch.Tensor]:
    named = dict(decoder._stack.named_buffers())
    named["embeddings"] = decoder.embeddings
    for index, pair in enumerate(decoder.cross_kv):
        for part, module in zip("kv", pair, strict=True):
            for name, tensor in module.named_buffers():  # type: ignore[attr-defined]
                named[f"cross_{part}.{index}.{name}"] = tensor
    return named


def test_the_layer_by_layer_loader_packs_what_the_whole_model_packs(tiny_model_dir: Path) -> None:
    """Each int8 weight equals `pack_int8` of the checkpoint's float32 weight (q/k/v and the
    heads fused), bit for bit, though every layer's float pages were dropped once converted."""
    whole = load_model(str(tiny_model_dir), "cpu")  # a second copy, never converted
    decoder = FastDecoder(load_model(str(tiny_model_dir), "cpu").model, "int8", whole.device)
    layers = whole.model.decoder.model.decoder.layers
    for layer, converted in zip(layers, decoder.layers, strict=True):
        attention = layer.self_attn
        fused = torch.cat(
            [attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight]
        )
        expected = {
            "qkv": fused,
            "out": attention.out_proj.weight,
            "fc1": layer.fc1.weight,
            "fc2": layer.fc2.weight,
        }
        for name, weight in expected.items():
            packed, scale = pack_int8(weight)
            assert torch.equal(getattr(converted, name).weight, packed), name
            assert torch.equal(getattr(converted, name).scale, scale), name
    heads = torch.cat([head.weight for head in whole.model.decoder.lm_heads])
    assert torch.equal(decoder.lm_heads.weight, pack_int8(heads)[0])


def test_a_second_start_maps_the_stored_weights_and_generates_the_same_audio(
    tiny_model_dir: Path, store_dir: Path
) -> None:
    params = GenerationParams("lofi beat", 1.0, seed=11)
    runs = []
    for _ in range(2):
        engine = MusicGenEngine(str(tiny_model_dir), "cpu", precision="int8")
        engine.setup()
        runs.append((engine.decoder, engine.generate(params).samples))
        engine.close()
    files = list(store_dir.glob("*.safetensors"))
    assert len(files) == 1 and files[0].stat().st_mode & 0o644 == 0o644
    (first, first_audio), (second, second_audio) = runs
    assert not first._store.hit and second._store.hit  # type: ignore[union-attr]
    stored, converted = _buffers(second), _buffers(first)
    assert stored.keys() == converted.keys()
    assert all(torch.equal(stored[name], converted[name]) for name in stored)
    assert (first_audio == second_audio).all()


def test_the_store_is_keyed_by_precision_layout_and_weights(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    def path(
        directory: Path, precision: str = "int8", layout: dict[str, int] | None = None
    ) -> Path | None:
        return WeightStore.for_checkpoint(directory, precision, layout or kernels.LAYOUT).path

    keys = {
        path(tiny_model_dir),
        path(tiny_model_dir, "int4"),
        path(tiny_model_dir, layout={**kernels.LAYOUT, "TILE": 8}),
    }
    assert len(keys) == 3 and None not in keys
    assert path(tiny_model_dir) == path(tiny_model_dir)
    # the same directory holding other weights (a model saved over it) is another key
    retrained = save_random_musicgen(tmp_path / tiny_model_dir.name, preset="tiny", seed=1)
    assert path(retrained) != path(tiny_model_dir)
    # a checkpoint without safetensors files keeps nothing
    assert path(tmp_path / "empty") is None


def test_a_damaged_store_file_is_converted_again(
    tiny_model_dir: Path, store_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = WeightStore.for_checkpoint(tiny_model_dir, "int8", kernels.LAYOUT).path
    assert path is not None
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with caplog.at_level(logging.WARNING):
        engine = MusicGenEngine(str(tiny_model_dir), "cpu", precision="int8")
        engine.setup()
    assert "unreadable" in caplog.text
    assert engine.generate(GenerationParams("lofi beat", 0.5, seed=1)).samples.shape[0] == 16000
    engine.close()
    assert WeightStore.for_checkpoint(tiny_model_dir, "int8", kernels.LAYOUT).hit  # rewritten


def test_an_unwritable_store_costs_only_the_conversion(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    monkeypatch.setenv("TUNESMITH_WEIGHT_CACHE", str(blocked / "weights"))
    engine = MusicGenEngine(str(tiny_model_dir), "cpu", precision="int8")
    engine.setup()
    assert engine.generate(GenerationParams("lofi beat", 0.5, seed=1)).samples.shape[0] == 16000
    engine.close()


def test_dropped_pages_read_back_the_same_values(tiny_model_dir: Path) -> None:
    loaded = load_model(str(tiny_model_dir), "cpu")
    weight = loaded.model.decoder.model.decoder.layers[0].fc1.weight
    before = weight.detach().clone()
    drop_file_pages([weight])  # a view of the mapped checkpoint
    assert torch.equal(weight, before)
    anonymous = torch.randn(4096, 64)
    kept = anonymous.clone()
    drop_file_pages([anonymous])  # not a file's page: untouched
    assert torch.equal(anonymous, kept)
