"""The health answer: ``/healthz`` in the API, ``/ping`` in the SageMaker container."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi.responses import JSONResponse

if TYPE_CHECKING:
    from tunesmith.engine.base import Engine

__all__ = ["health_response"]


def health_response(
    engine: Engine, in_flight: int, extra: dict[str, Any] | None = None
) -> JSONResponse:
    """200 with the device once the model is loaded; 503 with Retry-After while it loads, or
    with the reason after it failed to load. (``/healthz`` here, ``/ping`` in the container.)
    `extra` adds what this server allows (the page reads it)."""
    body: dict[str, Any] = {"model": engine.model_name, "in_flight": in_flight, **(extra or {})}
    if engine.ready:
        body |= {
            "status": "ok",
            "device": engine.device,
            "precision": engine.precision,
            "kernels": engine.kernels.path,
            "step": engine.step_kind,
            "sample_rate": engine.sample_rate,
            "channels": engine.channels,
            "continues_audio": engine.continues_audio,
            "follows_melody": engine.follows_melody,
        }
        return JSONResponse(body)
    if engine.load_error is not None:
        body |= {"status": "error", "message": engine.load_error}
    else:
        body |= {"status": "loading", "message": "the model is loading"}
    return JSONResponse(body, status_code=503, headers={"Retry-After": "10"})
