"""TUNESMITH_MODEL_MEMORY's sizes, and a model's memory estimate from its weight files."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors import safe_open

from tunesmith.config import load_settings, parse_bytes
from tunesmith.errors import ConfigError
from tunesmith.pool import weight_bytes


@pytest.mark.parametrize(
    ("given", "size"),
    [
        ("6GB", 6 * 1000**3),
        ("512MB", 512 * 1000**2),
        ("512 mb", 512 * 1000**2),
        ("1.5G", 1_500_000_000),
        ("2GiB", 2 * 1024**3),
        ("64KiB", 64 * 1024),
        ("1000", 1000),
        (4096, 4096),
    ],
)
def test_sizes_read_as_bytes(given: str | int, size: int) -> None:
    assert parse_bytes(given) == size
    assert load_settings(model_memory=given).model_memory == size


@pytest.mark.parametrize("given", ["lots", "-1", "0", "6XB", "GB", "1e9"])
def test_a_bad_size_stops_the_start_naming_the_variable(given: str) -> None:
    with pytest.raises(ConfigError, match="TUNESMITH_MODEL_MEMORY"):
        load_settings(model_memory=given)


def test_unset_or_empty_is_no_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNESMITH_MODEL_MEMORY", "")
    assert load_settings().model_memory is None


def test_the_estimate_counts_each_parameter_at_its_precision(tiny_model_dir: Path) -> None:
    decoder = other = 0
    with safe_open(str(tiny_model_dir / "model.safetensors"), "np") as weights:
        for name in weights.keys():  # noqa: SIM118 - safe_open is not a mapping
            count = weights.get_tensor(name).size
            if name.startswith("decoder."):
                decoder += count
            else:
                other += count
    assert decoder > 0 and other > 0
    assert weight_bytes(tiny_model_dir, "fp32") == 4 * (decoder + other)
    assert weight_bytes(tiny_model_dir, "auto") == 4 * (decoder + other)
    assert weight_bytes(tiny_model_dir, "fp16") == 2 * decoder + 4 * other
    assert weight_bytes(tiny_model_dir, "int8") == decoder + 4 * other
    assert weight_bytes(tiny_model_dir, "int4") == decoder // 2 + 4 * other


def test_weights_saved_without_safetensors_count_as_their_files(tmp_path: Path) -> None:
    (tmp_path / "pytorch_model.bin").write_bytes(b"\0" * 1234)
    assert weight_bytes(tmp_path, "int8") == 1234
