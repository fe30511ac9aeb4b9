"""What operators see: Prometheus metrics (``GET /metrics``) and one JSON log line per request.

Each app has its own registry (several apps in one process, as in the tests, do not share
counters). `RequestLog` is plain ASGI middleware, so it wraps streamed answers too: it gives
every request an id (the caller's ``X-Request-ID`` when it is a sane token, else a new one),
returns it in the response's ``X-Request-ID``, and logs ``tunesmith.access`` one JSON object:
request id, method, route, status, seconds taken and the duration asked for. It never logs
headers or bodies, so no key reaches the log.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tunesmith.errors import TunesmithError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from tunesmith.jobs import JobManager
    from tunesmith.service import TrackService

__all__ = ["REQUEST_ID_HEADER", "Metrics", "RequestLog"]

REQUEST_ID_HEADER = "X-Request-ID"
access_log = logging.getLogger("tunesmith.access")
_TOKEN = re.compile(r"[A-Za-z0-9._-]{1,64}")


class Metrics:
    """The service's metrics, in their own registry."""

    def __init__(self, service: TrackService) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "tunesmith_requests", "HTTP requests by route and status", ["route", "status"],
            registry=r,
        )  # fmt: skip
        self.generation_seconds = Histogram(
            "tunesmith_generation_seconds", "Seconds to generate and store one track", ["model"],
            buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800), registry=r,
        )  # fmt: skip
        self.audio_seconds = Counter(
            "tunesmith_audio_seconds", "Seconds of audio generated", ["model"], registry=r
        )
        self.realtime_factor = Histogram(
            "tunesmith_realtime_factor", "Seconds of audio per second of generation", ["model"],
            buckets=(0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10), registry=r,
        )  # fmt: skip
        queue = Gauge("tunesmith_queue_depth", "Requests admitted and not finished", registry=r)
        queue.set_function(lambda: service.in_flight)
        r.register(_EngineCollector(service))

    def watch_jobs(self, jobs: JobManager) -> None:
        """Count `jobs` ' tracks too, and how many are queued or running."""
        gauge = Gauge("tunesmith_jobs", "Jobs queued or running here", registry=self.registry)
        gauge.set_function(lambda: jobs.running)
        jobs.on_track = self.track

    def track(self, model: str, audio_seconds: float, seconds: float) -> None:
        """Count one finished track of `audio_seconds` by `model` (its id), made in `seconds`."""
        self.generation_seconds.labels(model).observe(seconds)
        self.audio_seconds.labels(model).inc(audio_seconds)
        if seconds > 0:
            self.realtime_factor.labels(model).observe(audio_seconds / seconds)


class _EngineCollector(Collector):
    """Each model's figures, read when scraped: loaded or not, work on it, its memory
    estimate, load time and batch sizes (labelled ``model="<id>"``)."""

    def __init__(self, service: TrackService) -> None:
        self.service = service

    def collect(self) -> Iterator[GaugeMetricFamily]:
        def family(name: str, text: str, *labels: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, text, labels=["model", *labels])

        loaded = family("tunesmith_model_loaded", "1 while the model is loaded")
        in_flight = family("tunesmith_model_in_flight", "Requests, jobs and streams on the model")
        memory = family("tunesmith_model_memory_bytes", "The model's memory estimate")
        load = family("tunesmith_model_load_seconds", "Seconds the model took to load")
        steps = family("tunesmith_batch_steps", "Decode steps run at each batch size", "size")
        pool = self.service.models
        for model in pool.models.values():
            loaded.add_metric([model.id], 1.0 if model.loaded else 0.0)
            in_flight.add_metric([model.id], model.in_flight)
            if model.memory_bytes is not None:
                memory.add_metric([model.id], model.memory_bytes)
            if model.load_seconds is not None:
                load.add_metric([model.id], model.load_seconds)
            engine = model.engine
            if model.loaded and engine is not None:
                try:
                    sizes = engine.batch_sizes
                except TunesmithError:  # unloaded since it was looked at
                    continue
                for size, count in sorted(sizes.items()):
                    steps.add_metric([model.id, str(size)], count)
        yield from (loaded, in_flight, memory, load, steps)


class RequestLog:
    """ASGI middleware: a request id on each request and its answer, a JSON access log line,
    and the request counter."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        request_id = given if given and _TOKEN.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.monotonic()
        status = [500]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.lower().encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(route, str(status[0])).inc()
            line: dict[str, Any] = {
                "request_id": request_id,
                "method": scope.get("method"),
                "route": route,
                "status": status[0],
                "seconds": round(time.monotonic() - started, 4),
            }
            asked = scope["state"].get("duration_asked")
            if asked is not None:
                line["duration_asked"] = asked
            access_log.info(json.dumps(line))


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None
