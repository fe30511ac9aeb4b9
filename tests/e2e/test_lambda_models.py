"""The Lambda handler routing by model: one SageMaker endpoint per model (``TUNESMITH_ENDPOINTS``,
as the CDK app sets it for ``-c model=A,B``), each a real ``tunesmith endpoint`` process behind
the SageMaker stand-in (the tiny text model and the tiny melody model), SeaweedFS S3 for the
tracks and the jobs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apigw_events import proxy_event
from endpoint_process import EndpointProcess
from lambda_stack import CONTAINER_MAX_DURATION, ENDPOINT, REQUEST, call, job_event, record, stored
from s3server import SeaweedS3
from sagemaker_standin import SageMakerStandIn
from tunesmith.aws.protocol import encode_form
from tunesmith.engine.registry import model_id

pytestmark = pytest.mark.s3
pytest_plugins = ("lambda_fixtures",)  # endpoint, standin, sagemaker, lambda_env

MELODY_ENDPOINT = "tunesmith-test-melody"


@pytest.fixture(scope="module")
def melody_endpoint(tiny_melody_dir: Path, s3_server: SeaweedS3) -> Iterator[EndpointProcess]:
    """The melody model's container, as the text model's (`lambda_fixtures.endpoint`)."""
    env = {"TUNESMITH_MAX_DURATION": str(CONTAINER_MAX_DURATION), **s3_server.env()}
    with EndpointProcess(tiny_melody_dir, env=env) as running:
        yield running


@pytest.fixture
def ids(tiny_model_dir: Path, tiny_melody_dir: Path) -> tuple[str, str]:
    """The text model's id and the melody model's, as their endpoints serve them."""
    return model_id(str(tiny_model_dir)), model_id(str(tiny_melody_dir))


@pytest.fixture
def routed(
    lambda_env: pytest.MonkeyPatch, sagemaker: SageMakerStandIn,
    melody_endpoint: EndpointProcess, ids: tuple[str, str],
) -> pytest.MonkeyPatch:  # fmt: skip
    """The function's environment with two models: the text model's endpoint the default."""
    sagemaker.add_endpoint(MELODY_ENDPOINT, melody_endpoint.url)
    text, melody = ids
    lambda_env.delenv("TUNESMITH_ENDPOINT_NAME")
    lambda_env.setenv("TUNESMITH_ENDPOINTS", json.dumps({text: ENDPOINT, melody: MELODY_ENDPOINT}))
    return lambda_env


def invoked(sagemaker: SageMakerStandIn) -> list[tuple[str, Any]]:
    """(endpoint, the JSON request it was sent) for each call SageMaker received."""
    return [
        (call["path"].split("/")[2], json.loads(call["body"] or b"null"))
        for call in sagemaker.calls
    ]


# -- sync: each request to its model's endpoint --------------------------------------------------


def test_each_request_goes_to_the_endpoint_of_the_model_it_names(
    routed: pytest.MonkeyPatch, s3_env: SeaweedS3, s3_bucket: str, sagemaker: SageMakerStandIn,
    ids: tuple[str, str], tiny_model_dir: Path, tiny_melody_dir: Path,
) -> None:  # fmt: skip
    text, melody = ids
    status, _, by_melody = call(proxy_event({**REQUEST, "model": melody}))
    assert status == 200, by_melody
    status, _, by_text = call(proxy_event({**REQUEST, "model": text}))
    assert status == 200, by_text

    assert [(e, sent["model"]) for e, sent in invoked(sagemaker)] == [
        (MELODY_ENDPOINT, melody), (ENDPOINT, text),
    ]  # fmt: skip
    # the answer and the record name the checkpoint that made the track, and the route taken
    assert by_melody["model"] == str(tiny_melody_dir)
    assert by_text["model"] == str(tiny_model_dir)
    for body, model, endpoint in ((by_melody, melody, MELODY_ENDPOINT), (by_text, text, ENDPOINT)):
        meta = record(s3_env, s3_bucket, body["id"])
        assert meta["model"] == body["model"] and meta["request"]["model"] == model
        assert meta["engine"]["endpoint"] == endpoint
    assert len(stored(s3_env, s3_bucket)) == 4


def test_a_request_naming_no_model_goes_to_the_default_and_its_record_names_it(
    routed: pytest.MonkeyPatch, s3_env: SeaweedS3, s3_bucket: str, sagemaker: SageMakerStandIn,
    ids: tuple[str, str], tiny_model_dir: Path,
) -> None:  # fmt: skip
    status, _, body = call(proxy_event(REQUEST))
    assert status == 200, body
    ((endpoint, sent),) = invoked(sagemaker)
    assert (endpoint, sent["model"]) == (ENDPOINT, ids[0])
    assert body["model"] == str(tiny_model_dir)
    assert record(s3_env, s3_bucket, body["id"])["request"]["model"] == ids[0]


def test_an_unknown_model_is_422_listing_the_routable_ones_json_and_form_alike(
    routed: pytest.MonkeyPatch, s3_env: SeaweedS3, s3_bucket: str, sagemaker: SageMakerStandIn,
    ids: tuple[str, str],
) -> None:  # fmt: skip
    form, content_type = encode_form({"prompt": "drums", "duration": "2", "model": "medium"}, {})
    events = [
        proxy_event({**REQUEST, "model": "medium"}),
        proxy_event(form, base64_body=True, headers={"Content-Type": content_type}),
    ]
    for event in events:
        status, _, error = call(event)
        assert (status, error["error"]) == (422, "invalid_request")
        ((field,),) = [[f["field"] for f in error["fields"]]]
        assert field == "model"
        assert "'medium'" in error["message"] and all(i in error["message"] for i in ids)
    assert sagemaker.calls == [] and stored(s3_env, s3_bucket) == []


def test_get_models_lists_the_routes_the_stack_gave(
    routed: pytest.MonkeyPatch, sagemaker: SageMakerStandIn, ids: tuple[str, str]
) -> None:
    text, melody = ids
    status, _, body = call(proxy_event(None, method="GET", resource="/models"))
    assert status == 200, body
    assert body == {
        "default": text,
        "models": [
            {"id": text, "default": True, "endpoint": ENDPOINT},
            {"id": melody, "default": False, "endpoint": MELODY_ENDPOINT},
        ],
    }
    status, _, error = call(proxy_event(None, method="DELETE", resource="/models"))
    assert (status, error["error"]) == (405, "method_not_allowed")
    assert sagemaker.calls == []


# -- jobs (the async variant) route the same way -------------------------------------------------


def test_a_job_is_queued_on_its_models_endpoint_and_its_result_names_the_model(
    routed: pytest.MonkeyPatch, s3_env: SeaweedS3, s3_bucket: str, sagemaker: SageMakerStandIn,
    ids: tuple[str, str], tiny_melody_dir: Path,
) -> None:  # fmt: skip
    sagemaker.output_path = f"s3://{s3_bucket}/music-output"
    sagemaker.failure_path = f"s3://{s3_bucket}/music-failures"
    routed.setenv("TUNESMITH_VARIANT", "async")
    routed.setenv("TUNESMITH_INVOKE_MODE", "async")
    routed.setenv("TUNESMITH_INVOKE_TIMEOUT", "3600")
    melody = ids[1]

    status, _, job = call(proxy_event({**REQUEST, "model": melody}, resource="/jobs"))
    assert status == 202, job
    assert (job["replica"], job["request"]["model"]) == (MELODY_ENDPOINT, melody)
    ((endpoint, sent),) = invoked(sagemaker)
    assert (endpoint, sent["model"]) == (MELODY_ENDPOINT, melody)
    sagemaker.wait_for_async()

    status, _, done = call(job_event("GET", job["id"]))
    assert (status, done["status"]) == (200, "succeeded"), done
    assert done["result"]["model"] == str(tiny_melody_dir)
    meta = record(s3_env, s3_bucket, job["id"])
    assert (meta["request"]["model"], meta["engine"]["endpoint"]) == (melody, MELODY_ENDPOINT)

    status, _, error = call(proxy_event({**REQUEST, "model": "medium"}, resource="/jobs"))
    assert status == 422 and error["fields"][0]["field"] == "model"
    assert len(sagemaker.calls) == 1


# -- the other forms: one endpoint, the engine in the function, a bad map ------------------------


def test_one_endpoint_has_no_model_list(
    lambda_env: pytest.MonkeyPatch, sagemaker: SageMakerStandIn
) -> None:
    status, _, error = call(proxy_event(None, method="GET", resource="/models"))
    assert (status, error["error"]) == (404, "not_found")
    assert "one SageMaker endpoint" in error["message"] and "model=A,B" in error["message"]


def test_in_the_function_the_model_list_is_tunesmith_model(
    lambda_env: pytest.MonkeyPatch, s3_env: SeaweedS3, s3_bucket: str,
    sagemaker: SageMakerStandIn, tiny_model_dir: Path, tiny_melody_dir: Path,
    ids: tuple[str, str],
) -> None:  # fmt: skip
    lambda_env.delenv("TUNESMITH_ENDPOINT_NAME")
    lambda_env.setenv("TUNESMITH_MODEL", f"{tiny_model_dir},{tiny_melody_dir}")
    status, _, body = call(proxy_event(None, method="GET", resource="/models"))
    assert status == 200, body
    assert body == {
        "default": ids[0],
        "models": [
            {"id": ids[0], "default": True, "checkpoint": str(tiny_model_dir)},
            {"id": ids[1], "default": False, "checkpoint": str(tiny_melody_dir)},
        ],
    }
    status, _, error = call(proxy_event({**REQUEST, "model": "medium"}))
    assert status == 422 and [f["field"] for f in error["fields"]] == ["model"]
    assert stored(s3_env, s3_bucket) == [] and sagemaker.calls == []


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("{not json", "TUNESMITH_ENDPOINTS"),
        ('{"small": "under_score"}', "TUNESMITH_ENDPOINTS"),
        ('{"small": "tunesmith-test"}', "TUNESMITH_ENDPOINT_NAME"),  # both forms at once
    ],
)
def test_a_bad_endpoint_map_is_a_json_500_naming_it(
    lambda_env: pytest.MonkeyPatch, sagemaker: SageMakerStandIn, value: str, named: str
) -> None:
    lambda_env.setenv("TUNESMITH_ENDPOINTS", value)
    status, _, error = call(proxy_event(REQUEST))
    assert (status, error["error"]) == (500, "config_error")
    assert named in error["message"]
    assert sagemaker.calls == []
