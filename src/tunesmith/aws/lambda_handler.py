"""The Lambda tier: ``handler(event, context)`` behind API Gateway's ``POST /generate``.

It validates the body with the one contract (`tunesmith.schema.parse_generate_request`), has
the model tier render the track, stores it in S3 and answers with the same JSON as the local
API (`GenerateResponse`); errors are the same JSON too, with the same statuses. Configured by
the environment (`tunesmith.config.Settings`):

    TUNESMITH_S3_BUCKET, TUNESMITH_S3_PREFIX, TUNESMITH_URL_MODE   where tracks go, which URLs
    TUNESMITH_MAX_DURATION, TUNESMITH_MAX_BODY_BYTES                 request limits
    TUNESMITH_ENDPOINT_NAME        the SageMaker endpoint; unset runs the engine in this
                                   function (the container-image variant, which has torch)
    TUNESMITH_INVOKE_MODE          sync: answer 200 with the stored track;
                                   async: queue it (InvokeEndpointAsync), answer 202 at once
                                   with the URLs where it will appear (`GenerateAccepted`)
    TUNESMITH_INVOKE_TIMEOUT       seconds to wait for the endpoint (async: its time limit)

With an endpoint configured this module never imports torch or numpy, so the function
packages small (tunesmith, pydantic, boto3).
"""

from __future__ import annotations

import logging
import secrets
import threading
import uuid
from typing import TYPE_CHECKING, Any

from tunesmith import __version__
from tunesmith.aws.proxy import ProxyRequest, error_response, json_response
from tunesmith.aws.sagemaker import SageMakerEndpoint, parse_s3_uri
from tunesmith.config import Settings, load_settings
from tunesmith.errors import (
    ConfigError,
    MethodNotAllowed,
    NotFound,
    TunesmithError,
    UpstreamError,
)
from tunesmith.schema import (
    MAX_SEED,
    GenerateAccepted,
    GenerateRequest,
    GenerateResponse,
    TrackRecord,
    parse_generate_request,
)
from tunesmith.storage import S3Storage
from tunesmith.tracks import now, store_track

if TYPE_CHECKING:
    from tunesmith.service import TrackService

__all__ = ["GenerateFunction", "handler", "reset"]

log = logging.getLogger(__name__)

ROUTE = "/generate"


