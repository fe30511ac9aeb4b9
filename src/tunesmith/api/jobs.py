"""HTTP routes for jobs (submit, status, cancel, progress events, audio while it is made) and
the history of stored tracks."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from tunesmith.api.bodies import GENERATE_BODY, read_generate_request
from tunesmith.api.routes import COSTLY, ERROR_SCHEMA, State, base_url, check_api_key
from tunesmith.api.state import AppState
from tunesmith.errors import Conflict, TunesmithError
from tunesmith.jobs import KEEP_AUDIO_SECONDS, LiveJob
from tunesmith.schema import Job, TrackPage
from tunesmith.tracks import list_tracks

__all__ = ["router"]

router = APIRouter()

_POLL_LIVE = 0.1  # seconds between looks at a job this server runs
_POLL_STORED = 1.0  # and at one another server runs (a storage read each time)
_KEEPALIVE = 15.0  # an SSE comment this often keeps proxies from closing an idle stream
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: ERROR_SCHEMA for code in (401, 404, 409, 413, 422, 429, 502, 503)
}


@router.post(
    "/jobs",
    status_code=202,
    response_model=Job,
    dependencies=COSTLY,
    summary="Start generating a track; answers at once with the job and its final URLs",
    openapi_extra=GENERATE_BODY,
    responses=_ERRORS,
)
async def submit_job(request: Request, state: State) -> JSONResponse:
    parsed, files = await read_generate_request(request, state.settings)
    request.state.duration_asked = parsed.duration
    job = await state.jobs.submit(parsed, base_url=base_url(state, request), files=files)
    return JSONResponse(
        job.model_dump(mode="json"), status_code=202, headers={"Location": f"/jobs/{job.id}"}
    )


@router.get(
    "/jobs/{job_id}",
    response_model=Job,
    dependencies=[Depends(check_api_key)],
    summary="A job's status, progress, and result or error",
    responses=_ERRORS,
)
async def get_job(job_id: str, state: State) -> Job:
    return await anyio.to_thread.run_sync(state.jobs.get, job_id)


@router.delete(
    "/jobs/{job_id}",
    response_model=Job,
    dependencies=[Depends(check_api_key)],
    summary="Cancel a job: it leaves the batch at the next step and nothing is stored",
    responses=_ERRORS,
)
async def cancel_job(job_id: str, state: State) -> Job:
    return await anyio.to_thread.run_sync(state.jobs.cancel, job_id)


@router.get(
    "/jobs/{job_id}/events",
    dependencies=[Depends(check_api_key)],
    summary="Server-sent events: progress every few steps, then done or error",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **_ERRORS},
)
async def job_events(job_id: str, state: State) -> StreamingResponse:
    first = await anyio.to_thread.run_sync(state.jobs.get, job_id)  # 404 before streaming
    return StreamingResponse(
        _events(state, first),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(state: AppState, job: Job) -> AsyncIterator[str]:
    """``progress`` events while the job runs (at most one per poll), then ``done``
    (succeeded) or ``error`` (failed, canceled)."""
    sent: Any = None
    quiet_since = time.monotonic()
    while True:
        if job.finished:
            yield _event("done" if job.status == "succeeded" else "error", job)
            return
        seen = (job.status, job.progress)
        if seen != sent:
            yield _event("progress", job)
            sent, quiet_since = seen, time.monotonic()
        elif time.monotonic() - quiet_since > _KEEPALIVE:
            yield ": keep-alive\n\n"
            quiet_since = time.monotonic()
        live = state.jobs.live_job(job.id)
        await anyio.sleep(_POLL_LIVE if live is not None else _POLL_STORED)
        if live is not None:
            job = live.job
            continue
        try:
            job = await anyio.to_thread.run_sync(state.jobs.get, job.id)
        except TunesmithError:  # storage unreachable for a moment: look again
            continue


def _event(name: str, job: Job) -> str:
    return f"event: {name}\ndata: {json.dumps(job.model_dump(mode='json'))}\n\n"


@router.get(
    "/jobs/{job_id}/audio",
    summary="The job's audio while it is made: a WAV of the final length, sent as decoded",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"audio/wav": {}}},
        303: {"description": "The job ended a while ago: its stored WAV track"},
        **_ERRORS,
    },
)
async def job_audio(job_id: str, state: State) -> Response:
    # No API key: like a track's public_url, the unguessable job id is what grants access,
    # and an <audio> element cannot send headers.
    live = state.jobs.live_job(job_id)
    if live is None:
        job = await anyio.to_thread.run_sync(state.jobs.get, job_id)
        if job.status == "succeeded" and job.request.format == "wav":
            return RedirectResponse(job.public_url, status_code=303)
        if job.finished:
            raise Conflict(
                f"job {job_id} {job.status}; its audio is streamed only while it runs and "
                f"{KEEP_AUDIO_SECONDS:g} s after"
                + (f": fetch {job.public_url}" if job.status == "succeeded" else "")
            )
        raise Conflict(
            f"job {job_id} runs on another server ({job.replica}); its track will be at "
            f"{job.public_url}"
        )
    return StreamingResponse(
        _audio(live),
        media_type="audio/wav",
        headers={"Content-Length": str(live.total_bytes), "Cache-Control": "no-store"},
    )


async def _audio(live: LiveJob) -> AsyncIterator[bytes]:
    """The WAV's bytes as they are decoded. A job that fails or is canceled ends the stream
    short of its Content-Length, so the client sees it broken off, not complete."""
    sent = 0
    while sent < live.total_bytes:
        available = len(live.audio)
        if available > sent:
            chunk = bytes(live.audio[sent:available])
            sent = available
            yield chunk
        elif live.finished_at is not None:
            return
        else:
            await anyio.sleep(_POLL_LIVE / 2)


@router.get(
    "/tracks",
    response_model=TrackPage,
    dependencies=[Depends(check_api_key)],
    summary="Stored tracks, newest first, a page at a time",
    responses=_ERRORS,
)
async def tracks(
    request: Request,
    state: State,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    before: Annotated[str | None, Query(max_length=200)] = None,
) -> TrackPage:
    return await anyio.to_thread.run_sync(
        lambda: list_tracks(
            state.service.storage,
            state.settings.s3_prefix,
            limit=limit,
            before=before,
            base_url=base_url(state, request),
        )
    )
