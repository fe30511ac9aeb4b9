"""Which SageMaker endpoint makes a request's track: the Lambda's routes by model.

The CDK app deploys one endpoint per model. With several it gives the function the map,
``TUNESMITH_ENDPOINTS`` (`Settings.endpoints`): ``{"model id": "endpoint name"}``, the default
first, each id the one its endpoint serves its checkpoint under (`tunesmith.engine.registry`).
A request naming a model (`GenerateRequest.model`) goes to that model's endpoint, one naming
none to the default's, and travels naming the model it was routed to, so its record (and its
job) says which model made it. An id not in the map is refused before any endpoint is called
(`parse_generate_request(..., models=ids)`: 422 on ``model``, listing the ids).

With one model the function gets ``TUNESMITH_ENDPOINT_NAME`` alone: every request goes to that
endpoint, whose model the function does not know, so a ``model`` it names is left for the
endpoint to judge. This module imports no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tunesmith.aws.sagemaker import SageMakerEndpoint

if TYPE_CHECKING:
    from tunesmith.config import Settings
    from tunesmith.schema import GenerateRequest

__all__ = ["ModelRoutes"]


@dataclass(frozen=True)
class ModelRoutes:
    """`by_model`: each routable model id's endpoint, the default first; empty, every request
    goes to `default` (the single-endpoint form)."""

    default: SageMakerEndpoint
    by_model: Mapping[str, SageMakerEndpoint] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings, *, timeout: float) -> ModelRoutes | None:
        """The routes ``TUNESMITH_ENDPOINTS`` or ``TUNESMITH_ENDPOINT_NAME`` give (None: neither,
        the engine runs in the function); `timeout` is each call's wait."""
        if settings.endpoints:
            # ids that share an endpoint share its client too
            by_name: dict[str, SageMakerEndpoint] = {}
            by_model = {
                model: by_name.setdefault(name, SageMakerEndpoint(name, timeout=timeout))
                for model, name in settings.endpoints.items()
            }
            return cls(next(iter(by_model.values())), by_model)
        if settings.endpoint_name:
            return cls(SageMakerEndpoint(settings.endpoint_name, timeout=timeout))
        return None

    @property
    def ids(self) -> list[str]:
        """The model ids a request may name (empty: the endpoint judges any)."""
        return list(self.by_model)

    @property
    def endpoints(self) -> list[SageMakerEndpoint]:
        """Every endpoint routed to, once each."""
        unique = {id(e): e for e in (self.default, *self.by_model.values())}
        return list(unique.values())

    def route(self, request: GenerateRequest) -> tuple[GenerateRequest, SageMakerEndpoint]:
        """The endpoint that makes `request`, and the request naming the model it was routed
        to (the default's id when it named none). Its `model` was checked against `ids`."""
        if not self.by_model:
            return request, self.default
        model = request.model or next(iter(self.by_model))
        return request.model_copy(update={"model": model}), self.by_model[model]

    def listing(self) -> dict[str, Any]:
        """``GET /models``: each routable model's id, whether it is the default, its endpoint."""
        models = [
            {"id": model, "default": index == 0, "endpoint": endpoint.name}
            for index, (model, endpoint) in enumerate(self.by_model.items())
        ]
        return {"default": models[0]["id"] if models else None, "models": models}