class GenerateFunction:
    """``POST /generate`` for one configuration; `handle` turns a proxy event into an answer."""

    def __init__(
        self,
        settings: Settings,
        *,
        storage: S3Storage | None = None,
        endpoint: SageMakerEndpoint | None = None,
    ) -> None:
        if not settings.s3_bucket:
            raise ConfigError("TUNESMITH_S3_BUCKET: the Lambda function needs a bucket")
        if settings.invoke_mode == "async" and not settings.endpoint_name:
            raise ConfigError("TUNESMITH_INVOKE_MODE=async needs TUNESMITH_ENDPOINT_NAME")
        self.settings = settings
        self.storage = storage or S3Storage(
            settings.s3_bucket,
            url_mode=settings.url_mode,
            presign_expires=settings.presign_expires,
        )
        if endpoint is None and settings.endpoint_name:
            # the async call only queues the request; its time limit goes to SageMaker
            wait = settings.invoke_timeout if settings.invoke_mode == "sync" else 15.0
            endpoint = SageMakerEndpoint(settings.endpoint_name, timeout=wait)
        self.endpoint = endpoint
        self._service: TrackService | None = None
        self._service_lock = threading.Lock()

    @classmethod
    def from_environment(cls) -> GenerateFunction:
        """Built from ``TUNESMITH_*`` variables; `ConfigError` names a bad one."""
        return cls(load_settings())

    # -- the request flow --------------------------------------------------------------------

    def handle(self, event: Any, context: Any = None) -> dict[str, Any]:
        """One proxy event in, one proxy response out; never raises."""
        request_id = getattr(context, "aws_request_id", None)
        try:
            proxy = ProxyRequest.from_event(event, max_body_bytes=self.settings.max_body_bytes)
            request_id = proxy.request_id or request_id
            if proxy.resource.rstrip("/") != ROUTE:
                raise NotFound(f"no route {proxy.resource!r}; this API serves POST {ROUTE}")
            if proxy.method != "POST":
                raise MethodNotAllowed(f"{ROUTE} takes POST, not {proxy.method or 'nothing'}")
            request = parse_generate_request(proxy.body, max_duration=self.settings.max_duration)
            if self.settings.invoke_mode == "async":
                accepted = self.submit(request)
                log.info("request %s: queued %s", request_id, accepted.s3_url)
                return json_response(202, accepted.model_dump(mode="json"))
            response = self.generate(request)
            log.info("request %s: stored %s", request_id, response.s3_url)
            return json_response(200, response.model_dump(mode="json"))
        except TunesmithError as exc:
            level = logging.WARNING if exc.status >= 500 else logging.INFO
            log.log(level, "request %s: %d %s: %s", request_id, exc.status, exc.code, exc.message)
            return error_response(exc)
        except Exception:
            log.exception("request %s: unexpected error", request_id)
            return json_response(
                500, {"error": "internal_error", "message": "internal error; see the function log"}
            )

    def generate(self, request: GenerateRequest) -> GenerateResponse:
        """Render the track (endpoint or in-process), store it atomically, say where it is."""
        if self.endpoint is None:
            return self._in_process().generate_sync(request, base_url="")
        rendered = self.endpoint.invoke(request)
        info = rendered.info
        record = TrackRecord(
            id="",
            created=now(),
            request=request.model_copy(update={"seed": info.seed, "format": info.format}),
            model=info.model,
            engine={"tunesmith": __version__, "endpoint": self.settings.endpoint_name or ""},
            seed=info.seed,
            duration=info.duration,
            sample_rate=info.sample_rate,
            channels=info.channels,
            format=info.format,
            content_type=rendered.content_type,
            audio_key="",
        )
        return store_track(self.storage, self.settings.s3_prefix, rendered.audio, record)

    def submit(self, request: GenerateRequest) -> GenerateAccepted:
        """Queue the request on the async endpoint; the URLs are where SageMaker will write."""
        if self.endpoint is None:
            raise ConfigError("asynchronous generation needs TUNESMITH_ENDPOINT_NAME")
        # the seed is chosen here, so the answer can report it at once
        seed = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED + 1)
        request = request.model_copy(update={"seed": seed})
        track_id = uuid.uuid4().hex
        location = self.endpoint.submit(
            request,
            inference_id=track_id,
            filename=f"track.{request.format}",
            timeout=max(1, min(3600, round(self.settings.invoke_timeout))),
        )
        bucket, key = parse_s3_uri(location)
        if bucket != self.storage.bucket or not key.startswith(self.settings.s3_prefix):
            raise UpstreamError(
                f"SageMaker will write to {location}, outside s3://{self.storage.bucket}/"
                f"{self.settings.s3_prefix}: the endpoint's S3 output path is misconfigured"
            )
        where = self.storage.locate(key)
        return GenerateAccepted(
            id=track_id,
            s3_url=where.s3_url or location,
            public_url=where.public_url,
            duration=request.duration,
            format=request.format,
            seed=seed,
        )

    def close(self) -> None:
        """Stop the in-process engine's decode thread, if one was started."""
        with self._service_lock:
            if self._service is not None:
                self._service.engine.close()
                self._service = None

    def _in_process(self) -> TrackService:
        """The engine in this function (the container-image variant), loaded on first use."""
        with self._service_lock:
            if self._service is None:
                try:
                    from tunesmith.engine import engine_for
                    from tunesmith.service import TrackService
                except ImportError as exc:
                    raise ConfigError(
                        "TUNESMITH_ENDPOINT_NAME is not set, and this function cannot run the "
                        f"engine itself ({exc.name} is not installed): set the endpoint name"
                    ) from None
                engine = engine_for(self.settings)
                engine.setup()
                self._service = TrackService(self.settings, engine, self.storage)
            return self._service


_current: GenerateFunction | None = None
_current_lock = threading.Lock()


def handler(event: Any, context: Any) -> dict[str, Any]:
    """The Lambda entry point (``tunesmith.aws.lambda_handler.handler``)."""
    try:
        function = _function()
    except TunesmithError as exc:  # a bad configuration: answer, and re-read it next time
        log.error("configuration: %s", exc.message)
        return error_response(exc)
    return function.handle(event, context)


def _function() -> GenerateFunction:
    global _current
    with _current_lock:
        if _current is None:
            logging.getLogger("tunesmith").setLevel(logging.INFO)
            _current = GenerateFunction.from_environment()
        return _current


def reset() -> None:
    """Forget the configured function: the next event reads the environment again."""
    global _current
    with _current_lock:
        if _current is not None:
            _current.close()
        _current = None
