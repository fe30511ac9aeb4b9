"""``tunesmith endpoint``: the engine behind SageMaker's container contract.

SageMaker starts the image as ``docker run IMAGE serve`` and talks HTTP to port 8080 (or
``SAGEMAKER_BIND_TO_PORT``):

* ``GET /ping`` answers 200 once the model is loaded, 503 before (and after a failed load).
* ``POST /invocations`` takes a `GenerateRequest` as ``application/json``, or as
  ``multipart/form-data`` with the uploads ``input_audio`` and ``melody`` (at most
  ``TUNESMITH_MAX_UPLOAD_BYTES`` each; the body at most ``TUNESMITH_MAX_BODY_BYTES`` beyond
  them), and answers with the encoded track and what its record needs (see
  `tunesmith.aws.protocol`). Uploads are decoded and checked before the request is admitted: a
  bad one is a 4xx naming its field. A track that could not fit the payload limit
  (``TUNESMITH_MAX_RESPONSE_BYTES``: 6 MiB real-time, 4 MB serverless) is refused with 413
  before any compute is spent, never truncated.

An asynchronous request names, in its custom attributes, where the track's record goes
(`tunesmith.aws.protocol.RecordDestination`): SageMaker keeps only the answer's body, so the
container stores the record in S3 itself (boto3, the ``[aws]`` extra; the execution role may
put objects under the track prefix) before answering, and fails the invocation if it cannot.

The model comes from ``/opt/ml/model`` when SageMaker put a saved checkpoint there (a
``config.json``), else from ``TUNESMITH_MODEL``, which may list several (comma-separated, the
first the default; a request names one by ``model``). The models are served as under
``tunesmith serve`` (`tunesmith.pool`): the default loads in a background thread, another
when first asked for (503 ``model_loading`` meanwhile), within ``TUNESMITH_MODEL_MEMORY``;
generation runs off the event loop, and at most ``TUNESMITH_MAX_QUEUE`` requests are admitted
at once (503 with Retry-After beyond).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

import anyio.to_thread
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from tunesmith.admission import Admission
from tunesmith.api.app import base_app
from tunesmith.api.bodies import read_generate_request
from tunesmith.api.health import health_response
from tunesmith.aws.protocol import (
    CUSTOM_ATTRIBUTES_HEADER,
    JSON_TYPE,
    RecordDestination,
    TrackInfo,
    audio_size_bound,
)
from tunesmith.config import Settings, load_settings
from tunesmith.engine.base import Engine
from tunesmith.errors import (
    ConfigError,
    FieldError,
    InvalidRequest,
    NotAcceptable,
    ResponseTooLarge,
    TunesmithError,
    UnsupportedMediaType,
)
from tunesmith.formats import CONTENT_TYPES, NAMES
from tunesmith.pool import ModelPool
from tunesmith.render import render
from tunesmith.schema import AudioFormat, GenerateRequest, TrackRecord
from tunesmith.tracks import RECORD_TYPE
from tunesmith.uploads import MULTIPART, AudioInputs, audio_inputs, is_form

__all__ = [
    "DEFAULT_PORT",
    "MODEL_DIR",
    "EndpointState",
    "acceptable_formats",
    "create_endpoint_app",
    "endpoint_port",
    "endpoint_settings",
    "serve_endpoint",
    "store_record",
]

log = logging.getLogger(__name__)

DEFAULT_PORT: Final = 8080
MODEL_DIR: Final = Path("/opt/ml/model")


def endpoint_port(flag: int | None, environ: Mapping[str, str] = os.environ) -> int:
    """``--port`` if given, else SageMaker's ``SAGEMAKER_BIND_TO_PORT``, else 8080."""
    if flag is not None:
        return flag
    raw = environ.get("SAGEMAKER_BIND_TO_PORT", "").strip()
    if not raw:
        return DEFAULT_PORT
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(f"SAGEMAKER_BIND_TO_PORT: {raw!r} is not a port number")
    return int(raw)


def endpoint_settings(overrides: Mapping[str, Any], model_dir: Path = MODEL_DIR) -> Settings:
    """Settings for the container: a checkpoint in `model_dir` wins over ``TUNESMITH_MODEL``.

    An explicit ``model`` override (the ``--model`` flag) wins over both.
    """
    given = dict(overrides)
    if given.get("model") is None and (model_dir / "config.json").is_file():
        given["model"] = str(model_dir)
    return load_settings(**given)


