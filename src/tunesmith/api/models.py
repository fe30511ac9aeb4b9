"""``GET /models``: the served models, their abilities, and whether each is loaded."""

from __future__ import annotations

from typing import Literal

import anyio.to_thread
from fastapi import APIRouter
from pydantic import BaseModel, Field

from tunesmith.api.routes import State
from tunesmith.errors import TunesmithError
from tunesmith.pool import ModelPool, ServedModel

__all__ = ["ModelAbilities", "ModelInfo", "ModelList", "describe_models", "router"]

router = APIRouter()


class ModelAbilities(BaseModel):
    """What a model can do: from its checkpoint's config, and once loaded, from its engine."""

    family: str
    text: bool
    melody: bool = Field(description="Follows a 'melody' upload")
    continuation: bool = Field(description="Continues an 'input_audio' upload")
    stereo: bool
    sample_rate: int
    frame_rate: int


class ModelInfo(BaseModel):
    """One served model."""

    id: str = Field(description="What a request's 'model' names")
    checkpoint: str = Field(description="What it loads from: a hub id or a directory")
    default: bool = Field(description="What a request without 'model' gets")
    state: Literal["unloaded", "loading", "loaded", "failed"]
    loaded: bool
    precision: str = Field(description="The engine's, once loaded; else the configured one")
    in_flight: int = Field(description="Requests, jobs and streams on it now")
    memory_bytes: int | None = Field(
        description="Estimated memory: its parameters at the served precision (the decoder's; "
        "the text encoder and codec at fp32), counted from its weight files"
    )
    abilities: ModelAbilities | None = Field(description="None when its files cannot be read")
    error: str | None = Field(None, description="Why it cannot be loaded, if it cannot")


class ModelList(BaseModel):
    """The served models, the default first, and the memory budget they share."""

    default: str = Field(description="The id a request without 'model' gets")
    models: list[ModelInfo]
    memory_limit: int | None = Field(description="TUNESMITH_MODEL_MEMORY in bytes; None: none")
    memory_used: int = Field(description="The estimates of the models loaded or loading")


@router.get(
    "/models",
    response_model=ModelList,
    summary="The served models: the ids a request's 'model' names, abilities, whether loaded",
)
async def models(state: State) -> ModelList:
    return await anyio.to_thread.run_sync(describe_models, state.service.models)


def describe_models(pool: ModelPool) -> ModelList:
    """Every served model as `GET /models` lists it (reads configs, never loads a model)."""
    return ModelList(
        default=pool.default.id,
        models=[_info(pool, model) for model in pool.models.values()],
        memory_limit=pool.memory_limit,
        memory_used=pool.memory_used,
    )


def _info(pool: ModelPool, model: ServedModel) -> ModelInfo:
    abilities: ModelAbilities | None = None
    error = model.load_error
    try:
        found = pool.abilities(model).as_dict()
    except TunesmithError as exc:  # its files cannot be had: said, not a 500
        error = exc.message
    else:
        if model.described:  # the engine's own word, once it has loaded, wins over the config
            found["melody"] = bool(model.described["follows_melody"])
            found["continuation"] &= bool(model.described["continues_audio"])
        abilities = ModelAbilities(**found)
    return ModelInfo(
        id=model.id,
        checkpoint=model.checkpoint,
        default=model.default,
        state=model.state,
        loaded=model.loaded,
        precision=str(model.described.get("precision", pool.settings.precision)),
        in_flight=model.in_flight,
        memory_bytes=pool.estimate(model) if abilities is not None else None,
        abilities=abilities,
        error=error,
    )
