"""The FastAPI application factory and its lifecycle (the default model loads in the
background; the others when first asked for)."""

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
from tunesmith.api.models import router as models_router
from tunesmith.api.observe import Metrics, RequestLog
from tunesmith.api.routes import router
from tunesmith.api.state import AppState
from tunesmith.config import Settings
from tunesmith.engine.base import Engine
from tunesmith.jobs import JobManager
from tunesmith.pool import ModelPool
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
    """Build the app for the models `settings` serve. The default model loads in a background
    thread when the app starts, so ``/healthz`` answers 503 until it is ready; `engine` gives
    the default model's engine (already `setup` to skip that; its caller closes it). The
    other models load when a request first names one.

    Storage is not touched here: ``tunesmith serve`` calls `Storage.check` before it starts.
    """
    given = {} if engine is None else {next(iter(settings.models)): engine}
    models = ModelPool(settings, engines=given)
    storage = storage or create_storage(settings)
    service = TrackService(settings, models, storage)
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

    models.on_default_failure = state.load_failed

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        models.start()
        yield
        # uvicorn has stopped taking requests and given those in flight their grace period
        await anyio.to_thread.run_sync(jobs.close)  # unfinished jobs are recorded failed
        models.close()  # what still runs fails at its next step, storing nothing
        await anyio.to_thread.run_sync(service.drain, 10.0)

    app = base_app(
        "tunesmith",
        "Text to music with MusicGen, stored in local or S3-compatible storage",
        lifespan,
    )
    app.state.tunesmith = state
    app.include_router(router)
    app.include_router(jobs_router)
    app.include_router(models_router)
    app.add_middleware(RequestLog, metrics=state.metrics)
    return app
