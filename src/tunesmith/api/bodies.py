"""Reading a request's body: size-limited, and a generate request's JSON or form with uploads
(the API's routes and the SageMaker container's /invocations alike), and its OpenAPI shape."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from tunesmith.config import Settings
from tunesmith.errors import PayloadTooLarge
from tunesmith.schema import GenerateRequest, parse_generate_request, request_json_schema
from tunesmith.uploads import UPLOAD_FIELDS, is_form, parse_generate_form

__all__ = ["GENERATE_BODY", "read_body", "read_generate_request"]


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(limit)
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise PayloadTooLarge(limit)
    return bytes(body)


async def read_generate_request(
    request: Request, settings: Settings
) -> tuple[GenerateRequest, dict[str, bytes]]:
    """A generate request's body, JSON or a form with uploads: the validated request and the
    uploaded files' bytes (still to be decoded: `tunesmith.uploads.prepare_audio`). A
    ``model`` must be one the settings serve."""
    content_type = request.headers.get("content-type")
    models = list(settings.models)
    if content_type is not None and is_form(content_type):
        limit = settings.max_body_bytes + len(UPLOAD_FIELDS) * settings.max_upload_bytes
        raw = await read_body(request, limit)
        return parse_generate_form(
            raw,
            content_type,
            max_duration=settings.max_duration,
            max_upload_bytes=settings.max_upload_bytes,
            models=models,
        )
    raw = await read_body(request, settings.max_body_bytes)
    return parse_generate_request(raw, max_duration=settings.max_duration, models=models), {}


def _form_schema() -> dict[str, Any]:
    schema = request_json_schema()
    files = {name: {"type": "string", "format": "binary"} for name in UPLOAD_FIELDS}
    files["input_audio"]["description"] = "Audio to continue (its last 30 s at most)"
    files["melody"]["description"] = "A melody to follow (musicgen-melody models)"
    return {**schema, "properties": {**schema["properties"], **files}}


GENERATE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": request_json_schema()},
            "multipart/form-data": {"schema": _form_schema()},
        },
    }
}
