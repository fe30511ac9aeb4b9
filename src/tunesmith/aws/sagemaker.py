"""Invoking the SageMaker endpoint with boto3, and the one place its errors are translated.

The client comes from boto3's standard configuration, so ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``
points it at a local stand-in. Each call is made once (no SDK retries): a throttled or busy
endpoint becomes 503 with Retry-After at once, and the caller decides when to come back.

    endpoint refused the request (400/413/422) -> the same status and message (caller's mistake)
    endpoint busy or loading (its 503)        -> 503 Unavailable, Retry-After
    SageMaker throttling / unavailable        -> 503 Overloaded / Unavailable, Retry-After
    no answer in time (SageMaker's 60 s limit,
      or our read timeout)                    -> 504 UpstreamTimeout
    anything else (endpoint 5xx, bad answer)  -> 502 UpstreamError
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tunesmith.aws.protocol import RenderedTrack, TrackInfo
from tunesmith.errors import (
    ConfigError,
    FieldError,
    InvalidRequest,
    ModelNotReady,
    Overloaded,
    TunesmithError,
    Unavailable,
    UpstreamError,
    UpstreamTimeout,
)
from tunesmith.schema import AudioFormat

__all__ = ["AsyncLocations", "EndpointRefused", "SageMakerEndpoint", "parse_s3_uri"]

log = logging.getLogger(__name__)

_THROTTLED = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException"})
# The endpoint's answers that blame the request (too long for its limits, say). Other 4xx
# (404, 415, ...) mean the endpoint does not speak this protocol: a 502, not the caller's fault.
_CALLER_MISTAKES = frozenset({400, 413, 422})


class EndpointRefused(InvalidRequest):
    """The endpoint refused the request as the caller's mistake (its own 4xx, passed through)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        fields = [
            FieldError(str(f.get("field", "body")), str(f.get("message", "")))
            for f in body.get("fields") or []
            if isinstance(f, dict)
        ]
        super().__init__(fields, str(body.get("message") or "the model endpoint refused it"))
        self.status = status
        self.code = str(body.get("error") or "invalid_request")


@dataclass(frozen=True)
class AsyncLocations:
    """Where SageMaker will write a queued request's answer, and its error document (None: the
    endpoint has no failure path)."""

    output: str
    failure: str | None


