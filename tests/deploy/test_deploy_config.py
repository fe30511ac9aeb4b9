"""The deployment's context: values as `-c` strings or cdk.json JSON, checked, and what each
variant implies (payload limits, timeouts, devices)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from cdk_synth import CDK_CONTEXT, DEPLOY
from tunesmith.aws.deployment import LAMBDA_EVENT_BODY_BYTES
from tunesmith_deploy.config import (
    CPU_TORCH_INDEX,
    GPU_TORCH_INDEX,
    SECONDS_PER_AUDIO_SECOND,
    DeployConfig,
    longest_track,
)


def config(**context: Any) -> DeployConfig:
    return DeployConfig.from_context(context.get)


def test_the_defaults_are_the_designs() -> None:
    default = config()
    assert (default.variant, default.url_mode, default.api_key) == ("serverless", "public", True)
    assert (default.serverless_memory, default.payload_limit) == (6144, 4_000_000)
    assert default.sagemaker_endpoint_name == "tunesmith-serverless"
    assert default.torch_wheels == CPU_TORCH_INDEX and not default.gpu
    assert config(**CDK_CONTEXT) == default  # cdk.json states the same defaults


def test_command_line_strings_are_coerced() -> None:
    chosen = config(variant="realtime", api_key="false", expire_days="7", throttle_rate="2.5")
    assert (chosen.api_key, chosen.expire_days, chosen.throttle_rate) == (False, 7, 2.5)
    assert chosen.gpu and chosen.torch_wheels == GPU_TORCH_INDEX
    assert config(variant="realtime", instance_type="ml.c5.2xlarge").gpu is False


@pytest.mark.parametrize(
    ("api_timeout", "invoke", "function"),
    [(29, 27, 37), (45, 43, 53), (120, 65, 75)],
)
def test_sync_timeouts_answer_before_the_gateway_gives_up(
    api_timeout: int, invoke: int, function: int
) -> None:
    chosen = config(api_timeout=str(api_timeout))
    assert (chosen.invoke_timeout, chosen.function_timeout) == (invoke, function)


def test_async_and_lambda_timeouts() -> None:
    assert (config(variant="async").invoke_timeout, config(variant="async").function_timeout) == (
        3600, 30,
    )  # fmt: skip
    assert config(variant="lambda").function_timeout == 900
    assert config(variant="async").payload_limit == 1024**3


@pytest.mark.parametrize(
    ("context", "time_limit", "speed", "duration"),
    [
        ({}, 27, "cpu int8", 20),  # serverless: API Gateway's 29 s less 2 to store the track
        ({"precision": "fp32"}, 27, "cpu fp32", 6),
        ({"api_timeout": "62"}, 60, "cpu int8", 38),  # SageMaker's 60 s caps a raised wait
        ({"variant": "realtime"}, 27, "gpu", 27),
        ({"variant": "realtime", "instance_type": "ml.c5.xlarge"}, 27, "cpu int8", 20),
        ({"variant": "lambda"}, 27, "cpu int8", 20),
        ({"variant": "lambda", "api_timeout": "300", "precision": "fp32"}, 298, "cpu fp32", 57),
        ({"variant": "async"}, 3600, "gpu", 300),  # the design's default for long tracks
        ({"variant": "async", "async_timeout": "60"}, 60, "gpu", 48),
        ({"max_duration": "12"}, 27, "cpu int8", 12),  # asked for: taken as given
    ],
)
def test_each_variant_takes_the_tracks_it_can_make_within_its_time_limit(
    context: dict[str, str], time_limit: int, speed: str, duration: float
) -> None:
    chosen = config(**context)
    assert (chosen.time_limit, chosen.speed) == (time_limit, SECONDS_PER_AUDIO_SECOND[speed])
    assert chosen.duration_limit == duration


def test_past_one_window_each_stride_also_re_reads_the_overlap() -> None:
    assert longest_track(30, 1.0) == 30
    assert longest_track(60, 1.0) == 48  # 30 s, then 18 s new of the next 30 s window
    assert longest_track(0.5, 3.9) == 1  # never below a second
    assert longest_track(10**6, 0.01) == 3600


def test_uploads_are_capped_to_what_reaches_the_model_tier() -> None:
    # a form travels base64 in the function's 6 MB event, then to SageMaker (4 MB serverless)
    assert config().upload_limit == 4_000_000 - 64 * 1024
    for variant in ("realtime", "async", "lambda"):
        assert config(variant=variant).upload_limit == LAMBDA_EVENT_BODY_BYTES - 64 * 1024
    assert 4_500_000 < LAMBDA_EVENT_BODY_BYTES * 4 / 3 + 32 * 1024 <= 6 * 1024 * 1024


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("variant", "gpu", "variant='gpu': must be one of serverless, realtime, async, lambda"),
        ("api_key", "maybe", "api_key='maybe': must be true or false"),
        ("expire_days", "soon", "expire_days='soon': must be a number"),
        ("expire_days", "1.5", "expire_days='1.5': must be a whole number"),
        ("serverless_memory", "5000", "serverless_memory=5000"),
        ("max_duration", "3601", "max_duration=3601.0"),
        ("max_duration", "0.5", "max_duration=0.5"),
        ("prefix", "music-inputs/tracks/", "prefix='music-inputs/tracks/'"),
        ("prefix", "../up/", "prefix='../up/'"),
        ("endpoint_name", "no_underscores", "endpoint_name='no_underscores'"),
        ("api_timeout", "0", "api_timeout=0"),
        ("min_instances", "-1", "min_instances=-1"),
        ("max_instances", "0", "max_instances=0: must be 1 to 100"),
        ("max_instances", "101", "max_instances=101"),
        ("invocations_target", "0", "invocations_target=0.0"),
        ("backlog_target", "-2", "backlog_target=-2.0"),
        ("scale_in_cooldown", "1.5", "scale_in_cooldown='1.5': must be a whole number"),
        ("scale_out_cooldown", "-1", "scale_out_cooldown=-1"),
    ],
)
def test_bad_values_name_the_key(key: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match="context " + message.replace("(", r"\(")):
        config(**{key: value})


def test_scaling_bounds_hold_the_variants_floor_and_the_instances_it_starts_with() -> None:
    assert (config(variant="async").scaling_min, config(variant="realtime").scaling_min) == (0, 1)
    assert config(variant="realtime", min_instances="3", max_instances="3").scaling_min == 3
    assert config(variant="async", min_instances="2", max_instances="4").scaling_min == 2
    assert config().scales is False and config(variant="lambda").scales is False
    with pytest.raises(ValueError, match=r"context max_instances=2: must be 3 to 100"):
        config(min_instances="3")  # the maximum below the minimum names the maximum
    with pytest.raises(ValueError, match=r"context max_instances=2: must be 4 to 100"):
        config(variant="async", instance_count="4")  # it starts above its maximum


def test_the_app_stops_on_a_bad_value_with_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "app.py"],
        cwd=DEPLOY,
        env={"CDK_CONTEXT_JSON": '{"variant": "gpu"}', "PATH": "/usr/bin:/bin",
             "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"},
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert "tunesmith deploy: context variant='gpu'" in done.stderr
    assert "Traceback" not in done.stderr
