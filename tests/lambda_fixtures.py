"""The Lambda handler's test stack, as fixtures (``pytest_plugins = ("lambda_fixtures",)``): a
real ``tunesmith endpoint`` process (tiny MusicGen), the SageMaker stand-in in front of it, and
the environment the CDK app gives the function, pointed at them and at SeaweedFS S3.

    endpoint    module    the container process (stricter limits than the function's), with
                          credentials for SeaweedFS S3, as its execution role gives it on AWS
    standin     module    the SageMaker runtime stand-in in front of it
    sagemaker   function  the stand-in with a clean record and default behaviour
    lambda_env  function  the function's environment (monkeypatched), a fresh handler each test
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from endpoint_process import EndpointProcess
from lambda_stack import CONTAINER_MAX_DURATION, CONTAINER_MAX_RESPONSE, ENDPOINT
from live_server import LiveServer
from s3server import SeaweedS3
from sagemaker_standin import SageMakerStandIn
from tunesmith.aws import lambda_handler

__all__ = ["endpoint", "lambda_env", "sagemaker", "standin"]


@pytest.fixture(scope="module")
def endpoint(tiny_model_dir: Path, s3_server: SeaweedS3) -> Iterator[EndpointProcess]:
    env = {
        "TUNESMITH_MAX_DURATION": str(CONTAINER_MAX_DURATION),
        "TUNESMITH_MAX_RESPONSE_BYTES": str(CONTAINER_MAX_RESPONSE),
        **s3_server.env(),  # an asynchronous request's record is stored by the container
    }
    with EndpointProcess(tiny_model_dir, env=env) as running:
        yield running


@pytest.fixture(scope="module")
def standin(endpoint: EndpointProcess, s3_server: SeaweedS3) -> Iterator[SageMakerStandIn]:
    stand_in = SageMakerStandIn(endpoint.url, endpoint_name=ENDPOINT, s3_client=s3_server.client)
    with LiveServer(stand_in.app) as server:
        stand_in.url = server.base_url  # type: ignore[attr-defined]
        yield stand_in


@pytest.fixture
def sagemaker(standin: SageMakerStandIn) -> Iterator[SageMakerStandIn]:
    """The module's stand-in, with a clean record and default behaviour for each test."""
    standin.calls.clear()
    standin.faults.clear()
    standin.invocation_timeout = 60.0
    standin.output_path = standin.failure_path = None
    standin.resume()
    yield standin
    standin.resume()
    standin.wait_for_async()


@pytest.fixture
def lambda_env(
    s3_env: SeaweedS3, s3_bucket: str, sagemaker: SageMakerStandIn, monkeypatch: pytest.MonkeyPatch
) -> Iterator[pytest.MonkeyPatch]:
    """The environment the CDK app gives the function, pointed at the local stand-ins."""
    for name in [n for n in os.environ if n.startswith("TUNESMITH_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", sagemaker.url)  # type: ignore[attr-defined]
    monkeypatch.setenv("TUNESMITH_ENDPOINT_NAME", ENDPOINT)
    monkeypatch.setenv("TUNESMITH_S3_BUCKET", s3_bucket)
    monkeypatch.setenv("TUNESMITH_S3_PREFIX", "music-output/")
    monkeypatch.setenv("TUNESMITH_URL_MODE", "public")
    monkeypatch.setenv("TUNESMITH_MAX_DURATION", "30")
    lambda_handler.reset()
    yield monkeypatch
    lambda_handler.reset()
