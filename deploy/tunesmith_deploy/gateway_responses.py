"""What API Gateway answers when it refuses a request itself (the function never runs): bodies
in tunesmith's JSON error shape, the request contract spelled out, the routes there are."""

from __future__ import annotations

import json

from aws_cdk import aws_apigateway as apigw

from tunesmith.aws.deployment import ASYNC_MAX_DURATION
from tunesmith.schema import GenerateRequest
from tunesmith.uploads import UPLOAD_FIELDS

__all__ = ["contract_message", "gateway_errors", "routes_message"]

# JSON the gateway answers with when it refuses a request itself (the function never runs).
# Gateway response templates are not VTL: they substitute variables only, and
# `$context.error.messageString` is the one that comes quoted as a JSON string. The detailed
# `validationErrorString` holds raw double quotes, so the body refusal names the schema instead.
_CONTRACT = (
    "the body must be a JSON object (or a multipart/form-data form of the same fields, with "
    "the files {files}): prompt (text, required), and optionally duration (seconds, 1 to "
    "{max_duration:g} on the {variant} variant{longer}), {optional}; unknown fields are refused"
)


def contract_message(variant: str, max_duration: float) -> str:
    """What the gateway says when the request model refuses a body (field by field, from the
    contract), naming the async variant where longer tracks are made."""
    optional = [name for name in GenerateRequest.model_fields if name not in ("prompt", "duration")]
    longer = ""
    if variant != "async" and max_duration < ASYNC_MAX_DURATION:
        longer = f"; the async variant makes up to {ASYNC_MAX_DURATION:g} s"
    return _CONTRACT.format(
        files=" and ".join(UPLOAD_FIELDS),
        max_duration=max_duration,
        variant=variant,
        longer=longer,
        optional=", ".join(optional),
    )


def routes_message(variant: str, *, models: bool = False) -> str:
    """What the gateway says for a route it does not have: the routes it has (`models`: with
    ``GET /models``, where several models are deployed)."""
    listing = ", GET /models" if models else ""
    if variant != "async":
        return (
            f"no such route; this API serves POST /generate{listing} (jobs need the async variant)"
        )
    return (
        "no such route; this API serves POST /generate, POST /jobs, GET and DELETE /jobs/{id}"
        f"{listing} (the async variant cannot stream a job's events or audio: poll "
        "GET /jobs/{id})"
    )


def gateway_errors(
    api_timeout: int, contract: str, routes: str
) -> dict[apigw.ResponseType, tuple[str | None, str]]:
    """Gateway response type -> (status, or None to keep the gateway's, JSON template)."""

    def body(code: str, message: str = "$context.error.messageString", extra: str = "") -> str:
        return f'{{"error":"{code}","message":{message}{extra}}}'

    timeout = (
        f'"the track took longer than API Gateway waits ({api_timeout} s); ask for a shorter '
        'duration, or use the async variant"'
    )
    return {
        apigw.ResponseType.BAD_REQUEST_BODY: (
            "422", body("invalid_request", json.dumps(contract), ',"fields":[]')
        ),
        apigw.ResponseType.INVALID_API_KEY: (
            "401", body("unauthorized", '"missing or wrong API key (send it as x-api-key)"')
        ),
        apigw.ResponseType.MISSING_AUTHENTICATION_TOKEN: (
            "404", body("not_found", json.dumps(routes))
        ),
        apigw.ResponseType.THROTTLED: ("429", body("throttled")),
        apigw.ResponseType.QUOTA_EXCEEDED: ("429", body("quota_exceeded")),
        apigw.ResponseType.REQUEST_TOO_LARGE: ("413", body("payload_too_large")),
        apigw.ResponseType.UNSUPPORTED_MEDIA_TYPE: ("415", body("unsupported_media_type")),
        apigw.ResponseType.INTEGRATION_TIMEOUT: ("504", body("upstream_timeout", timeout)),
        # any other refusal keeps its own status; its type names it
        apigw.ResponseType.DEFAULT_4_XX: (None, body("$context.error.responseType")),
        apigw.ResponseType.DEFAULT_5_XX: (None, body("$context.error.responseType")),
    }  # fmt: skip
