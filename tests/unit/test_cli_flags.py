"""CLI flags mirror the settings: every TUNESMITH_* variable has a `serve` flag that wins."""

from __future__ import annotations

import pytest

from tunesmith.cli import SERVE_SETTINGS, _settings, build_parser
from tunesmith.config import Settings


def test_every_setting_has_a_serve_flag() -> None:
    assert set(SERVE_SETTINGS) == set(Settings.model_fields)


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNESMITH_PORT", "9000")
    monkeypatch.setenv("TUNESMITH_STORAGE", "local")
    args = build_parser().parse_args(
        ["serve", "--port", "9100", "--storage", "s3", "--s3-bucket", "b", "--max-queue", "3"]
    )
    settings = _settings(args, SERVE_SETTINGS)
    assert (settings.port, settings.storage, settings.s3_bucket) == (9100, "s3", "b")
    assert settings.max_queue == 3
