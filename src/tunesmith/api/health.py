"""The health answer: ``/healthz`` in the API, ``/ping`` in the SageMaker container."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi.responses import JSONResponse

if TYPE_CHECKING:
    from tunesmith.pool import ModelPool

__all__ = ["health_response"]


def health_response(
    models: ModelPool, in_flight: int, extra: dict[str, Any] | None = None
) -> JSONResponse:
    """200 once the default model has loaded (what it reported then, while the memory budget
    may have unloaded it since); 503 with Retry-After while it first loads, or with the reason
    after it failed to load. ``models`` gives each served model's state.
    (``/healthz`` here, ``/ping`` in the container.) `extra` adds what this server allows
    (the page reads it)."""
    default = models.default
    body: dict[str, Any] = {
        "model": default.checkpoint,
        "in_flight": in_flight,
        **(extra or {}),
        "models": [
            {
                "id": model.id,
                "default": model.default,
                "state": model.state,
                "loaded": model.loaded,
                "precision": model.described.get("precision", models.settings.precision),
                "in_flight": model.in_flight,
            }
            for model in models.models.values()
        ],
    }
    if default.state == "failed":
        body |= {"status": "error", "message": default.load_error}
    elif default.loaded_once:
        return JSONResponse(body | {"status": "ok", **default.described})
    else:
        body |= {"status": "loading", "message": "the model is loading"}
    return JSONResponse(body, status_code=503, headers={"Retry-After": "10"})
