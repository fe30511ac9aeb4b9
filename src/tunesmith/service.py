"""The request flow shared by the HTTP API: admit, generate, encode, store, answer.

A request is admitted only while fewer than ``max_queue`` are in flight (else `Overloaded`,
503 with Retry-After); generation runs in a worker thread so the event loop keeps answering.
Nothing is stored until the audio is complete and encoded, and the store's `put` is atomic, so
a failure at any point leaves no object behind.
"""

from __future__ import annotations

import logging

import anyio.to_thread

from tunesmith.admission import Admission
from tunesmith.config import Settings
from tunesmith.engine import MusicGenEngine
from tunesmith.engine.engine import ProgressCallback
from tunesmith.render import render
from tunesmith.schema import GenerateRequest, GenerateResponse
from tunesmith.storage import Storage
from tunesmith.tracks import store_track
from tunesmith.uploads import AudioInputs, audio_inputs

__all__ = ["TrackService"]

log = logging.getLogger(__name__)


class TrackService:
    """Turns validated requests into stored tracks."""

    def __init__(self, settings: Settings, engine: MusicGenEngine, storage: Storage) -> None:
        self.settings = settings
        self.engine = engine
        self.storage = storage
        self.admission = Admission(settings.max_queue)

    @property
    def in_flight(self) -> int:
        return self.admission.in_flight

    def audio_inputs(self, request: GenerateRequest, files: dict[str, bytes]) -> AudioInputs:
        """The request's uploads decoded for the loaded model (`InvalidRequest` if bad)."""
        return audio_inputs(request, files, self.engine)  # ModelNotReady (503) while loading

    async def generate(
        self,
        request: GenerateRequest,
        *,
        base_url: str,
        files: dict[str, bytes] | None = None,
    ) -> GenerateResponse:
        """Check the uploads, admit the request, then generate and store it off the event loop."""
        self.engine.loaded  # noqa: B018 - raises ModelNotReady (503) before queueing
        inputs = await anyio.to_thread.run_sync(self.audio_inputs, request, files or {})
        with self.admission.held():
            return await anyio.to_thread.run_sync(
                self.generate_sync, request, base_url, None, inputs
            )

    def generate_sync(
        self,
        request: GenerateRequest,
        base_url: str,
        progress: ProgressCallback | None = None,
        inputs: AudioInputs | None = None,
    ) -> GenerateResponse:
        """Generate, encode and store one track (blocking)."""
        audio = render(self.engine, request, progress=progress, inputs=inputs)
        response = store_track(
            self.storage, self.settings.s3_prefix, audio.data, audio.record, base_url=base_url
        )
        log.info("stored %s (%.1f s, seed %d)", response.id, response.duration, response.seed)
        return response
