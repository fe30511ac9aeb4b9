"""The FastAPI application factory and its lifecycle (the model loads in the background)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from tunesmith import __version__
from tunesmith.api.auth import ApiKeys, RateLimit
from tunesmith.api.errors import install_error_handlers
from tunesmith.api.jobs import router as jobs_router
from tunesmith.api.observe import Metrics, RequestLog
from tunesmith.api.routes import router
from tunesmith.api.state import AppState
from tunesmith.config import Settings
from tunesmith.engine import engine_for
from tunesmith.engine.base import Engine
from tunesmith.jobs import JobManager
from tunesmith.service import TrackService
from tunesmith.storage import Storage, create_storage

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]

__all__ = ["AppState", "base_app", "create_app"]


def base_app(title: str, summary: str, lifespan: Lifespan) -> FastAPI:
    """The FastAPI app every tunesmith server starts from (the API here, the SageMaker
    container in `tunesmith.aws.endpoint`): its version, JSON errors for every failure, and
    /docs and /redoc from the Swagger UI and ReDoc that fastapi-offline ships, not a CDN
    (self-hosted servers and VPC endpoints may have no internet)."""
    app = FastAPIOffline(title=title, version=__version__, summary=summary, lifespan=lifespan)
    install_error_handlers(app)
    return app


def create_app(
    settings: Settings,
    *,
    engine: Engine | None = None,
    storage: Storage | None = None,
) -> FastAPI:
    """Build the app. The engine loads in a background thread when the app starts, so
    ``/healthz`` answers 503 until it is ready; pass an engine already `setup` to skip that.

    Storage is not touched here: ``tunesmith serve`` calls `Storage.check` before it starts.
    """
    owned = engine is None
    engine = engine or engine_for(settings)
    storage = storage or create_storage(settings)
    service = TrackService(settings, engine, storage)
    jobs = JobManager(settings, service)
    metrics = Metrics(service)
    metrics.watch_jobs(jobs)
    state = AppState(
        settings=settings,
        service=service,
        jobs=jobs,
        metrics=metrics,
        keys=ApiKeys.from_settings(settings),
        rate=RateLimit(settings.rate_limit),
    )

    owns_engine = owned

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not engine.ready:
            engine.load_in_background(state.load_failed)
        yield
        # uvicorn has stopped taking requests and given those in flight their grace period
        await anyio.to_thread.run_sync(jobs.close)  # unfinished jobs are recorded failed
        if owns_engine:
            engine.close()  # what still runs fails at its next step, storing nothing
        await anyio.to_thread.run_sync(service.drain, 10.0)

    app = base_app(
        "tunesmith",
        "Text to music with MusicGen, stored in local or S3-compatible storage",
        lifespan,
    )
    app.state.tunesmith = state
    app.include_router(router)
    app.include_router(jobs_router)
    app.add_middleware(RequestLog, metrics=state.metrics)
    return app
