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

import anyio
import anyio.to_thread
import numpy as np
import numpy.typing as npt

from tunesmith.admission import Admission
from tunesmith.config import Settings
from tunesmith.engine.base import Engine
from tunesmith.engine.engine import ProgressCallback
from tunesmith.errors import Canceled, ClientGone, DeadlineExceeded, ShuttingDown
from tunesmith.render import render
from tunesmith.schema import GenerateRequest, GenerateResponse
from tunesmith.storage import Storage
from tunesmith.tracks import store_track
from tunesmith.uploads import AudioInputs, audio_inputs

__all__ = ["TrackService"]

log = logging.getLogger(__name__)

_WATCH = 0.1  # seconds between looks at the deadline and the client


class TrackService:
    """Turns validated requests into stored tracks."""

    def __init__(self, settings: Settings, engine: Engine, storage: Storage) -> None:
        self.settings = settings
        self.engine = engine
        self.storage = storage
        self.admission = Admission(
            settings.max_queue, waiting=settings.max_waiting, timeout=settings.queue_timeout
        )
        self.stop_at: float | None = None  # set by `stop`: when in-flight work is failed

    @property
    def in_flight(self) -> int:
        return self.admission.in_flight

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
        """The request's uploads decoded for the loaded model (`InvalidRequest` if bad)."""
        return audio_inputs(request, files, self.engine)  # ModelNotReady (503) while loading

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
        self.engine.check_ready()  # ModelNotReady (503) before queueing
        inputs = await anyio.to_thread.run_sync(self.audio_inputs, request, files or {})
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
                        self.generate_sync, request, base_url, None, inputs, cancel
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
        """Generate, encode and store one track (blocking): `/generate`'s work and a job's.
        `on_audio` gets the samples as they are made, `cancel` stops it (`Canceled`), `key`
        names the stored audio (default: from the track's id)."""
        audio = render(
            self.engine, request, progress=progress, inputs=inputs, on_audio=on_audio, cancel=cancel
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
