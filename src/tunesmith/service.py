"""The request flow shared by the HTTP API: admit, generate, encode, store, answer.

At most ``max_queue`` requests generate at once; up to ``max_waiting`` more wait their turn
for ``queue_timeout`` seconds (past either bound: `Overloaded`, 503 with Retry-After).
Generation runs in a worker thread so the event loop keeps answering, and it is canceled at
the next decode step when the request passes ``request_timeout`` (`DeadlineExceeded`, 504) or
its client disconnects. Nothing is stored until the audio is complete and encoded, and the
store's `put` is atomic, so a failure at any point leaves no object behind.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable
from functools import partial

import anyio
import anyio.to_thread
import numpy as np
import numpy.typing as npt

from tunesmith.admission import Admission
from tunesmith.config import Settings
from tunesmith.engine.base import Engine
from tunesmith.engine.params import ProgressCallback
from tunesmith.errors import (
    Canceled,
    ClientGone,
    DeadlineExceeded,
    ModelNotReady,
    ModelUnavailable,
    ShuttingDown,
)
from tunesmith.pool import ModelPool
from tunesmith.render import render
from tunesmith.schema import GenerateRequest, GenerateResponse
from tunesmith.storage import Storage
from tunesmith.tracks import store_track
from tunesmith.uploads import AudioInputs, audio_inputs, check_abilities, prepare_audio

__all__ = ["TrackService"]

log = logging.getLogger(__name__)

_WATCH = 0.1  # seconds between looks at the deadline and the client


class TrackService:
    """Turns validated requests into stored tracks, on the model each names (`models`; an
    `Engine` alone serves as the settings' default model)."""

    def __init__(self, settings: Settings, models: ModelPool | Engine, storage: Storage) -> None:
        self.settings = settings
        if not isinstance(models, ModelPool):
            models = ModelPool(settings, engines={next(iter(settings.models)): models})
        self.models = models
        self.storage = storage
        self.admission = Admission(
            settings.max_queue, waiting=settings.max_waiting, timeout=settings.queue_timeout
        )
        self.stop_at: float | None = None  # set by `stop`: when in-flight work is failed

    @property
    def in_flight(self) -> int:
        return self.admission.in_flight

    @property
    def engine(self) -> Engine:
        """The default model's engine, set up or not (what a one-model caller closes);
        `ModelNotReady` once the budget has unloaded it."""
        engine = self.models.default.engine
        if engine is None:
            raise ModelNotReady(f"model {self.models.default.id!r} is not loaded", retry_after=10)
        return engine

    def stop(self, grace: float) -> None:
        """SIGTERM: requests in flight or queued get `grace` seconds, then fail cleanly
        (503, nothing stored) at their next decode step."""
        self.stop_at = time.monotonic() + grace

    def drain(self, timeout: float) -> bool:
        """Wait until no request is in flight (a store under way finishes); False if some
        still were after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self.admission.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self.admission.in_flight

    def audio_inputs(self, request: GenerateRequest, files: dict[str, bytes]) -> AudioInputs:
        """The request's uploads decoded and checked for the model it names: by its engine
        once loaded, else by its checkpoint's config (`InvalidRequest` naming the field)."""
        model = self.models.get(request.model)
        if model.state == "failed":
            raise ModelUnavailable(model.load_error or f"model {model.id!r} could not be loaded")
        if model.loaded and model.engine is not None:
            return audio_inputs(request, files, model.engine, model=model.id)
        abilities = self.models.abilities(model)  # ModelUnavailable (503) without its files
        return prepare_audio(
            request,
            files,
            sample_rate=abilities.sample_rate,
            channels=2 if abilities.stereo else 1,
            melody=abilities.melody,
            continuation=abilities.continuation,
            model=model.id,
        )

    async def generate(
        self,
        request: GenerateRequest,
        *,
        base_url: str,
        files: dict[str, bytes] | None = None,
        disconnected: Callable[[], Awaitable[bool]] | None = None,
    ) -> GenerateResponse:
        """Check the uploads, wait for a slot, then generate and store off the event loop.

        `disconnected` tells whether the client has gone; then the generation stops."""
        started = time.monotonic()
        inputs = await anyio.to_thread.run_sync(self.audio_inputs, request, files or {})
        with self.models.lease(request.model) as lease:  # never unloaded while it runs
            engine = lease.ready()  # ModelNotReady (503), its load started, before queueing
            return await self._generate(request, base_url, inputs, engine, started, disconnected)

    async def _generate(
        self,
        request: GenerateRequest,
        base_url: str,
        inputs: AudioInputs,
        engine: Engine,
        started: float,
        disconnected: Callable[[], Awaitable[bool]] | None,
    ) -> GenerateResponse:
        limit = self.settings.request_timeout
        cancel = threading.Event()
        why: list[str] = []

        async def watch() -> None:
            while True:
                await anyio.sleep(_WATCH)
                if limit is not None and time.monotonic() - started > limit:
                    why.append("deadline")
                elif self.stop_at is not None and time.monotonic() >= self.stop_at:
                    why.append("shutdown")
                elif disconnected is not None and await disconnected():
                    why.append("gone")
                else:
                    continue
                cancel.set()
                if why[0] != "deadline":  # out of the queue too
                    group.cancel_scope.cancel()
                return

        response: GenerateResponse | None = None
        failure: Exception | None = None
        async with anyio.create_task_group() as group:  # errors leave it unwrapped, below
            group.start_soon(watch)
            try:
                wait = None if limit is None else max(0.0, limit - (time.monotonic() - started))
                async with self.admission.queued(wait):
                    response = await anyio.to_thread.run_sync(
                        partial(self.render_and_store, engine, request, base_url, inputs, cancel)
                    )
            except Exception as exc:
                failure = exc
            finally:
                group.cancel_scope.cancel()
        if why and why[0] == "shutdown" and (response is None or isinstance(failure, Canceled)):
            raise ShuttingDown(
                "the server shut down before the track was finished; nothing was stored",
                retry_after=10,
            )
        if isinstance(failure, Canceled) and why:
            if why[0] == "deadline":
                raise self._deadline(limit) from None
            failure = None  # the client went away
        if failure is not None:
            raise failure
        if response is None:
            raise ClientGone("the client went away; its request was dropped")
        return response

    @staticmethod
    def _deadline(limit: float | None) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"the request took longer than TUNESMITH_REQUEST_TIMEOUT ({limit:g} s); nothing "
            "was stored: ask for a shorter track, or use POST /jobs"
        )

    def generate_sync(
        self,
        request: GenerateRequest,
        base_url: str,
        progress: ProgressCallback | None = None,
        inputs: AudioInputs | None = None,
        cancel: threading.Event | None = None,
        on_audio: Callable[[npt.NDArray[np.float32]], None] | None = None,
        key: str | None = None,
    ) -> GenerateResponse:
        """Generate, encode and store one track (blocking): a job's work, and the Lambda's.
        Waits for the request's model to load (and for room to load it); `on_audio` gets the
        samples as they are made, `cancel` stops it (`Canceled`), `key` names the stored
        audio (default: from the track's id)."""
        with self.models.lease(request.model) as lease:
            engine = lease.wait(cancel)
            return self.render_and_store(
                engine, request, base_url, inputs, cancel, progress, on_audio, key
            )

    def render_and_store(
        self,
        engine: Engine,
        request: GenerateRequest,
        base_url: str,
        inputs: AudioInputs | None = None,
        cancel: threading.Event | None = None,
        progress: ProgressCallback | None = None,
        on_audio: Callable[[npt.NDArray[np.float32]], None] | None = None,
        key: str | None = None,
    ) -> GenerateResponse:
        """`render` on `engine` (leased by the caller), then store the track and its record."""
        model = self.models.get(request.model)
        inputs = inputs or AudioInputs()
        # the uploads may have been checked by the config alone, before the model loaded
        check_abilities(
            request,
            inputs.uploads,
            melody=engine.follows_melody,
            continuation=engine.continues_audio,
            max_seconds=engine.max_track_seconds,
            model=model.id,
        )
        audio = render(
            engine,
            request,
            progress=progress,
            inputs=inputs,
            on_audio=on_audio,
            cancel=cancel,
            model=model.id,
        )
        response = store_track(
            self.storage,
            self.settings.s3_prefix,
            audio.data,
            audio.record,
            base_url=base_url,
            key=key,
        )
        log.info("stored %s (%.1f s, seed %d)", response.id, response.duration, response.seed)
        return response
