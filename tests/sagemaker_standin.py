"""A stand-in for the SageMaker runtime API on 127.0.0.1, in front of a real container server.

boto3's ``sagemaker-runtime`` client reaches it through ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``.
It speaks the two operations' REST-JSON wire format (botocore's service model), checks what the
real service checks, and forwards each invocation to the container's ``POST /invocations``
(a real ``tunesmith endpoint``), as SageMaker does:

    POST /endpoints/{name}/invocations        InvokeEndpoint: the container's answer, relayed
        container non-2xx  -> 424 ModelError (OriginalStatusCode, OriginalMessage)
        no answer in time  -> 424 ModelError "Received server error (0) ... timed out ..."
    POST /endpoints/{name}/async-invocations  InvokeEndpointAsync: 202 + OutputLocation and
        FailureLocation at once; a worker thread reads the request (the body inline, or the S3
        object at InputLocation, sent with the call's ContentType and CustomAttributes), invokes
        the container and writes its answer's body (nothing else of it) to S3 (a real S3
        server) at ``{output_path}/{S3OutputPathExtension}/{Filename}``, or, when the container
        answers non-2xx or not in time, an error document (its body, or a timeout's text) at
        ``{failure_path}/{InferenceId}-error.out``

`add_endpoint` serves another endpoint name from another container (one endpoint per model).
Unsigned requests get 403, unknown endpoints 400 ValidationError, and `fail_next` makes the
next call fail the way SageMaker does (throttling, unavailable, a container that crashed).
`pause` keeps queued asynchronous requests in the queue until `resume`, as a busy endpoint
(or one scaled to zero) does.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import botocore.session
import httpx
from fastapi import FastAPI, Request, Response

__all__ = ["Fault", "SageMakerStandIn"]

ACCOUNT = "123456789012"
_MODEL = botocore.session.get_session().get_service_model("sagemaker-runtime")
_ASYNC_SHAPE = _MODEL.operation_model("InvokeEndpointAsync").input_shape
assert _ASYNC_SHAPE is not None
_ASYNC_INPUT = _ASYNC_SHAPE.members


@dataclass(frozen=True)
class Fault:
    """An error answer SageMaker gives: its code, HTTP status and body fields."""

    code: str
    status: int
    fields: dict[str, Any] = field(default_factory=dict)


THROTTLED = Fault("ThrottlingException", 400, {"message": "Rate exceeded"})
UNAVAILABLE = Fault("ServiceUnavailable", 503, {"Message": "Service is unavailable"})
NOT_READY = Fault("ModelNotReadyException", 429, {"Message": "Model is not ready"})
CONTAINER_CRASHED = Fault(
    "ModelError",
    424,
    {
        "Message": "Received server error (500) from primary with message "
        '"Internal Server Error". See CloudWatch logs for more information.',
        "OriginalStatusCode": 500,
        "OriginalMessage": "Internal Server Error",
    },
)


class SageMakerStandIn:
    """Serves the endpoint `endpoint_name`, backed by the container at `container_url` (and
    those `add_endpoint` adds)."""

    def __init__(
        self,
        container_url: str,
        *,
        endpoint_name: str,
        invocation_timeout: float = 60.0,
        output_path: str | None = None,
        failure_path: str | None = None,
        s3_client: Callable[[], Any] | None = None,
    ) -> None:
        self.container_url = container_url.rstrip("/")
        self.endpoint_name = endpoint_name
        self.containers = {endpoint_name: self.container_url}  # endpoint name -> its container
        self.invocation_timeout = invocation_timeout
        self.output_path = output_path
        self.failure_path = failure_path
        self.s3_client = s3_client
        self.calls: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self._workers: list[threading.Thread] = []
        self._released = threading.Event()
        self._released.set()
        self.app = self._build()

    def add_endpoint(self, name: str, container_url: str) -> None:
        """Serve endpoint `name` too, backed by the container at `container_url`."""
        self.containers[name] = container_url.rstrip("/")

    def pause(self) -> None:
        """Hold asynchronous requests queued (not yet sent to the container) until `resume`."""
        self._released.clear()

    def resume(self) -> None:
        self._released.set()

    def fail_next(self, fault: Fault) -> None:
        """Answer the next call with `fault` instead of invoking the container."""
        self.faults.append(fault)

    def wait_for_async(self, timeout: float = 120) -> None:
        """Block until every queued asynchronous invocation has been processed."""
        for worker in list(self._workers):
            worker.join(timeout)
            if worker.is_alive():
                raise TimeoutError("an asynchronous invocation did not finish")

    # -- the HTTP API ------------------------------------------------------------------------

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.post("/endpoints/{name}/invocations")
        async def invoke(name: str, request: Request) -> Response:
            body = await request.body()
            refused = self._refuse(name, request, body)
            if refused is not None:
                return refused
            headers = {
                k: v
                for k, v in request.headers.items()
                if k in ("content-type", "accept", "x-amzn-sagemaker-custom-attributes")
            }
            status, answer_headers, content = await self._call_container(name, body, headers)
            if status >= 300 or status == 0:
                return _model_error(status, content)
            relayed = {"x-Amzn-Invoked-Production-Variant": "AllTraffic"}
            for name_ in ("content-type", "x-amzn-sagemaker-custom-attributes"):
                if name_ in answer_headers:
                    relayed[name_] = answer_headers[name_]
            return Response(content, status_code=200, headers=relayed)

        @app.post("/endpoints/{name}/async-invocations")
        async def invoke_async(name: str, request: Request) -> Response:
            body = await request.body()
            refused = self._refuse(name, request, body) or self._check_async(request, body)
            if refused is not None:
                return refused
            if self.output_path is None or self.s3_client is None:
                return _error(400, "ValidationError", "Endpoint is not an asynchronous endpoint")
            h = request.headers
            inference_id = h["x-amzn-sagemaker-inference-id"]
            extension = h.get("x-amzn-sagemaker-s3outputpathextension")
            filename = h.get("x-amzn-sagemaker-filename") or f"{inference_id}.out"
            output = "/".join(
                p.strip("/") for p in (self.output_path, extension or "", filename) if p
            )
            failure = f"{(self.failure_path or self.output_path).rstrip('/')}/{inference_id}"
            failure += "-error.out"
            headers = {"content-type": h.get("x-amzn-sagemaker-content-type", "")}
            if "x-amzn-sagemaker-accept" in h:
                headers["accept"] = h["x-amzn-sagemaker-accept"]
            if "x-amzn-sagemaker-custom-attributes" in h:  # forwarded verbatim
                headers["x-amzn-sagemaker-custom-attributes"] = h[
                    "x-amzn-sagemaker-custom-attributes"
                ]
            source = h.get("x-amzn-sagemaker-inputlocation")
            worker = threading.Thread(
                target=self._process_async,
                args=(self.containers[name], body, source, headers, output, failure),
                daemon=True,
            )
            self._workers.append(worker)
            worker.start()
            return Response(
                json.dumps({"InferenceId": inference_id}),
                status_code=202,
                headers={
                    "content-type": "application/json",
                    "X-Amzn-SageMaker-OutputLocation": output,
                    "X-Amzn-SageMaker-FailureLocation": failure,
                },
            )

        return app

    def _refuse(self, name: str, request: Request, body: bytes) -> Response | None:
        """What SageMaker checks before any model work: signature, endpoint, injected faults."""
        self.calls.append(
            {"path": request.url.path, "headers": dict(request.headers), "body": body}
        )
        if not request.headers.get("authorization", "").startswith("AWS4-HMAC-SHA256 "):
            return _error(403, "MissingAuthenticationTokenException", "Missing Authentication")
        if name not in self.containers:
            return _error(
                400, "ValidationError", f"Endpoint {name} of account {ACCOUNT} not found."
            )
        if self.faults:
            fault = self.faults.pop(0)
            return _error(fault.status, fault.code, fields=fault.fields)
        return None

    def _check_async(self, request: Request, body: bytes) -> Response | None:
        """InvokeEndpointAsync's own parameter rules (lengths and patterns from the API model)."""
        h = request.headers
        if bool(body) == ("x-amzn-sagemaker-inputlocation" in h):
            return _error(400, "ValidationError", "Provide exactly one of Body and InputLocation")
        if len(body) > _ASYNC_INPUT["Body"].metadata["max"]:
            return _error(400, "ValidationError", "Body is larger than 128000 bytes")
        for member, header in (
            ("InferenceId", "x-amzn-sagemaker-inference-id"),
            ("Filename", "x-amzn-sagemaker-filename"),
            ("S3OutputPathExtension", "x-amzn-sagemaker-s3outputpathextension"),
            ("CustomAttributes", "x-amzn-sagemaker-custom-attributes"),
        ):
            value = h.get(header)
            rules = _ASYNC_INPUT[member].metadata
            if value is None:
                if member == "InferenceId":
                    return _error(400, "ValidationError", "InferenceId is required here")
                continue
            # the model's patterns are Java regexes; three constructs differ in Python
            pattern = (
                rules["pattern"]
                .replace(r"\p{Print}", r"\x20-\x7e")
                .replace(r"\p{ASCII}", r"[\x00-\x7f]")
                .replace(r"\z", r"\Z")
            )
            shortest = rules.get("min", 0)
            if not shortest <= len(value) <= rules["max"] or not re.fullmatch(pattern, value):
                constraint = f"length {shortest}-{rules['max']}, pattern {rules['pattern']}"
                return _error(
                    400,
                    "ValidationError",
                    f"Value {value!r} at '{member}' failed to satisfy constraint: {constraint}",
                )
        return None

    async def _call_container(
        self, name: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        """Endpoint `name`'s container's answer, or status 0 when it did not answer in time."""
        async with httpx.AsyncClient(timeout=self.invocation_timeout) as client:
            try:
                answer = await client.post(
                    f"{self.containers[name]}/invocations", content=body, headers=headers
                )
            except httpx.TimeoutException:
                return 0, {}, b""
        return answer.status_code, dict(answer.headers), answer.content

    def _process_async(
        self,
        container_url: str,
        body: bytes,
        source: str | None,
        headers: dict[str, str],
        output: str,
        failure: str,
    ) -> None:
        assert self.s3_client is not None
        self._released.wait()
        if source is not None:  # read when the request is processed, as SageMaker does
            bucket, key = _split(source)
            body = self.s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        try:
            answer = httpx.post(
                f"{container_url}/invocations",
                content=body,
                headers=headers,
                timeout=self.invocation_timeout,
            )
            ok = answer.status_code == 200
            content, content_type = answer.content, answer.headers.get("content-type", "")
        except httpx.TimeoutException:
            ok, content, content_type = False, b"invocation timed out", "text/plain"
        bucket, key = _split(output if ok else failure)
        self.s3_client().put_object(Bucket=bucket, Key=key, Body=content, ContentType=content_type)


def _split(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    return parts.netloc, parts.path.lstrip("/")


def _error(
    status: int, code: str, message: str | None = None, *, fields: dict[str, Any] | None = None
) -> Response:
    body = dict(fields or {})
    if message is not None:
        body["message"] = message
    return Response(
        json.dumps(body),
        status_code=status,
        headers={"content-type": "application/json", "x-amzn-ErrorType": f"{code}:http://internal"},
    )


def _model_error(status: int, content: bytes) -> Response:
    text = content.decode("utf-8", errors="replace")
    if status == 0:
        original = (
            "Your invocation timed out while waiting for a response from container primary. "
            "Review the latency metrics for each container in Amazon CloudWatch, resolve the "
            "issue, and try again."
        )
        message = f'Received server error (0) from primary with message "{original}".'
    else:
        kind = "client" if status < 500 else "server"
        original = text
        message = f'Received {kind} error ({status}) from primary with message "{text}".'
    return _error(
        424,
        "ModelError",
        fields={
            "Message": message + f" See CloudWatch logs in account {ACCOUNT} for more information.",
            "OriginalStatusCode": status,
            "OriginalMessage": original,
            "LogStreamArn": f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/aws/sagemaker/x",
        },
    )