def _media(value: str) -> tuple[str, frozenset[str], float]:
    """A media type or range as its lowercased type, its non-``q`` parameters and its ``q``
    weight (1 without one, 0 when unreadable)."""
    media, *params = (part.strip() for part in value.split(";"))
    kept: set[str] = set()
    weight = 1.0
    for param in params:
        name, _, number = param.partition("=")
        if name.strip().lower() == "q":
            try:
                weight = float(number)
            except ValueError:
                weight = 0.0
        if param and name.strip() != "q":
            kept.add(param.replace(" ", "").lower())
    return media.lower(), frozenset(kept), weight


def acceptable_formats(accept: str | None) -> list[AudioFormat]:
    """The audio formats an ``Accept`` header admits, most preferred first.

    No header (or ``*/*``, ``audio/*``) admits all, WAV first. As in RFC 9110, the most
    specific range that matches a type gives its weight, and weight 0 excludes it; a range's
    parameters must all be the type's (``audio/ogg`` admits Vorbis and Opus, and
    ``audio/ogg; codecs=opus`` Opus only).
    """
    if accept is None or not accept.strip():
        return list(NAMES)
    ranges = [_media(item) for item in accept.split(",")]
    ranked: dict[AudioFormat, float] = {}
    for fmt in NAMES:
        own, own_params, _ = _media(CONTENT_TYPES[fmt])
        matches = []
        for media, params, weight in ranges:
            if media == own and params <= own_params:
                matches.append((3 + len(params), weight))
            elif media in ("audio/*", "*/*") and not params:
                matches.append((2 if media == "audio/*" else 1, weight))
        if matches and (weight := max(matches)[1]) > 0:
            ranked[fmt] = weight
    return sorted(ranked, key=lambda f: -ranked[f])  # stable: WAV first among equals


def _choose_format(request: GenerateRequest, accept: str | None) -> AudioFormat:
    """The body's ``format`` if it names one, else the caller's preferred audio type."""
    admitted = acceptable_formats(accept)
    if not admitted:
        raise NotAcceptable(
            [FieldError("accept", f"{accept!r} admits no audio type this endpoint produces")],
            "this endpoint answers with "
            + ", ".join(CONTENT_TYPES[f] for f in NAMES)
            + "; the Accept header admits none of them",
        )
    if "format" not in request.model_fields_set:
        return admitted[0]
    if request.format not in admitted:
        raise NotAcceptable(
            [FieldError("accept", f"{accept!r} does not admit {CONTENT_TYPES[request.format]}")]
        )
    return request.format


def _check_content_type(value: str | None) -> None:
    media = (value or "").split(";", 1)[0].strip().lower()
    if media != JSON_TYPE and not is_form(value):
        shown = repr(value) if value else "none"
        raise UnsupportedMediaType(
            [FieldError("content-type", f"must be {JSON_TYPE} or {MULTIPART}, not {shown}")],
            f"POST /invocations takes {JSON_TYPE}, or {MULTIPART} with uploads (got {shown})",
        )


def _record_destination(attributes: str | None) -> RecordDestination | None:
    try:
        return RecordDestination.from_attributes(attributes)
    except ValueError as exc:
        raise InvalidRequest([FieldError("custom-attributes", str(exc))]) from None


def store_record(destination: RecordDestination, rendered: TrackRecord) -> None:
    """Put the track's record where the request asked (blocking; `StorageError` on failure)."""
    try:
        import boto3  # noqa: F401
    except ImportError:
        raise ConfigError(
            "this image cannot store the track's record in S3: boto3 is not installed "
            "(install tunesmith[aws] in the endpoint image)"
        ) from None
    from tunesmith.storage import S3Storage

    storage = S3Storage(destination.bucket)
    record = destination.record(rendered)
    # replace: SageMaker may deliver a request twice; the role may put, not delete
    storage.put(
        destination.key, record.model_dump_json(indent=2).encode(), RECORD_TYPE, replace=True
    )


