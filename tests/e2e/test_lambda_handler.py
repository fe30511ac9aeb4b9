"""The Lambda handler end to end: API Gateway proxy events in, real boto3 out to a SageMaker
stand-in in front of a real `tunesmith endpoint` process (tiny MusicGen), and to SeaweedFS S3."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile

from apigw_events import lambda_context, proxy_event
from bad_requests import BAD_BODIES, MALFORMED_BODIES
from lambda_stack import (
    CONTAINER_MAX_DURATION,
    CONTAINER_MAX_RESPONSE,
    ENDPOINT,
    REQUEST,
    call,
    record,
    stored,
)
from s3server import FaultyProxy, SeaweedS3
from sagemaker_standin import CONTAINER_CRASHED, NOT_READY, THROTTLED, UNAVAILABLE, SageMakerStandIn
from tunesmith import __version__
from tunesmith.aws import lambda_handler
from tunesmith.schema import GenerateResponse, Job

pytestmark = pytest.mark.s3
pytest_plugins = ("lambda_fixtures",)  # endpoint, standin, sagemaker, lambda_env


# -- good requests -------------------------------------------------------------------------------


def test_seed_request_is_stored_in_s3_and_answered_like_the_local_api(
    lambda_env: pytest.MonkeyPatch, s3_env: SeaweedS3, s3_bucket: str, tiny_model_dir: Path,
    sagemaker: SageMakerStandIn,
) -> None:  # fmt: skip
    status, _, body = call(proxy_event(REQUEST))

    assert status == 200, body
    assert set(body) == set(GenerateResponse.model_fields)
    key = f"music-output/{body['id']}.wav"
    assert body["s3_url"] == f"s3://{s3_bucket}/{key}"
    assert body["public_url"] == f"{s3_env.endpoint_url}/{s3_bucket}/{key}"
    assert (body["duration"], body["sample_rate"], body["format"]) == (2.0, 32000, "wav")
    assert body["model"] == str(tiny_model_dir) and isinstance(body["seed"], int)
    meta_key = f"music-output/{body['id']}.json"
    assert body["metadata_url"] == f"{s3_env.endpoint_url}/{s3_bucket}/{meta_key}"
    assert stored(s3_env, s3_bucket) == [meta_key, key]
    # the record: the request as it ran, and the engine as the endpoint reported it
    meta = record(s3_env, s3_bucket, body["id"])
    assert (meta["id"], meta["audio_key"], meta["seed"]) == (body["id"], key, body["seed"])
    assert meta["request"]["prompt"] == REQUEST["prompt"]
    assert meta["request"]["seed"] == body["seed"]
    assert meta["engine"] == {
        "tunesmith": __version__, "precision": "fp32", "device": "cpu",
        "kernels": meta["engine"]["kernels"], "step": "eager", "extend_stride": "18",
        "endpoint": ENDPOINT,
    }  # fmt: skip
    assert meta["generation_seconds"] > 0 and meta["inputs"] == {}
    head = s3_env.client().head_object(Bucket=s3_bucket, Key=key)
    assert head["ContentType"] == "audio/wav"
    track = httpx.get(body["public_url"])
    samples, rate = soundfile.read(io.BytesIO(track.content))
    assert (rate, len(samples)) == (32000, 64000)
    # what reached SageMaker: one signed InvokeEndpoint with the validated JSON request
    (invocation,) = sagemaker.calls
    assert invocation["path"] == f"/endpoints/{ENDPOINT}/invocations"
    assert invocation["headers"]["content-type"] == "application/json"
    assert json.loads(invocation["body"])["prompt"] == REQUEST["prompt"]


def test_opus_with_loudness_travels_through_the_endpoint_and_is_stored_as_opus(
    lambda_env: pytest.MonkeyPatch, s3_env: SeaweedS3, s3_bucket: str,
    sagemaker: SageMakerStandIn,
) -> None:  # fmt: skip
    request = {**REQUEST, "format": "opus", "normalization": "loudness", "loudness_lufs": -20}
    status, _, body = call(proxy_event(request))
    assert status == 200, body
    assert (body["format"], body["sample_rate"], body["channels"]) == ("opus", 48000, 1)
    key = f"music-output/{body['id']}.opus"
    assert stored(s3_env, s3_bucket) == [f"music-output/{body['id']}.json", key]
    head = s3_env.client().head_object(Bucket=s3_bucket, Key=key)
    assert head["ContentType"] == "audio/ogg; codecs=opus"
    (invocation,) = sagemaker.calls
    sent = json.loads(invocation["body"])
    assert (sent["normalization"], sent["loudness_lufs"]) == ("loudness", -20)
    info = soundfile.info(io.BytesIO(httpx.get(body["public_url"]).content))
    assert (info.samplerate, info.frames) == (48000, 96000)


def test_a_loop_at_a_tempo_is_made_by_the_endpoint_and_its_analysis_recorded(
    lambda_env: pytest.MonkeyPatch, s3_env: SeaweedS3, s3_bucket: str,
    sagemaker: SageMakerStandIn,
) -> None:  # fmt: skip
    request = {"prompt": "house", "bpm": 120, "bars": 1, "loop": True, "key": "G major"}
    status, _, body = call(proxy_event(request))
    assert status == 200, body
    meta = record(s3_env, s3_bucket, body["id"])
    # the container's analysis reached the function through the custom attributes
    assert body["production"] == meta["production"] and meta["production"]["bars"] == 1
    assert {"tempo_found", "stretch", "key_found", "key_shift"} <= set(meta["production"])
    assert body["warnings"] == meta["warnings"] and meta["request"]["loop"] is True
    audio = httpx.get(body["public_url"]).content
    assert soundfile.info(io.BytesIO(audio)).frames == 2 * 32000  # one bar at 120 BPM


def test_base64_body_presigned_url_flac_and_a_fixed_seed(
    lambda_env: pytest.MonkeyPatch, s3_env: SeaweedS3, s3_bucket: str
) -> None:
    lambda_env.setenv("TUNESMITH_URL_MODE", "presigned")
    request = {**REQUEST, "format": "flac", "seed": 1234}
    status, _, first = call(proxy_event(request, base64_body=True))
    assert status == 200, first
    assert first["format"] == "flac" and first["seed"] == 1234
    assert "X-Amz-Signature=" in first["public_url"]
    audio = httpx.get(first["public_url"])
    assert audio.status_code == 200 and soundfile.info(io.BytesIO(audio.content)).format == "FLAC"
    _, _, second = call(proxy_event(request))
    assert httpx.get(second["public_url"]).content == audio.content  # same seed, same track
    assert len(stored(s3_env, s3_bucket)) == 4  # two tracks, two records
    presigned = httpx.get(first["metadata_url"])
    assert presigned.status_code == 200 and presigned.json()["seed"] == 1234


# -- the caller's mistakes: refused before SageMaker is called ----------------------------------


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
def test_bad_input_is_422_naming_the_field(
    lambda_env: pytest.MonkeyPatch, s3_env: SeaweedS3, s3_bucket: str,
    sagemaker: SageMakerStandIn, body: dict[str, Any], field: str,
) -> None:  # fmt: skip
    status, _, error = call(proxy_event(body, base64_body=field == "prompt"))
    assert status == 422
    assert error["error"] == "invalid_request"
    assert [f["field"] for f in error["fields"]] == [field] and field in error["message"]
    assert sagemaker.calls == [] and stored(s3_env, s3_bucket) == []


@pytest.mark.parametrize("raw", MALFORMED_BODIES)
def test_malformed_bodies_are_422(
    lambda_env: pytest.MonkeyPatch, sagemaker: SageMakerStandIn, raw: bytes
) -> None:
    status, _, error = call(proxy_event(raw))
    assert status == 422 and error["fields"][0]["field"] in {"duration", "body"}
    assert sagemaker.calls == []


def test_a_missing_body_and_broken_base64_are_422(lambda_env: pytest.MonkeyPatch) -> None:
    assert call(proxy_event(None))[0] == 422
    event = proxy_event(REQUEST, base64_body=True)
    event["body"] = "%%% not base64 %%%"
    status, _, error = call(event)
    assert status == 422 and "base64" in error["message"]


@pytest.mark.parametrize("base64_body", [False, True])
def test_an_oversized_body_is_413(
    lambda_env: pytest.MonkeyPatch, sagemaker: SageMakerStandIn, base64_body: bool
) -> None:
    huge = {"prompt": "a", "padding": "x" * 200_000}
    status, _, error = call(proxy_event(huge, base64_body=base64_body))
    assert status == 413 and error["error"] == "payload_too_large"
    assert sagemaker.calls == []


def test_other_methods_and_routes_are_json_errors(lambda_env: pytest.MonkeyPatch) -> None:
    status, _, error = call(proxy_event(REQUEST, method="GET"))
    assert (status, error["error"]) == (405, "method_not_allowed")
    status, _, error = call(proxy_event(REQUEST, resource="/other"))
    assert (status, error["error"]) == (404, "not_found")
    answer = lambda_handler.handler({"not": "an API Gateway event"}, lambda_context())
    assert answer["statusCode"] == 422


# -- the endpoint refuses, fails, is throttled or times out --------------------------------------


def test_the_endpoints_own_refusal_is_passed_through(
    lambda_env: pytest.MonkeyPatch, s3_env: SeaweedS3, s3_bucket: str
) -> None:
    status, _, error = call(proxy_event({**REQUEST, "duration": 25}))  # the Lambda allows 30
    assert status == 422 and error["fields"][0]["field"] == "duration"
    assert f"at most {CONTAINER_MAX_DURATION} seconds" in error["message"]
    # a track that cannot fit the endpoint's payload limit: refused, never truncated
    status, _, error = call(proxy_event({**REQUEST, "duration": 19}))
    assert (status, error["error"]) == (413, "response_too_large")
    assert str(CONTAINER_MAX_RESPONSE) in error["message"]
    assert stored(s3_env, s3_bucket) == []


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        (THROTTLED, 503, "overloaded"),
        (UNAVAILABLE, 503, "unavailable"),
        (NOT_READY, 503, "model_loading"),
        (CONTAINER_CRASHED, 502, "upstream_error"),
    ],
)
def test_sagemaker_failures_are_clear_json(
    lambda_env: pytest.MonkeyPatch, s3_env: SeaweedS3, s3_bucket: str,
    sagemaker: SageMakerStandIn, fault: Any, status: int, code: str,
) -> None:  # fmt: skip
    sagemaker.fail_next(fault)
    got, headers, error = call(proxy_event(REQUEST))
    assert (got, error["error"]) == (status, code), error
    assert ENDPOINT in error["message"] or "SageMaker" in error["message"]
    if status == 503:
        assert int(headers["Retry-After"]) > 0
    assert len(sagemaker.calls) == 1  # called once: no silent retries
    assert stored(s3_env, s3_bucket) == []


def test_an_unknown_endpoint_is_502_naming_it(lambda_env: pytest.MonkeyPatch) -> None:
    lambda_env.setenv("TUNESMITH_ENDPOINT_NAME", "no-such-endpoint")
    status, _, error = call(proxy_event(REQUEST))
    assert status == 502 and "no-such-endpoint" in error["message"]


def test_an_endpoint_past_sagemakers_time_limit_is_504(
    lambda_env: pytest.MonkeyPatch, s3_env: SeaweedS3, s3_bucket: str,
    sagemaker: SageMakerStandIn,
) -> None:  # fmt: skip
    sagemaker.invocation_timeout = 0.1  # SageMaker's 60 s limit, scaled down
    status, _, error = call(proxy_event({**REQUEST, "duration": 15}))
    assert (status, error["error"]) == (504, "upstream_timeout")
    assert "timed out" in error["message"]
    assert stored(s3_env, s3_bucket) == []


def test_no_answer_within_the_functions_wait_is_504(
    lambda_env: pytest.MonkeyPatch, s3_env: SeaweedS3, s3_bucket: str
) -> None:
    lambda_env.setenv("TUNESMITH_INVOKE_TIMEOUT", "0.1")
    status, _, error = call(proxy_event({**REQUEST, "duration": 15}))
    assert (status, error["error"]) == (504, "upstream_timeout")
    assert "0.1 s" in error["message"]
    assert stored(s3_env, s3_bucket) == []


# -- S3 refuses the write: nothing half-written --------------------------------------------------


def test_a_missing_bucket_is_502_and_stores_nothing(
    lambda_env: pytest.MonkeyPatch, s3_env: SeaweedS3, s3_bucket: str
) -> None:
    s3_env.delete_bucket(s3_bucket)
    status, _, error = call(proxy_event(REQUEST))
    assert (status, error["error"]) == (502, "storage_error")
    assert s3_bucket in error["message"]
    s3_env.create_bucket(s3_bucket)
    assert stored(s3_env, s3_bucket) == []


def test_an_upload_cut_midway_leaves_nothing(
    lambda_env: pytest.MonkeyPatch, s3_env: SeaweedS3, s3_bucket: str
) -> None:
    assert s3_env.s3_port is not None
    proxy = FaultyProxy(s3_env.s3_port, cut_request_after=32 * 1024, drop_responses=False)
    try:
        lambda_env.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
        lambda_env.setenv("AWS_MAX_ATTEMPTS", "2")
        status, _, error = call(proxy_event(REQUEST))
    finally:
        proxy.close()
    assert (status, error["error"]) == (502, "storage_error")
    assert f"PUT /{s3_bucket}/music-output/".encode() in proxy.forwarded  # it did start
    assert stored(s3_env, s3_bucket) == []


# -- configuration -------------------------------------------------------------------------------


def test_a_missing_bucket_setting_is_a_json_500_naming_it(lambda_env: pytest.MonkeyPatch) -> None:
    lambda_env.delenv("TUNESMITH_S3_BUCKET")
    status, _, error = call(proxy_event(REQUEST))
    assert (status, error["error"]) == (500, "config_error")
    assert "TUNESMITH_S3_BUCKET" in error["message"]


# -- the asynchronous variant --------------------------------------------------------------------


def test_async_answers_202_with_a_job_whose_track_then_appears(
    lambda_env: pytest.MonkeyPatch, s3_env: SeaweedS3, s3_bucket: str,
    sagemaker: SageMakerStandIn,
) -> None:  # fmt: skip
    sagemaker.output_path = f"s3://{s3_bucket}/music-output"
    sagemaker.failure_path = f"s3://{s3_bucket}/music-failures"
    lambda_env.setenv("TUNESMITH_INVOKE_MODE", "async")
    lambda_env.setenv("TUNESMITH_INVOKE_TIMEOUT", "3600")

    status, headers, body = call(proxy_event({**REQUEST, "format": "flac"}))

    assert status == 202, body
    assert set(body) == set(Job.model_fields) and body["status"] == "queued"
    assert headers["Location"] == f"/prod/jobs/{body['id']}"  # the stage, as the client sent it
    key = f"music-output/{body['id']}/track.flac"
    assert body["s3_url"] == f"s3://{s3_bucket}/{key}"
    assert body["public_url"] == f"{s3_env.endpoint_url}/{s3_bucket}/{key}"
    seed = body["request"]["seed"]
    assert isinstance(seed, int) and body["request"]["format"] == "flac"
    (invocation,) = sagemaker.calls
    assert invocation["path"] == f"/endpoints/{ENDPOINT}/async-invocations"
    assert invocation["headers"]["x-amzn-sagemaker-invocationtimeoutseconds"] == "3600"
    assert json.loads(invocation["body"])["seed"] == seed  # the reported seed is used
    sagemaker.wait_for_async()
    meta, job = f"music-output/{body['id']}.json", f"music-jobs/{body['id']}.json"
    assert stored(s3_env, s3_bucket) == [job, meta, key]  # exactly where the answer said
    track = httpx.get(body["public_url"])
    assert track.status_code == 200
    assert soundfile.info(io.BytesIO(track.content)).frames == 64000


def test_async_output_outside_the_configured_prefix_is_502(
    lambda_env: pytest.MonkeyPatch, s3_bucket: str, sagemaker: SageMakerStandIn
) -> None:
    sagemaker.output_path = f"s3://{s3_bucket}/elsewhere"
    lambda_env.setenv("TUNESMITH_INVOKE_MODE", "async")
    status, _, error = call(proxy_event(REQUEST))
    assert status == 502 and "elsewhere" in error["message"]


# -- the function itself -------------------------------------------------------------------------


def test_the_handler_imports_no_torch(
    lambda_env: pytest.MonkeyPatch, s3_env: SeaweedS3, s3_bucket: str
) -> None:
    script = (
        "import json, sys\n"
        "from apigw_events import proxy_event\n"
        "from tunesmith.aws.lambda_handler import handler\n"
        f"answer = handler(proxy_event({REQUEST!r}), None)\n"
        "heavy = sorted(m for m in ('torch', 'numpy', 'transformers', 'soundfile')"
        " if m in sys.modules)\n"
        "print(json.dumps({'status': answer['statusCode'], 'heavy': heavy}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"status": 200, "heavy": []}
    assert len(stored(s3_env, s3_bucket)) == 2


def test_without_an_endpoint_the_engine_runs_in_the_function(
    lambda_env: pytest.MonkeyPatch, s3_env: SeaweedS3, s3_bucket: str, tiny_model_dir: Path,
    sagemaker: SageMakerStandIn,
) -> None:  # fmt: skip
    lambda_env.delenv("TUNESMITH_ENDPOINT_NAME")
    lambda_env.setenv("TUNESMITH_MODEL", str(tiny_model_dir))
    lambda_env.setenv("TUNESMITH_DEVICE", "cpu")
    status, _, body = call(proxy_event(REQUEST))
    assert status == 200, body
    assert body["model"] == str(tiny_model_dir)
    track = f"music-output/{body['id']}"
    assert stored(s3_env, s3_bucket) == [f"{track}.json", f"{track}.wav"]
    assert record(s3_env, s3_bucket, body["id"])["engine"]["precision"] == "fp32"
    assert sagemaker.calls == []
