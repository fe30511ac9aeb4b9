"""HTTP routes: generate, health, stored files and tracks, and the web page."""

from __future__ import annotations

import time
from importlib import resources
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response

from tunesmith import defaults
from tunesmith.api.auth import given_key
from tunesmith.api.bodies import GENERATE_BODY, read_generate_request
from tunesmith.api.health import health_response
from tunesmith.api.state import AppState
from tunesmith.engine import CONTENT_TYPES
from tunesmith.errors import NotFound
from tunesmith.production import rubberband
from tunesmith.schema import GenerateResponse
from tunesmith.storage import LocalStorage
from tunesmith.tracks import RECORD_TYPE, delete_track

__all__ = ["COSTLY", "ERROR_SCHEMA", "State", "base_url", "check_api_key", "router"]

router = APIRouter()

ERROR_SCHEMA: dict[str, Any] = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "error": {"type": "string"},
                    "message": {"type": "string"},
                    "fields": {"type": "array", "items": {"type": "object"}},
                },
            }
        }
    }
}


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.tunesmith
    return state


State = Annotated[AppState, Depends(get_state)]


def check_api_key(
    request: Request,
    state: State,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> None:
    """When the server has keys (TUNESMITH_API_KEY, TUNESMITH_API_KEYS_FILE), require one as
    ``Authorization: Bearer`` or ``X-API-Key``; the caller is named for the rate limit."""
    if state.keys.required:
        request.state.caller = state.keys.identify(given_key(authorization, x_api_key))
    else:
        request.state.caller = "ip:" + (request.client.host if request.client else "unknown")


def limit_rate(request: Request, state: State) -> None:
    """TUNESMITH_RATE_LIMIT: 429 with Retry-After for a caller past its requests a minute."""
    state.rate.take(request.state.caller)


def check_metrics_key(
    request: Request,
    state: State,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> None:
    if state.settings.protect_metrics:
        check_api_key(request, state, authorization, x_api_key)


# what every route that spends compute depends on: the key, then the rate limit
COSTLY = [Depends(check_api_key), Depends(limit_rate)]


def base_url(state: AppState, request: Request) -> str:
    return state.settings.public_base_url or str(request.base_url).rstrip("/")


@router.post(
    "/generate",
    response_model=GenerateResponse,
    dependencies=COSTLY,
    summary="Generate a track from a text prompt (and audio to continue) and store it",
    openapi_extra=GENERATE_BODY,
    responses={
        **{code: ERROR_SCHEMA for code in (401, 413, 422, 429, 499, 502, 503, 504)},
    },
)
async def generate(request: Request, state: State) -> GenerateResponse:
    parsed, files = await read_generate_request(request, state.settings)
    request.state.duration_asked = parsed.duration
    started = time.monotonic()
    response = await state.service.generate(
        parsed,
        base_url=base_url(state, request),
        files=files,
        disconnected=request.is_disconnected,
    )
    model = state.service.models.get(parsed.model).id
    state.metrics.track(model, response.duration, time.monotonic() - started)
    return response


@router.get(
    "/healthz", summary="200 once the default model has loaded, 503 until then; each model's state"
)
async def healthz(state: State) -> JSONResponse:
    limits = {
        "max_duration": state.settings.max_duration,
        "auth_required": state.settings.api_key is not None,
        "jobs": state.jobs.running,
        "waiting": state.service.admission.waiting,
        "defaults": defaults.SAMPLING,  # the page's sampling fields start from these
        "rubberband": rubberband.available(),  # bpm and key need it (the page says so)
    }
    return health_response(state.service.models, state.service.in_flight, limits)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
    dependencies=[Depends(check_metrics_key)],
)
async def metrics(state: State) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/files/{key:path}", summary="Download a track kept in local storage")
async def files(key: str, state: State) -> FileResponse:
    storage = state.service.storage
    if not isinstance(storage, LocalStorage):
        raise NotFound("this server stores tracks in S3; use the track's public_url")
    path = storage.path_for(key)
    types = {**CONTENT_TYPES, "json": RECORD_TYPE}
    media_type = types.get(path.suffix.lstrip("."), "application/octet-stream")
    return FileResponse(path, media_type=media_type, filename=path.name)


@router.delete(
    "/tracks/{track_id}",
    status_code=204,
    dependencies=[Depends(check_api_key)],
    summary="Delete a stored track: its audio, then its record (a retry finishes a failed one)",
    responses={code: ERROR_SCHEMA for code in (401, 404, 422, 502)},
)
async def remove_track(track_id: str, state: State) -> Response:
    storage, prefix = state.service.storage, state.settings.s3_prefix
    await anyio.to_thread.run_sync(delete_track, storage, prefix, track_id)
    return Response(status_code=204)


# The page's own files; the page is at / and these under /studio/ (no directory listing).
_STUDIO_TYPES = {"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}


@router.get("/", include_in_schema=False)
async def index() -> HTMLResponse:
    page = resources.files("tunesmith.api").joinpath("static/index.html").read_text("utf-8")
    return HTMLResponse(page, headers={"Cache-Control": "no-cache"})


@router.get("/studio/{name}", include_in_schema=False)
async def studio_file(name: str) -> Response:
    stem, _, extension = name.rpartition(".")
    media_type = _STUDIO_TYPES.get(extension)
    item = resources.files("tunesmith.api").joinpath("static", name)
    if media_type is None or not stem.replace("-", "").isalnum() or not item.is_file():
        raise NotFound(f"no studio file {name!r}")
    # revalidated each load, so a new version of the server never meets an old script
    return Response(item.read_bytes(), media_type=media_type, headers={"Cache-Control": "no-cache"})