@dataclass
class EndpointState:
    """What the container's routes share, kept on ``app.state.endpoint``."""

    settings: Settings
    models: ModelPool
    admission: Admission
    on_load_failure: Callable[[], None] | None = field(default=None, repr=False)

    def load_failed(self) -> None:
        """Called from the loader thread when the default model cannot be loaded."""
        if self.on_load_failure is not None:
            self.on_load_failure()

    def check_fits(self, request: GenerateRequest, fmt: AudioFormat, engine: Engine) -> None:
        """Refuse (413) a track whose encoding could exceed the payload limit, before generating."""
        rate, channels = engine.sample_rate, engine.channels
        frames = round(request.track_seconds * rate)  # bpm: whole bars, maybe past duration
        limit = self.settings.max_response_bytes
        if audio_size_bound(fmt, frames, channels, rate) <= limit:
            return
        per_second = audio_size_bound(fmt, rate, channels, rate)
        longest = int(limit / per_second * 10) / 10
        raise ResponseTooLarge(
            [
                FieldError(
                    "duration",
                    f"a {request.duration:g} s {fmt} track cannot fit this endpoint's "
                    f"{limit}-byte response limit; at most about {longest:g} s fits",
                )
            ]
        )

    def render(
        self,
        engine: Engine,
        request: GenerateRequest,
        fmt: AudioFormat,
        inputs: AudioInputs,
        destination: RecordDestination | None = None,
    ) -> tuple[bytes, TrackInfo]:
        """Generate and encode one track on `engine` (the request's model, leased), storing its
        record at `destination` if one is given (blocking; runs in a worker thread)."""
        model = self.models.get(request.model).id
        audio = render(engine, request, fmt, inputs=inputs, model=model)
        if destination is not None:
            store_record(destination, audio.record)
        return audio.data, TrackInfo.from_record(audio.record)


def create_endpoint_app(settings: Settings, *, engine: Engine | None = None) -> FastAPI:
    """The container's app. The default model loads in a background thread when the app
    starts (``/ping`` answers 503 until then); `engine` gives its engine (already `setup` to
    skip that; its caller closes it)."""
    given = {} if engine is None else {next(iter(settings.models)): engine}
    models = ModelPool(settings, engines=given)
    state = EndpointState(settings=settings, models=models, admission=Admission(settings.max_queue))
    models.on_default_failure = state.load_failed

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        models.start()
        yield
        models.close()

    app = base_app(
        "tunesmith endpoint",
        "MusicGen behind SageMaker's container contract (/ping, /invocations)",
        lifespan,
    )
    app.state.endpoint = state

    @app.get("/ping", summary="200 once the default model has loaded, 503 until then")
    async def ping() -> JSONResponse:
        return health_response(models, state.admission.in_flight)

    @app.post("/invocations", summary="Generate one track; the answer is the encoded audio")
    async def invocations(request: Request) -> Response:
        _check_content_type(request.headers.get("content-type"))
        destination = _record_destination(request.headers.get(CUSTOM_ATTRIBUTES_HEADER))
        parsed, files = await read_generate_request(request, settings)
        fmt = _choose_format(parsed, request.headers.get("accept"))
        with models.lease(parsed.model) as lease:  # never unloaded while it renders
            engine = lease.ready()  # 503 model_loading while it loads (its load started)
            state.check_fits(parsed, fmt, engine)
            name = lease.model.id
            if files:  # decoding takes a while: off the event loop
                inputs = await anyio.to_thread.run_sync(
                    partial(audio_inputs, parsed, files, engine, model=name)
                )
            else:
                inputs = audio_inputs(parsed, files, engine, model=name)
            with state.admission.held():
                audio, info = await anyio.to_thread.run_sync(
                    state.render, engine, parsed, fmt, inputs, destination
                )
        log.info(
            "rendered %.1f s of %s, seed %d: %d bytes", info.duration, fmt, info.seed, len(audio)
        )
        return Response(
            audio,
            media_type=CONTENT_TYPES[fmt],
            headers={CUSTOM_ATTRIBUTES_HEADER: info.to_attributes()},
        )

    return app


def serve_endpoint(overrides: Mapping[str, Any], *, port: int | None = None) -> int:
    """Run the container server until interrupted (what ``tunesmith endpoint`` does); the exit
    status.

    Raises `TunesmithError` when the model cannot be loaded, after the server has stopped.
    """
    import uvicorn

    from tunesmith.api.server import run_until_stopped

    settings = endpoint_settings(overrides)
    bind_port = endpoint_port(port)
    app = create_endpoint_app(settings)
    # SageMaker's front end keeps connections open between invocations: do not drop them first.
    config = uvicorn.Config(
        app, host=settings.host, port=bind_port, log_level="info", timeout_keep_alive=75
    )
    state: EndpointState = app.state.endpoint

    def stop_on_load_failure(server: Any) -> None:
        state.on_load_failure = lambda: setattr(server, "should_exit", True)

    log.info(
        "loading %s; serving /ping and /invocations on %s:%d",
        settings.model,
        settings.host,
        bind_port,
    )
    code = run_until_stopped(config, on_start=stop_on_load_failure)
    if state.models.default.load_error is not None:
        raise TunesmithError(state.models.default.load_error)
    return code
