"""API Gateway REST proxy integration: the event a Lambda function receives, the answer it returns.

The event (payload format 1.0) carries ``httpMethod``, ``resource`` (``/generate``,
``/jobs/{id}``), ``path`` (``/jobs/abc...``), ``pathParameters`` (``{"id": "abc..."}``, or
null), ``requestContext.path`` (the path as the client sent it, the stage or a custom domain's
base path first), ``headers`` and ``multiValueHeaders`` (either may be null), ``body`` (a string
or null) and
``isBase64Encoded`` (true when API Gateway base64-encoded a body it treats as binary: a
``multipart/form-data`` one, which the API lists in ``binaryMediaTypes``). The answer is
``{"statusCode", "headers", "body", "isBase64Encoded"}``; tunesmith always answers
JSON, errors included (`error_response`), the same JSON the local API gives.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tunesmith.errors import FieldError, InvalidRequest, PayloadTooLarge, TunesmithError
from tunesmith.uploads import is_form

__all__ = ["ProxyRequest", "error_response", "json_response"]

_JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class ProxyRequest:
    """The parts of a proxy event tunesmith uses; header names are lower-cased."""

    method: str
    resource: str
    headers: dict[str, str]
    body: bytes
    request_id: str | None
    path_parameters: dict[str, str] = field(default_factory=dict)
    base_path: str = ""  # what precedes `path` in the client's URL: "/prod" on execute-api

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")

    @classmethod
    def from_event(
        cls, event: Any, *, max_body_bytes: int, max_form_bytes: int | None = None
    ) -> ProxyRequest:
        """Parse a proxy event, decoding a base64 body; `PayloadTooLarge` past the limit
        (`max_form_bytes` for a ``multipart/form-data`` body, when given)."""
        if not isinstance(event, Mapping) or "httpMethod" not in event:
            raise InvalidRequest(
                [FieldError("event", "not an API Gateway REST proxy event")],
                "this function answers API Gateway REST proxy events (POST /generate)",
            )
        headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
        context = event.get("requestContext") or {}
        limit = max_body_bytes
        if max_form_bytes is not None and is_form(headers.get("content-type")):
            limit = max_form_bytes
        if not isinstance(context, Mapping):
            context = {}
        parameters = event.get("pathParameters")
        path = str(event.get("path") or "")
        seen = str(context.get("path") or "")
        return cls(
            method=str(event.get("httpMethod") or "").upper(),
            resource=str(event.get("resource") or path),
            headers=headers,
            body=_body(event.get("body"), bool(event.get("isBase64Encoded")), limit),
            request_id=context.get("requestId"),
            path_parameters=(
                {str(k): str(v) for k, v in parameters.items()}
                if isinstance(parameters, Mapping)
                else {}
            ),
            base_path=seen.removesuffix(path).rstrip("/") if path and seen.endswith(path) else "",
        )


def _body(raw: Any, is_base64: bool, limit: int) -> bytes:
    if raw is None:
        return b""
    if not isinstance(raw, str):
        raise InvalidRequest([FieldError("body", "the event's body is not a string")])
    if not is_base64:
        data = raw.encode("utf-8", errors="surrogatepass")
    elif math.floor(len(raw) * 3 / 4) > limit + 2:  # refuse before decoding a huge body
        raise PayloadTooLarge(limit)
    else:
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest([FieldError("body", "not valid base64")]) from None
    if len(data) > limit:
        raise PayloadTooLarge(limit)
    return data


def json_response(
    status: int, body: Any, headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A proxy response with a JSON body."""
    return {
        "statusCode": status,
        "headers": {**_JSON_HEADERS, **(headers or {})},
        "body": json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        "isBase64Encoded": False,
    }


def error_response(exc: TunesmithError) -> dict[str, Any]:
    """The proxy response for one of tunesmith's errors (Retry-After included when it applies)."""
    return json_response(exc.status, exc.to_dict(), exc.headers())
