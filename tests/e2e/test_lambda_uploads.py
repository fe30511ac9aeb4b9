"""The Lambda handler with uploads and the deployment's limits: ``multipart/form-data`` events
as API Gateway delivers them (base64, the API lists the type in ``binaryMediaTypes``) through
real boto3 to the SageMaker stand-in and a real `tunesmith endpoint`, stored in SeaweedFS S3."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile

from apigw_events import proxy_event
from lambda_stack import ENDPOINT, call, record, stored
from s3server import SeaweedS3
from sagemaker_standin import THROTTLED, SageMakerStandIn
from tunesmith.aws.protocol import encode_form
from tunesmith.uploads import parse_generate_form

pytestmark = pytest.mark.s3
pytest_plugins = ("lambda_fixtures",)  # endpoint, standin, sagemaker, lambda_env

PROMPT = "lofi hip hop beat with vinyl crackle"


def wav(seconds: float, rate: int = 32000) -> bytes:
    noise = np.random.default_rng(5).uniform(-0.5, 0.5, round(seconds * rate))
    out = io.BytesIO()
    soundfile.write(out, noise, rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


def form_event(fields: dict[str, str], files: dict[str, bytes]) -> dict[str, Any]:
    """The proxy event for a form a client (httpx) encoded, base64 as API Gateway passes it."""
    if files:
        uploads = {name: (f"{name}.wav", data, "audio/wav") for name, data in files.items()}
        sent = httpx.Request("POST", "https://api.example/generate", data=fields, files=uploads)
        body, content_type = sent.read(), sent.headers["content-type"]
    else:  # httpx would urlencode a form without files
        body, content_type = encode_form(fields, {})
    return proxy_event(body, base64_body=True, headers={"Content-Type": content_type})


def forwarded(invocation: dict[str, Any]) -> tuple[Any, dict[str, bytes]]:
    """The request and uploads the function sent SageMaker, as a form."""
    content_type = invocation["headers"]["content-type"]
    assert content_type.startswith("multipart/form-data; boundary=")
    return parse_generate_form(
        invocation["body"], content_type, max_duration=3600, max_upload_bytes=10**8
    )


# -- forms through the synchronous endpoint ------------------------------------------------------


def test_a_continuation_is_forwarded_as_a_form_and_stored_with_its_record(
    lambda_env: pytest.MonkeyPatch, s3_env: SeaweedS3, s3_bucket: str,
    sagemaker: SageMakerStandIn,
) -> None:  # fmt: skip
    upload = wav(1.0)
    fields = {"prompt": PROMPT, "duration": "2", "continuation_start": "0.25", "format": "flac"}
    status, _, body = call(form_event(fields, {"input_audio": upload}))

    assert status == 200, body
    (invocation,) = sagemaker.calls
    sent, files = forwarded(invocation)
    assert files == {"input_audio": upload}
    assert (sent.prompt, sent.duration, sent.continuation_start) == (PROMPT, 2.0, 0.25)
    track = f"music-output/{body['id']}"
    assert stored(s3_env, s3_bucket) == [f"{track}.flac", f"{track}.json"]
    meta = record(s3_env, s3_bucket, body["id"])
    assert meta["inputs"] == {
        "input_audio": {"sha256": hashlib.sha256(upload).hexdigest(), "start": 0.25, "end": 1.0}
    }
    assert meta["request"]["continuation_start"] == 0.25 and meta["seed"] == body["seed"]
    assert meta["engine"]["precision"] == "fp32" and meta["engine"]["endpoint"] == ENDPOINT
    assert httpx.get(body["metadata_url"]).json() == meta  # public, beside the track
    info = soundfile.info(io.BytesIO(httpx.get(body["public_url"]).content))
    assert (info.format, info.frames) == ("FLAC", 64000)


def test_a_form_without_uploads_is_forwarded_as_json(
    lambda_env: pytest.MonkeyPatch, sagemaker: SageMakerStandIn
) -> None:
    status, _, body = call(form_event({"prompt": PROMPT, "duration": "1.5", "seed": "9"}, {}))
    assert status == 200, body
    (invocation,) = sagemaker.calls
    assert invocation["headers"]["content-type"] == "application/json"
    assert json.loads(invocation["body"]) == {
        "prompt": PROMPT, "duration": 1.5, "seed": 9, "format": "wav",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "files", "status", "field"),
    [
        ({"duration": "2"}, {"input_audio": b""}, 422, "input_audio"),
        ({"duration": "2"}, {"input_audio": b"x" * 4097}, 413, "input_audio"),
        ({"duration": "2", "continuation_end": "1"}, {}, 422, "continuation_start"),
        ({"duration": "2", "tempo": "90"}, {"input_audio": b"RIFF"}, 422, "tempo"),
        ({"duration": "0.5"}, {"input_audio": b"RIFF"}, 422, "duration"),
    ],
)
def test_bad_forms_are_refused_before_sagemaker_is_called(
    lambda_env: pytest.MonkeyPatch, s3_env: SeaweedS3, s3_bucket: str,
    sagemaker: SageMakerStandIn, fields: dict[str, str], files: dict[str, bytes], status: int,
    field: str,
) -> None:  # fmt: skip
    lambda_env.setenv("TUNESMITH_MAX_UPLOAD_BYTES", "4096")
    got, _, error = call(form_event({"prompt": PROMPT, **fields}, files))
    assert got == status, error
    assert [f["field"] for f in error["fields"]] == [field]
    assert sagemaker.calls == [] and stored(s3_env, s3_bucket) == []


def test_a_continuation_range_without_an_upload_is_refused_in_json_too(
    lambda_env: pytest.MonkeyPatch, sagemaker: SageMakerStandIn
) -> None:
    status, _, error = call(proxy_event({"prompt": PROMPT, "continuation_start": 1}))
    assert status == 422 and error["fields"][0]["field"] == "continuation_start"
    assert sagemaker.calls == []


def test_audio_the_endpoint_cannot_decode_is_its_422_naming_the_upload(
    lambda_env: pytest.MonkeyPatch, s3_env: SeaweedS3, s3_bucket: str,
    sagemaker: SageMakerStandIn,
) -> None:  # fmt: skip
    fields = {"prompt": PROMPT, "duration": "2"}
    status, _, error = call(form_event(fields, {"input_audio": b"RIFF but no audio"}))
    assert status == 422, error
    assert [f["field"] for f in error["fields"]] == ["input_audio"]
    assert len(sagemaker.calls) == 1 and stored(s3_env, s3_bucket) == []


# -- the variant's limits --------------------------------------------------------------------------


def test_a_duration_too_long_for_the_variant_is_refused_naming_the_async_variant(
    lambda_env: pytest.MonkeyPatch, sagemaker: SageMakerStandIn
) -> None:
    # as the CDK app configures the serverless variant (fp32 on CPU, 27 s to answer)
    lambda_env.setenv("TUNESMITH_VARIANT", "serverless")
    lambda_env.setenv("TUNESMITH_TIME_LIMIT", "27")
    lambda_env.setenv("TUNESMITH_MAX_DURATION", "6")
    expected = (
        "duration: must be at most 6 seconds on the serverless variant, which must answer "
        "within 27 s; deploy the async variant (-c variant=async) for tracks up to 300 s"
    )
    for event in (
        proxy_event({"prompt": PROMPT, "duration": 10}),
        form_event({"prompt": PROMPT, "duration": "10"}, {"input_audio": wav(1)}),
    ):
        status, _, error = call(event)
        assert (status, error["message"]) == (422, expected)
        assert [f["field"] for f in error["fields"]] == ["duration"]
    assert sagemaker.calls == []
    assert call(proxy_event({"prompt": PROMPT, "duration": 2}))[0] == 200  # within it


def test_a_form_too_large_for_serverless_sagemaker_is_413_before_invoking(
    lambda_env: pytest.MonkeyPatch, sagemaker: SageMakerStandIn
) -> None:
    lambda_env.setenv("TUNESMITH_VARIANT", "serverless")
    lambda_env.setenv("TUNESMITH_MAX_UPLOAD_BYTES", "5000000")
    upload = os.urandom(4_000_000)  # fits the function's event (6 MB base64), not SageMaker's 4 MB
    event = form_event({"prompt": PROMPT, "duration": "2"}, {"input_audio": upload})
    status, _, error = call(event)
    assert (status, error["error"]) == (413, "payload_too_large")
    assert "serverless" in error["message"] and "4000000" in error["message"]
    assert sagemaker.calls == []


# -- the asynchronous variant: the form goes through S3 ------------------------------------------


@pytest.fixture
def async_env(
    lambda_env: pytest.MonkeyPatch, s3_bucket: str, sagemaker: SageMakerStandIn
) -> pytest.MonkeyPatch:
    sagemaker.output_path = f"s3://{s3_bucket}/music-output"
    sagemaker.failure_path = f"s3://{s3_bucket}/music-failures"
    lambda_env.setenv("TUNESMITH_INVOKE_MODE", "async")
    lambda_env.setenv("TUNESMITH_INVOKE_TIMEOUT", "3600")
    return lambda_env


def test_async_queues_a_form_as_an_s3_input_and_the_track_appears(
    async_env: pytest.MonkeyPatch, s3_env: SeaweedS3, s3_bucket: str,
    sagemaker: SageMakerStandIn,
) -> None:  # fmt: skip
    upload = wav(1.0)
    fields = {"prompt": PROMPT, "duration": "2", "continuation_end": "0.75"}
    status, _, body = call(form_event(fields, {"input_audio": upload}))

    assert status == 202, body
    (invocation,) = sagemaker.calls
    headers = invocation["headers"]
    source = f"music-inputs/{body['id']}.form"
    assert invocation["body"] == b""  # not inline: InvokeEndpointAsync takes 128 kB there
    assert headers["x-amzn-sagemaker-inputlocation"] == f"s3://{s3_bucket}/{source}"
    content_type = headers["x-amzn-sagemaker-content-type"]
    queued = s3_env.client().get_object(Bucket=s3_bucket, Key=source)
    assert queued["ContentType"] == content_type
    sent, files = forwarded({"headers": {"content-type": content_type},
                             "body": queued["Body"].read()})  # fmt: skip
    assert files == {"input_audio": upload}
    assert (sent.seed, sent.continuation_end) == (body["request"]["seed"], 0.75)  # as reported
    sagemaker.wait_for_async()
    key = f"music-output/{body['id']}/track.wav"
    job, meta = f"music-jobs/{body['id']}.json", f"music-output/{body['id']}.json"
    assert stored(s3_env, s3_bucket) == [source, job, meta, key]
    assert record(s3_env, s3_bucket, body["id"])["inputs"]["input_audio"]["end"] == 0.75
    assert soundfile.info(io.BytesIO(httpx.get(body["public_url"]).content)).frames == 64000


def test_an_async_form_that_cannot_be_queued_leaves_no_input_behind(
    async_env: pytest.MonkeyPatch, s3_env: SeaweedS3, s3_bucket: str,
    sagemaker: SageMakerStandIn,
) -> None:  # fmt: skip
    sagemaker.fail_next(THROTTLED)
    event = form_event({"prompt": PROMPT, "duration": "2"}, {"input_audio": wav(1.0)})
    status, _, error = call(event)
    assert (status, error["error"]) == (503, "overloaded")
    assert stored(s3_env, s3_bucket) == []


# -- the function itself -------------------------------------------------------------------------


def test_a_form_imports_no_torch_or_numpy_in_the_function(
    lambda_env: pytest.MonkeyPatch, s3_env: SeaweedS3, s3_bucket: str
) -> None:
    event = form_event({"prompt": PROMPT, "duration": "2"}, {"input_audio": wav(1.0)})
    script = (
        "import json, sys\n"
        "from tunesmith.aws.lambda_handler import handler\n"
        "answer = handler(json.loads(sys.stdin.read()), None)\n"
        "heavy = sorted(m for m in ('torch', 'numpy', 'transformers', 'soundfile')"
        " if m in sys.modules)\n"
        "print(json.dumps({'status': answer['statusCode'], 'heavy': heavy}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], input=json.dumps(event), env=dict(os.environ),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"status": 200, "heavy": []}
    assert len(stored(s3_env, s3_bucket)) == 2


def test_without_an_endpoint_the_function_decodes_and_continues_the_upload(
    lambda_env: pytest.MonkeyPatch, s3_env: SeaweedS3, s3_bucket: str, tiny_model_dir: Path,
    sagemaker: SageMakerStandIn,
) -> None:  # fmt: skip
    lambda_env.delenv("TUNESMITH_ENDPOINT_NAME")
    lambda_env.setenv("TUNESMITH_MODEL", str(tiny_model_dir))
    lambda_env.setenv("TUNESMITH_DEVICE", "cpu")
    upload = wav(1.0)
    event = form_event({"prompt": PROMPT, "duration": "2"}, {"input_audio": upload})
    status, _, body = call(event)
    assert status == 200, body
    meta = record(s3_env, s3_bucket, body["id"])
    assert meta["inputs"]["input_audio"]["sha256"] == hashlib.sha256(upload).hexdigest()
    assert sagemaker.calls == []
    bad = form_event({"prompt": PROMPT, "duration": "2"}, {"input_audio": b"RIFF no audio"})
    status, _, error = call(bad)
    assert status == 422 and error["fields"][0]["field"] == "input_audio"
