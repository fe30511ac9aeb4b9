"""The Lambda tier: ``handler(event, context)`` behind API Gateway's ``POST /generate`` (and,
on the async variant, ``POST /jobs``, ``GET /jobs/{id}`` and ``DELETE /jobs/{id}``; with
several models, ``GET /models``).

It validates the body with the one contract (`tunesmith.schema.parse_generate_request`, or
`tunesmith.uploads.parse_generate_form` for ``multipart/form-data``), has the model tier render
the track, stores it and its record in S3 and answers with the same JSON as the local API
(`GenerateResponse`); errors are the same JSON too, with the same statuses. Configured by the
environment (`tunesmith.config.Settings`, plus `tunesmith.aws.deployment` 's variables):

    TUNESMITH_S3_BUCKET, TUNESMITH_S3_PREFIX, TUNESMITH_URL_MODE   where tracks go, which URLs
    TUNESMITH_MAX_DURATION, TUNESMITH_MAX_BODY_BYTES,
    TUNESMITH_MAX_UPLOAD_BYTES                                     request limits
    TUNESMITH_ENDPOINT_NAME        the SageMaker endpoint; unset runs the engine in this
                                   function (the container-image variant, which has torch)
    TUNESMITH_ENDPOINTS            instead, one endpoint per model: JSON {"model id":
                                   "endpoint name"}, the default first; a request goes to its
                                   `model`'s (`tunesmith.aws.routes`), and ``GET /models``
                                   lists them. In the function, ``TUNESMITH_MODEL``'s list.
    TUNESMITH_INVOKE_MODE          sync: answer 200 with the stored track;
                                   async: queue it (InvokeEndpointAsync), answer 202 at once
                                   with a `Job` and ``Location: <base>/jobs/{id}`` (the stage
                                   first, as the client's URL has it); the job's status is
                                   ``GET /jobs/{id}`` (`tunesmith.aws.async_jobs`)
    TUNESMITH_INVOKE_TIMEOUT       seconds to wait for the endpoint (async: its time limit)
    TUNESMITH_VARIANT, TUNESMITH_TIME_LIMIT   the deployment, for refusals that say what it
                                   allows (a duration too long for it names the async variant)

Jobs exist on the async variant only: elsewhere ``/jobs`` answers 404 naming it (the track
is made while the request waits: ``POST /generate``). Nowhere is there ``/jobs/{id}/events``
or ``/jobs/{id}/audio``: SageMaker writes the audio to S3 only once it is done (404).

Uploads: API Gateway hands a form over base64-encoded (the API lists ``multipart/form-data``
in ``binaryMediaTypes``). The function checks its fields and the uploads' sizes, not their
audio (it has no numpy; the model tier decodes them and refuses a bad one naming its field),
and forwards the validated request: as JSON without uploads, else as a form
(`tunesmith.aws.protocol.invocation_body`), refused with 413 beforehand when it could not fit
SageMaker Serverless's 4 MB. On the async variant a form, too large to go inline (128 kB),
is stored as ``music-inputs/<id>.form`` with its content type and queued as the request's
S3 input location: InvokeEndpointAsync hands the container that object with the ContentType
given, so long continuations work there as everywhere (the bucket expires those inputs).

With an endpoint configured this module never imports torch or numpy, so the function
packages small (tunesmith, pydantic, python-multipart, boto3).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tunesmith import __version__
from tunesmith.aws.async_jobs import AsyncJobs
from tunesmith.aws.deployment import Deployment
from tunesmith.aws.protocol import RenderedTrack, invocation_body
from tunesmith.aws.proxy import ProxyRequest, error_response, json_response
from tunesmith.aws.routes import ModelRoutes
from tunesmith.aws.sagemaker import SageMakerEndpoint
from tunesmith.config import Settings, load_settings
from tunesmith.errors import (
    ConfigError,
    MethodNotAllowed,
    NotFound,
    TunesmithError,
    UpstreamError,
)
from tunesmith.schema import (
    GenerateRequest,
    GenerateResponse,
    TrackRecord,
    parse_generate_request,
)
from tunesmith.storage import S3Storage
from tunesmith.tracks import new_record, store_track
from tunesmith.uploads import UPLOAD_FIELDS, check_uploads, is_form, parse_generate_form

if TYPE_CHECKING:
    from tunesmith.service import TrackService

__all__ = ["GenerateFunction", "handler", "reset"]

log = logging.getLogger(__name__)

ROUTE = "/generate"
JOBS = "/jobs"
JOB = "/jobs/{id}"
MODELS = "/models"
_NO_JOBS = (
    "jobs need the async variant (cdk deploy -c variant=async); this deployment makes the "
    f"track while POST {ROUTE} waits, and answers with it"
)
_ONE_ENDPOINT = (
    "this deployment sends every request to one SageMaker endpoint, which serves one model; "
    "deploy several (cdk deploy -c model=A,B) to choose one per request"
)
_NO_STREAM = (
    "the async variant cannot stream a job's events or audio: SageMaker writes the track to S3 "
    "only once it is done; poll GET /jobs/{id}"
)


class GenerateFunction:
    """The API for one configuration (``POST /generate``; jobs on the async variant);
    `handle` turns a proxy event into an answer."""

    def __init__(
        self,
        settings: Settings,
        *,
        storage: S3Storage | None = None,
        routes: ModelRoutes | None = None,
        deployment: Deployment | None = None,
    ) -> None:
        if not settings.s3_bucket:
            raise ConfigError("TUNESMITH_S3_BUCKET: the Lambda function needs a bucket")
        if settings.invoke_mode == "async" and not (settings.endpoint_name or settings.endpoints):
            raise ConfigError(
                "TUNESMITH_INVOKE_MODE=async needs TUNESMITH_ENDPOINT_NAME or TUNESMITH_ENDPOINTS"
            )
        self.settings = settings
        self.deployment = deployment or Deployment()
        self.storage = storage or S3Storage(
            settings.s3_bucket,
            url_mode=settings.url_mode,
            presign_expires=settings.presign_expires,
        )
        if routes is None:
            # the async call only queues the request; its time limit goes to SageMaker
            wait = settings.invoke_timeout if settings.invoke_mode == "sync" else 15.0
            routes = ModelRoutes.from_settings(settings, timeout=wait)
        self.routes = routes
        self.jobs: AsyncJobs | None = None
        if settings.invoke_mode == "async" and routes is not None:
            self.jobs = AsyncJobs(
                self.storage,
                prefix=settings.s3_prefix,
                time_limit=max(1, min(3600, round(settings.invoke_timeout))),
            )
        self._service: TrackService | None = None
        self._service_lock = threading.Lock()

    @classmethod
    def from_environment(cls) -> GenerateFunction:
        """Built from ``TUNESMITH_*`` variables; `ConfigError` names a bad one."""
        settings = load_settings()
        return cls(settings, deployment=Deployment.from_settings(settings))

    # -- the request flow --------------------------------------------------------------------

    def handle(self, event: Any, context: Any = None) -> dict[str, Any]:
        """One proxy event in, one proxy response out; never raises."""
        request_id = getattr(context, "aws_request_id", None)
        settings = self.settings
        try:
            proxy = ProxyRequest.from_event(
                event,
                max_body_bytes=settings.max_body_bytes,
                max_form_bytes=settings.max_body_bytes
                + len(UPLOAD_FIELDS) * settings.max_upload_bytes,
            )
            request_id = proxy.request_id or request_id
            return self.route(proxy, request_id)
        except TunesmithError as exc:
            level = logging.WARNING if exc.status >= 500 else logging.INFO
            log.log(level, "request %s: %d %s: %s", request_id, exc.status, exc.code, exc.message)
            return error_response(exc)
        except Exception:
            log.exception("request %s: unexpected error", request_id)
            return json_response(
                500, {"error": "internal_error", "message": "internal error; see the function log"}
            )

    def route(self, proxy: ProxyRequest, request_id: str | None) -> dict[str, Any]:
        """The answer to one parsed request (errors raised as `TunesmithError`)."""
        resource = proxy.resource.rstrip("/")
        if resource in (ROUTE, JOBS):
            if proxy.method != "POST":
                raise MethodNotAllowed(f"{resource} takes POST, not {proxy.method or 'nothing'}")
            if resource == JOBS and self.jobs is None:
                raise NotFound(f"no route POST {JOBS}: {_NO_JOBS}")
            request, files = self.parse(proxy)
            if self.jobs is not None and self.routes is not None:
                job = self.jobs.submit(*self.routes.route(request), files)
                log.info("request %s: queued job %s for %s", request_id, job.id, job.s3_url)
                location = f"{proxy.base_path}{JOBS}/{job.id}"  # the stage first, as sent
                return json_response(202, job.model_dump(mode="json"), {"Location": location})
            response = self.generate(request, files)
            log.info("request %s: stored %s", request_id, response.s3_url)
            return json_response(200, response.model_dump(mode="json"))
        if resource == JOB:
            if self.jobs is None:
                raise NotFound(f"no route {proxy.method} {JOB}: {_NO_JOBS}")
            job_id = proxy.path_parameters.get("id", "")
            if proxy.method == "GET":
                return json_response(200, self.jobs.get(job_id).model_dump(mode="json"))
            if proxy.method == "DELETE":
                self.jobs.cancel(job_id)
            raise MethodNotAllowed(f"{JOB} takes GET or DELETE, not {proxy.method or 'nothing'}")
        if resource.startswith(JOBS + "/"):
            raise NotFound(f"no route {proxy.resource!r}: {_NO_STREAM if self.jobs else _NO_JOBS}")
        if resource == MODELS:
            if not self.model_ids:
                raise NotFound(f"no route {MODELS}: {_ONE_ENDPOINT}")
            if proxy.method != "GET":
                raise MethodNotAllowed(f"{MODELS} takes GET, not {proxy.method or 'nothing'}")
            return json_response(200, self.models())
        routes = f"POST {ROUTE}" + (f", POST {JOBS}, GET and DELETE {JOB}" if self.jobs else "")
        routes += f", GET {MODELS}" if self.model_ids else ""
        raise NotFound(f"no route {proxy.resource!r}; this API serves {routes}")

    @property
    def model_ids(self) -> list[str]:
        """The model ids a request may name: the routed endpoints', or the function's own
        (`Settings.models`) when the engine runs here; empty for one endpoint, which judges."""
        if self.routes is not None:
            return self.routes.ids
        return list(self.settings.models)

    def models(self) -> dict[str, Any]:
        """``GET /models``: the models this function can route, as it was configured."""
        if self.routes is not None:
            return self.routes.listing()
        served = self.settings.models
        models = [
            {"id": model, "default": index == 0, "checkpoint": checkpoint}
            for index, (model, checkpoint) in enumerate(served.items())
        ]
        return {"default": next(iter(served)), "models": models}

    def parse(self, proxy: ProxyRequest) -> tuple[GenerateRequest, dict[str, bytes]]:
        """The validated request and its uploads (sizes checked, audio not decoded)."""
        # this deployment's limit, its refusal saying what the variant allows
        limit = self.deployment.duration_limit(self.settings.max_duration)
        if proxy.content_type is not None and is_form(proxy.content_type):
            request, files = parse_generate_form(
                proxy.body,
                proxy.content_type,
                max_duration=limit,
                max_upload_bytes=self.settings.max_upload_bytes,
                models=self.model_ids,
            )
        else:
            request = parse_generate_request(proxy.body, max_duration=limit, models=self.model_ids)
            files = {}
            check_uploads(request, files)
        return request, files

    def generate(
        self, request: GenerateRequest, files: Mapping[str, bytes] | None = None
    ) -> GenerateResponse:
        """Render the track (endpoint or in-process), store it and its record, say where."""
        files = dict(files or {})
        if self.routes is None:
            service = self._in_process()
            inputs = service.audio_inputs(request, files)
            return service.generate_sync(request, "", None, inputs)
        request, endpoint = self.routes.route(request)
        body, content_type = invocation_body(request, files)
        self.deployment.check_request_size(len(body))
        rendered = endpoint.invoke(body, content_type, fmt=request.format)
        record = self._record(request, files, rendered, endpoint)
        return store_track(self.storage, self.settings.s3_prefix, rendered.audio, record)

    @staticmethod
    def _record(
        request: GenerateRequest,
        files: Mapping[str, bytes],
        rendered: RenderedTrack,
        endpoint: SageMakerEndpoint,
    ) -> TrackRecord:
        """The track's record from what the endpoint reported of the engine and the uploads."""
        info = rendered.info
        for name, data in files.items():
            reported = info.inputs.get(name)
            if reported is not None and reported.sha256 != hashlib.sha256(data).hexdigest():
                raise UpstreamError(
                    f"the model endpoint {endpoint.name!r} reports another "
                    f"{name} than the one sent (sha256 {reported.sha256[:12]}...)"
                )
        return new_record(
            request,
            model=info.model,
            # the engine's own description wins; an older container reports none
            engine={
                "tunesmith": __version__,
                **info.engine,
                "endpoint": endpoint.name,
            },
            seed=info.seed,
            fmt=info.format,
            content_type=rendered.content_type,
            duration=info.duration,
            sample_rate=info.sample_rate,
            channels=info.channels,
            generation_seconds=info.generation_seconds,
            inputs=dict(info.inputs),
            production=dict(info.production),
        )

    def close(self) -> None:
        """Stop the in-process engines' decode threads, if any were started."""
        with self._service_lock:
            if self._service is not None:
                self._service.models.close()  # the ones it loaded on request
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
