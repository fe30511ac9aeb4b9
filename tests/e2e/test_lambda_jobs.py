"""Jobs on the async variant, end to end: API Gateway proxy events into the real handler, real
boto3 out to the SageMaker stand-in (which queues, then writes the answer's body or an error
document to SeaweedFS S3, as SageMaker does) in front of a real `tunesmith endpoint` process."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile

from apigw_events import proxy_event
from lambda_stack import CONTAINER_MAX_DURATION, ENDPOINT, REQUEST, call, job_event, record, stored
from s3server import SeaweedS3
from sagemaker_standin import SageMakerStandIn
from tunesmith import __version__
from tunesmith.aws.async_jobs import QUEUE_TTL
from tunesmith.schema import GenerateResponse, Job

pytestmark = pytest.mark.s3
pytest_plugins = ("lambda_fixtures",)  # endpoint, standin, sagemaker, lambda_env


@pytest.fixture
def async_env(
    lambda_env: pytest.MonkeyPatch, s3_bucket: str, sagemaker: SageMakerStandIn
) -> pytest.MonkeyPatch:
    """The async variant as the CDK app configures it (output and failure paths included)."""
    sagemaker.output_path = f"s3://{s3_bucket}/music-output"
    sagemaker.failure_path = f"s3://{s3_bucket}/music-failures"
    lambda_env.setenv("TUNESMITH_VARIANT", "async")
    lambda_env.setenv("TUNESMITH_INVOKE_MODE", "async")
    lambda_env.setenv("TUNESMITH_INVOKE_TIMEOUT", "3600")
    return lambda_env


def job_record(server: SeaweedS3, bucket: str, job_id: str) -> dict[str, Any]:
    body = server.client().get_object(Bucket=bucket, Key=f"music-jobs/{job_id}.json")["Body"]
    found: dict[str, Any] = json.loads(body.read())
    return found


def submit(request: dict[str, Any]) -> dict[str, Any]:
    status, headers, job = call(proxy_event(request, resource="/jobs"))
    assert status == 202, job
    assert headers["Location"] == f"/prod/jobs/{job['id']}"
    queued: dict[str, Any] = job
    return queued


# -- a job's life --------------------------------------------------------------------------------


def test_a_job_is_queued_then_succeeds_with_its_result_and_track_record(
    async_env: pytest.MonkeyPatch, s3_env: SeaweedS3, s3_bucket: str, tiny_model_dir: Path,
    sagemaker: SageMakerStandIn,
) -> None:  # fmt: skip
    sagemaker.pause()  # the request waits in SageMaker's queue
    job = submit({**REQUEST, "format": "flac"})

    assert set(job) == set(Job.model_fields)
    job_id, seed = job["id"], job["request"]["seed"]
    key, meta = f"music-output/{job_id}/track.flac", f"music-output/{job_id}.json"
    assert (job["status"], job["result"], job["error"]) == ("queued", None, None)
    assert job["s3_url"] == f"s3://{s3_bucket}/{key}"
    assert job["public_url"] == f"{s3_env.endpoint_url}/{s3_bucket}/{key}"
    assert job["metadata_url"] == f"{s3_env.endpoint_url}/{s3_bucket}/{meta}"
    assert (job["audio_url"], job["events_url"]) == (None, None)  # no stream here
    assert job["request"]["prompt"] == REQUEST["prompt"] and isinstance(seed, int)
    assert job["created"] == job["updated"] and job["replica"] == ENDPOINT
    # the record is the job, plus where SageMaker writes its error document
    assert job_record(s3_env, s3_bucket, job_id) == {
        **job, "failure_location": f"s3://{s3_bucket}/music-failures/{job_id}-error.out",
    }  # fmt: skip
    # the container is told where the track's record goes
    (invocation,) = sagemaker.calls
    attributes = invocation["headers"]["x-amzn-sagemaker-custom-attributes"]
    assert f"record=s3%3A%2F%2F{s3_bucket}%2Fmusic-output%2F{job_id}.json" in attributes

    status, _, queued = call(job_event("GET", job_id))
    assert status == 200 and queued == job  # nothing written yet: still queued
    status, _, error = call(job_event("DELETE", job_id))
    assert (status, error["error"]) == (409, "conflict")
    assert "cannot be canceled" in error["message"] and "SageMaker" in error["message"]

    sagemaker.resume()
    sagemaker.wait_for_async()
    status, headers, done = call(job_event("GET", job_id))

    assert status == 200, done
    assert "Location" not in headers
    assert (done["status"], done["error"]) == ("succeeded", None)
    result = done["result"]
    assert set(result) == set(GenerateResponse.model_fields)
    assert result == {
        "id": job_id, "s3_url": job["s3_url"], "public_url": job["public_url"],
        "duration": 2.0, "sample_rate": 32000, "channels": 1, "format": "flac",
        "model": str(tiny_model_dir), "seed": seed, "metadata_url": job["metadata_url"],
        "production": None, "warnings": [],
    }  # fmt: skip
    assert done["progress"]["audio_seconds"] == 2.0 and done["updated"] >= job["updated"]
    track = httpx.get(result["public_url"])
    assert soundfile.info(io.BytesIO(track.content)).frames == 64000
    # the track's record, stored by the container beside the track, as the sync variants have it
    stored_record = record(s3_env, s3_bucket, job_id)
    assert httpx.get(result["metadata_url"]).json() == stored_record
    assert (stored_record["id"], stored_record["audio_key"]) == (job_id, key)
    assert (stored_record["seed"], stored_record["request"]["seed"]) == (seed, seed)
    assert stored_record["request"]["prompt"] == REQUEST["prompt"]
    assert stored_record["engine"] == {
        "tunesmith": __version__, "precision": "fp32", "device": "cpu",
        "kernels": stored_record["engine"]["kernels"], "step": "eager", "extend_stride": "18",
        "endpoint": ENDPOINT,
    }  # fmt: skip
    assert stored_record["generation_seconds"] > 0
    # the outcome is recorded: later GETs read the job record alone
    assert job_record(s3_env, s3_bucket, job_id)["status"] == "succeeded"
    assert stored(s3_env, s3_bucket) == [f"music-jobs/{job_id}.json", meta, key]
    assert call(job_event("GET", job_id))[2] == done
    status, _, error = call(job_event("DELETE", job_id))
    assert status == 409 and "already succeeded" in error["message"]


def test_post_generate_on_the_async_variant_is_the_same_job(
    async_env: pytest.MonkeyPatch, sagemaker: SageMakerStandIn
) -> None:
    sagemaker.pause()
    status, headers, job = call(proxy_event(REQUEST))  # POST /generate
    assert status == 202 and headers["Location"] == f"/prod/jobs/{job['id']}"
    assert set(job) == set(Job.model_fields) and job["status"] == "queued"
    assert call(job_event("GET", job["id"]))[2]["status"] == "queued"


def test_a_request_the_container_refuses_is_a_failed_job_with_its_message(
    async_env: pytest.MonkeyPatch, s3_env: SeaweedS3, s3_bucket: str,
    sagemaker: SageMakerStandIn,
) -> None:  # fmt: skip
    job = submit({**REQUEST, "duration": 25})  # the function allows 30, the container 20
    sagemaker.wait_for_async()
    failure = f"music-failures/{job['id']}-error.out"
    assert stored(s3_env, s3_bucket) == [failure, f"music-jobs/{job['id']}.json"]

    status, _, failed = call(job_event("GET", job["id"]))

    assert status == 200, failed
    assert (failed["status"], failed["result"]) == ("failed", None)
    assert failed["error"]["error"] == "invalid_request"
    assert f"at most {CONTAINER_MAX_DURATION} seconds" in failed["error"]["message"]
    assert job_record(s3_env, s3_bucket, job["id"])["error"] == failed["error"]
    status, _, error = call(job_event("DELETE", job["id"]))
    assert status == 409 and "already failed" in error["message"]


def test_a_track_without_its_record_is_a_clear_502(
    async_env: pytest.MonkeyPatch, s3_env: SeaweedS3, s3_bucket: str,
    sagemaker: SageMakerStandIn,
) -> None:  # fmt: skip
    job = submit(REQUEST)
    sagemaker.wait_for_async()
    # as an endpoint image that does not store records would leave it
    s3_env.client().delete_object(Bucket=s3_bucket, Key=f"music-output/{job['id']}.json")
    status, _, error = call(job_event("GET", job["id"]))
    assert (status, error["error"]) == (502, "upstream_error")
    assert "no record" in error["message"] and job["id"] in error["message"]
    assert job_record(s3_env, s3_bucket, job["id"])["status"] == "queued"  # nothing decided


def test_a_job_sagemaker_never_answers_fails_after_its_queue_and_time_limits(
    async_env: pytest.MonkeyPatch, s3_env: SeaweedS3, s3_bucket: str,
    sagemaker: SageMakerStandIn,
) -> None:  # fmt: skip
    sagemaker.pause()
    job = submit(REQUEST)
    stale = job_record(s3_env, s3_bucket, job["id"])
    waited = timedelta(seconds=QUEUE_TTL + 3600 + 601)
    stale["created"] = (datetime.now(UTC) - waited).isoformat(timespec="seconds")
    s3_env.client().put_object(
        Bucket=s3_bucket, Key=f"music-jobs/{job['id']}.json", Body=json.dumps(stale).encode()
    )
    status, _, failed = call(job_event("GET", job["id"]))
    assert status == 200 and failed["status"] == "failed"
    assert failed["error"]["error"] == "upstream_timeout"
    assert "neither the track nor an error" in failed["error"]["message"]


# -- what does not exist -------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_an_unknown_or_malformed_job_id_is_404(
    async_env: pytest.MonkeyPatch, sagemaker: SageMakerStandIn, method: str
) -> None:
    unknown = uuid.uuid4().hex
    status, _, error = call(job_event(method, unknown))
    assert (status, error["error"]) == (404, "not_found") and unknown in error["message"]
    for bad in ["../music-output/x", "A" * 32, "x" * 500, "", "%00"]:
        status, _, error = call(job_event(method, bad))
        assert (status, error["error"]) == (404, "not_found"), (bad, error)
        assert "32 lowercase hex" in error["message"]
    assert sagemaker.calls == []


@pytest.mark.parametrize("tail", ["/events", "/audio"])
def test_the_async_variant_streams_nothing(
    async_env: pytest.MonkeyPatch, sagemaker: SageMakerStandIn, tail: str
) -> None:
    sagemaker.pause()
    job = submit(REQUEST)
    status, _, error = call(job_event("GET", job["id"], tail))
    assert (status, error["error"]) == (404, "not_found")
    assert "async variant cannot stream" in error["message"]


def test_other_methods_on_jobs_are_405(async_env: pytest.MonkeyPatch) -> None:
    status, _, error = call(proxy_event(None, method="GET", resource="/jobs"))
    assert (status, error["error"]) == (405, "method_not_allowed")
    status, _, error = call(job_event("PUT", uuid.uuid4().hex))
    assert (status, error["error"]) == (405, "method_not_allowed")
    assert "GET or DELETE" in error["message"]


def test_jobs_on_a_synchronous_variant_name_the_async_variant(
    lambda_env: pytest.MonkeyPatch, s3_env: SeaweedS3, s3_bucket: str,
    sagemaker: SageMakerStandIn,
) -> None:  # fmt: skip
    for event in (
        proxy_event(REQUEST, resource="/jobs"),
        job_event("GET", uuid.uuid4().hex),
        job_event("DELETE", uuid.uuid4().hex),
        job_event("GET", uuid.uuid4().hex, "/events"),
    ):
        status, _, error = call(event)
        assert (status, error["error"]) == (404, "not_found")
        assert "async variant" in error["message"]
    assert sagemaker.calls == [] and stored(s3_env, s3_bucket) == []
