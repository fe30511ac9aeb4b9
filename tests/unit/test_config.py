"""Settings: environment names, CLI overrides, and start-time failures naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunesmith.config import DEFAULT_MODEL, load_settings
from tunesmith.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("TUNESMITH_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.model == DEFAULT_MODEL
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert (settings.storage, settings.s3_prefix, settings.url_mode) == (
        "local",
        "music-output/",
        "public",
    )
    assert settings.max_duration == 300
    assert settings.extend_stride == 18
    assert settings.api_key is None


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TUNESMITH_MODEL", str(tmp_path))
    monkeypatch.setenv("TUNESMITH_STORAGE", "s3")
    monkeypatch.setenv("TUNESMITH_S3_BUCKET", "tracks")
    monkeypatch.setenv("TUNESMITH_S3_PREFIX", "songs")
    monkeypatch.setenv("TUNESMITH_URL_MODE", "presigned")
    monkeypatch.setenv("TUNESMITH_PORT", "9000")
    monkeypatch.setenv("TUNESMITH_API_KEY", "sekrit")
    monkeypatch.setenv("TUNESMITH_MAX_DURATION", "12.5")
    settings = load_settings()
    assert settings.model == str(tmp_path)
    assert (settings.storage, settings.s3_bucket, settings.s3_prefix) == ("s3", "tracks", "songs/")
    assert settings.url_mode == "presigned"
    assert settings.port == 9000
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "sekrit"
    assert settings.max_duration == 12.5


def test_overrides_win_and_none_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNESMITH_PORT", "9000")
    assert load_settings(port=9100).port == 9100
    assert load_settings(port=None).port == 9000


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("TUNESMITH_PORT", "eighty", "TUNESMITH_PORT"),
        ("TUNESMITH_PORT", "70000", "TUNESMITH_PORT"),
        ("TUNESMITH_DEVICE", "tpu", "TUNESMITH_DEVICE"),
        ("TUNESMITH_PRECISION", "int2", "TUNESMITH_PRECISION"),
        ("TUNESMITH_STORAGE", "ftp", "TUNESMITH_STORAGE"),
        ("TUNESMITH_URL_MODE", "signed", "TUNESMITH_URL_MODE"),
        ("TUNESMITH_MAX_DURATION", "4000", "TUNESMITH_MAX_DURATION"),
        ("TUNESMITH_MAX_DURATION", "0", "TUNESMITH_MAX_DURATION"),
        ("TUNESMITH_S3_PREFIX", "../escape/", "TUNESMITH_S3_PREFIX"),
        ("TUNESMITH_S3_PREFIX", "/abs/", "TUNESMITH_S3_PREFIX"),
        ("TUNESMITH_S3_PREFIX", "with space/", "TUNESMITH_S3_PREFIX"),
        ("TUNESMITH_PUBLIC_BASE_URL", "example.com", "TUNESMITH_PUBLIC_BASE_URL"),
    ],
)
def test_invalid_setting_is_named(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert named in caught.value.message


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_the_integer_precisions_run_on_the_cpu_only(
    monkeypatch: pytest.MonkeyPatch, precision: str
) -> None:
    import torch

    from tunesmith.engine.musicgen.model import resolve_precision

    monkeypatch.setenv("TUNESMITH_PRECISION", precision)
    assert load_settings().precision == precision
    assert resolve_precision(precision, torch.device("cpu")) == precision
    with pytest.raises(ConfigError, match=f"TUNESMITH_PRECISION: {precision} runs on the CPU"):
        resolve_precision(precision, torch.device("cuda"))


def test_s3_storage_needs_a_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNESMITH_STORAGE", "s3")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "TUNESMITH_S3_BUCKET" in caught.value.message


def test_prefix_may_be_empty_or_nested(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNESMITH_S3_PREFIX", "")
    assert load_settings().s3_prefix == ""
    monkeypatch.setenv("TUNESMITH_S3_PREFIX", "tracks/2026")
    assert load_settings().s3_prefix == "tracks/2026/"


def test_empty_optional_values_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNESMITH_API_KEY", "")
    monkeypatch.setenv("TUNESMITH_PUBLIC_BASE_URL", "")
    settings = load_settings()
    assert settings.api_key is None and settings.public_base_url is None


def test_the_aws_tiers_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert (settings.endpoint_name, settings.invoke_mode) == (None, "sync")
    assert (settings.invoke_timeout, settings.max_response_bytes) == (65.0, 6 * 1024 * 1024)
    monkeypatch.setenv("TUNESMITH_ENDPOINT_NAME", "")
    assert load_settings().endpoint_name is None  # empty means unset, as for the bucket
    monkeypatch.setenv("TUNESMITH_ENDPOINT_NAME", "tunesmith-serverless")
    monkeypatch.setenv("TUNESMITH_INVOKE_MODE", "async")
    chosen = load_settings()
    assert (chosen.endpoint_name, chosen.invoke_mode) == ("tunesmith-serverless", "async")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TUNESMITH_ENDPOINT_NAME", "not_a_sagemaker_name"),
        ("TUNESMITH_ENDPOINT_NAME", "x" * 64),
        ("TUNESMITH_INVOKE_MODE", "later"),
        ("TUNESMITH_INVOKE_TIMEOUT", "0"),
        ("TUNESMITH_MAX_RESPONSE_BYTES", "100"),
    ],
)
def test_bad_aws_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()
