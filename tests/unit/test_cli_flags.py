"""CLI flags mirror the settings: every TUNESMITH_* variable has a flag that wins.

`serve` has a flag for every setting but two groups that do not apply to it, each with the
command (or function) that reads them:

* the container's payload limit, a flag of `tunesmith endpoint` (serve answers JSON, not audio);
* the Lambda function's settings: it has no command line, only its environment.
"""

from __future__ import annotations

import pytest

from tunesmith.cli import ENDPOINT_SETTINGS, SERVE_SETTINGS, _settings, build_parser
from tunesmith.config import Settings

ENDPOINT_ONLY = {"max_response_bytes"}
LAMBDA_ONLY = {
    "endpoint_name",
    "endpoints",
    "invoke_mode",
    "invoke_timeout",
    "variant",
    "time_limit",
}


def test_every_setting_has_a_serve_flag_but_the_aws_tiers_own() -> None:
    assert set(SERVE_SETTINGS) == set(Settings.model_fields) - ENDPOINT_ONLY - LAMBDA_ONLY


def test_the_endpoint_has_flags_for_its_own_settings() -> None:
    assert ENDPOINT_ONLY <= set(ENDPOINT_SETTINGS) <= set(Settings.model_fields)
    assert not LAMBDA_ONLY & set(ENDPOINT_SETTINGS)


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNESMITH_PORT", "9000")
    monkeypatch.setenv("TUNESMITH_STORAGE", "local")
    args = build_parser().parse_args(
        ["serve", "--port", "9100", "--storage", "s3", "--s3-bucket", "b", "--max-queue", "3"]
    )
    settings = _settings(args, SERVE_SETTINGS)
    assert (settings.port, settings.storage, settings.s3_bucket) == (9100, "s3", "b")
    assert settings.max_queue == 3


def test_endpoint_flags_and_the_serve_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNESMITH_MAX_RESPONSE_BYTES", "5000000")
    args = build_parser().parse_args(
        ["endpoint", "serve", "--port", "8081", "--max-response-bytes", "4000000"]
    )
    settings = _settings(args, ENDPOINT_SETTINGS)
    assert (args.serve, args.port, settings.max_response_bytes) == ("serve", 8081, 4_000_000)
    assert build_parser().parse_args(["endpoint"]).serve is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["endpoint", "train"])  # only SageMaker's `serve` is taken
