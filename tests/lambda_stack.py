"""What the Lambda handler's end-to-end tests share: the request, the limits the container runs
with (`lambda_fixtures` starts it), `call` (the real handler on a proxy event), `job_event` (a
request for one job, as API Gateway routes ``/jobs/{id}``) and what S3 holds afterwards
(`stored`, `record`)."""

from __future__ import annotations

import json
from typing import Any

from apigw_events import lambda_context, proxy_event
from s3server import SeaweedS3
from tunesmith.aws import lambda_handler

__all__ = [
    "CONTAINER_MAX_DURATION",
    "CONTAINER_MAX_RESPONSE",
    "ENDPOINT",
    "REQUEST",
    "call",
    "job_event",
    "record",
    "stored",
]

ENDPOINT = "tunesmith-test"
REQUEST = {"prompt": "upbeat electronic dance music with heavy bass", "duration": 2}
# The container is stricter than the Lambda (20 s, 1 MB) so that its refusals can be seen.
CONTAINER_MAX_DURATION = 20
CONTAINER_MAX_RESPONSE = 1_000_000  # 15 s of WAV fits, 19 s does not


def call(event: Any) -> tuple[int, dict[str, str], Any]:
    """Run the real handler; return the status, the headers and the decoded JSON body."""
    answer = lambda_handler.handler(event, lambda_context())
    assert set(answer) == {"statusCode", "headers", "body", "isBase64Encoded"}
    assert answer["isBase64Encoded"] is False
    assert answer["headers"]["Content-Type"] == "application/json"
    return answer["statusCode"], answer["headers"], json.loads(answer["body"])


def job_event(method: str, job_id: str, tail: str = "") -> dict[str, Any]:
    """The proxy event of `method` ``/jobs/{id}`` (plus `tail`, e.g. ``/events``) for `job_id`."""
    resource = f"/jobs/{{id}}{tail}"
    event = proxy_event(None, method=method, resource=resource)
    path = f"/jobs/{job_id}{tail}"
    event["path"] = path
    event["pathParameters"] = {"id": job_id}
    event["requestContext"]["path"] = f"/{event['requestContext']['stage']}{path}"
    return event


def stored(server: SeaweedS3, bucket: str) -> list[str]:
    """Every key in `bucket`, sorted (a track's record sorts before its audio)."""
    client = server.client()
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    # sorted here: SeaweedFS lists a folder's objects (<id>/track.wav) before <id>.json
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))


def record(server: SeaweedS3, bucket: str, track_id: str) -> dict[str, Any]:
    """The JSON record stored beside a track."""
    key = f"music-output/{track_id}.json"
    head = server.client().head_object(Bucket=bucket, Key=key)
    assert head["ContentType"] == "application/json"
    body = server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    found: dict[str, Any] = json.loads(body)
    return found