class SageMakerEndpoint:
    """One SageMaker endpoint, invoked synchronously (`invoke`) or asynchronously (`submit`)."""

    def __init__(self, name: str, *, timeout: float, client: Any | None = None) -> None:
        self.name = name
        self.timeout = timeout
        self._client = client

    @property
    def client(self) -> Any:
        """The boto3 ``sagemaker-runtime`` client (created on first use)."""
        if self._client is None:
            import boto3
            from botocore.config import Config
            from botocore.exceptions import BotoCoreError

            config = Config(
                connect_timeout=10,
                read_timeout=self.timeout,
                retries={"total_max_attempts": 1, "mode": "standard"},
            )
            try:
                self._client = boto3.session.Session().client("sagemaker-runtime", config=config)
            except (BotoCoreError, ValueError) as exc:
                raise ConfigError(f"cannot create the SageMaker runtime client: {exc}") from exc
        return self._client

    def invoke(self, body: bytes, content_type: str, *, fmt: AudioFormat) -> RenderedTrack:
        """``InvokeEndpoint`` with `body` (`tunesmith.aws.protocol.invocation_body`) asking for
        `fmt` audio: the rendered track, or a translated error."""
        try:
            answer = self.client.invoke_endpoint(
                EndpointName=self.name, ContentType=content_type, Body=body
            )
            audio: bytes = answer["Body"].read()
        except Exception as exc:
            raise self._error(exc) from exc
        answered = str(answer.get("ContentType") or "")
        try:
            info = TrackInfo.from_attributes(answer.get("CustomAttributes"))
        except ValueError as exc:
            raise UpstreamError(f"the model endpoint {self.name!r} answered badly: {exc}") from None
        if not answered.startswith("audio/") or not audio or info.format != fmt:
            raise UpstreamError(
                f"the model endpoint {self.name!r} answered {len(audio)} bytes of "
                f"{answered or 'no type'} in format {info.format!r}; {fmt!r} audio was asked for"
            )
        return RenderedTrack(audio=audio, content_type=answered, info=info)

    def submit(
        self,
        *,
        content_type: str,
        inference_id: str,
        filename: str,
        timeout: int,
        body: bytes | None = None,
        input_location: str | None = None,
        custom_attributes: str | None = None,
    ) -> AsyncLocations:
        """``InvokeEndpointAsync``: queue the request; returns where its answer will be.

        The request is `body` inline (at most 128 kB: a JSON request) or the S3 object at
        `input_location` (a form with its uploads), of `content_type` either way: SageMaker
        hands the container the object with that type. It writes the answer under the
        endpoint's S3 output path, extended by `inference_id`, as `filename`, or an error
        document under its failure path, and reports both URIs at once. `custom_attributes`
        reach the container verbatim (its answer's never come back: only the body is kept).
        """
        source: dict[str, Any] = (
            {"Body": body} if input_location is None else {"InputLocation": input_location}
        )
        if custom_attributes is not None:
            source["CustomAttributes"] = custom_attributes
        try:
            answer = self.client.invoke_endpoint_async(
                EndpointName=self.name,
                ContentType=content_type,
                InferenceId=inference_id,
                S3OutputPathExtension=inference_id,
                Filename=filename,
                InvocationTimeoutSeconds=timeout,
                **source,
            )
        except Exception as exc:
            raise self._error(exc) from exc
        location = answer.get("OutputLocation")
        if not location:
            raise UpstreamError(f"the model endpoint {self.name!r} gave no output location")
        failure = answer.get("FailureLocation")
        return AsyncLocations(str(location), str(failure) if failure else None)

    # -- errors ------------------------------------------------------------------------------

    def _error(self, exc: Exception) -> TunesmithError:
        """Translate a botocore error (anything else is a bug and propagates)."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectTimeoutError,
            ReadTimeoutError,
        )

        where = f"the model endpoint {self.name!r}"
        if isinstance(exc, ReadTimeoutError):
            return UpstreamTimeout(f"{where} did not answer within {self.timeout:g} s")
        if isinstance(exc, ConnectTimeoutError):
            return UpstreamError(f"cannot reach {where}: {exc}")
        if isinstance(exc, BotoCoreError):
            return UpstreamError(f"calling {where} failed: {exc}")
        if not isinstance(exc, ClientError):
            raise exc
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "")
        message = str(error.get("Message") or "")
        log.warning("%s answered %s: %s", where, code, message)
        if code == "ModelError":
            return _model_error(where, exc.response, message)
        if code in _THROTTLED:
            return Overloaded(f"{where} is throttling requests; try again shortly", retry_after=5)
        if code == "ModelNotReadyException":
            return ModelNotReady(f"{where} is not ready yet: {message}", retry_after=30)
        if code == "ServiceUnavailable":
            return Unavailable(f"SageMaker is unavailable: {message}", retry_after=10)
        return UpstreamError(f"{where} failed: {code}: {message}".rstrip(": "))


def _model_error(where: str, response: Mapping[str, Any], message: str) -> TunesmithError:
    """The container answered with an error (or not in time): its status decides."""
    status = response.get("OriginalStatusCode")
    original = str(response.get("OriginalMessage") or "")
    if not isinstance(status, int) or status == 0:  # no answer from the container at all
        if "timed out" in (message + original).lower():
            return UpstreamTimeout(f"{where} did not answer in time: {message}")
        return UpstreamError(f"{where} failed: {message}")
    body = _json_object(original)
    if status in _CALLER_MISTAKES:
        return EndpointRefused(status, body or {"message": original or message})
    detail = str((body or {}).get("message") or original or message)
    if status == 503:
        return Unavailable(f"{where} is busy: {detail}", retry_after=30)
    if status == 504:
        return UpstreamTimeout(f"{where} timed out: {detail}")
    return UpstreamError(f"{where} failed (HTTP {status}): {detail}")


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``; `UpstreamError` for anything else."""
    parts = urlsplit(uri)
    key = parts.path.lstrip("/")
    if parts.scheme != "s3" or not parts.netloc or not key:
        raise UpstreamError(f"SageMaker reported an unexpected output location {uri!r}")
    return parts.netloc, key
