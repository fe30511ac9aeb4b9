"""The request flow shared by the HTTP API: admit, generate, encode, store, answer.

A request is admitted only while fewer than ``max_queue`` are in flight (else `Overloaded`,
503 with Retry-After); generation runs in a worker thread so the event loop keeps answering.
Nothing is stored until the audio is complete and encoded, and the store's `put` is atomic, so
a failure at any point leaves no object behind.
"""

from __future__ import annotations

import logging
import secrets

import anyio.to_thread

from tunesmith.admission import Admission
from tunesmith.config import Settings
from tunesmith.engine import CONTENT_TYPES, GenerationParams, MusicGenEngine, encode_audio
from tunesmith.engine.engine import ProgressCallback
from tunesmith.schema import MAX_SEED, GenerateRequest, GenerateResponse
from tunesmith.storage import Storage
from tunesmith.tracks import store_track

__all__ = ["TrackService", "params_for"]

log = logging.getLogger(__name__)


def params_for(request: GenerateRequest, seed: int | None = None) -> GenerationParams:
    """Engine parameters for a request; a missing seed is drawn at random (and reported)."""
    if seed is None:
        seed = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED + 1)
    return GenerationParams(
        prompt=request.prompt,
        duration=request.duration,
        seed=seed,
        temperature=request.temperature,
        top_k=request.top_k,
        top_p=request.top_p,
        guidance_scale=request.guidance_scale,
    )


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

    async def generate(self, request: GenerateRequest, *, base_url: str) -> GenerateResponse:
        """Admit the request, then generate and store it off the event loop."""
        self.engine.loaded  # noqa: B018 - raises ModelNotReady (503) before queueing
        with self.admission.held():
            return await anyio.to_thread.run_sync(self.generate_sync, request, base_url)

    def generate_sync(
        self, request: GenerateRequest, base_url: str, progress: ProgressCallback | None = None
    ) -> GenerateResponse:
        """Generate, encode and store one track (blocking)."""
        params = params_for(request)
        track = self.engine.generate(params, progress)
        data = encode_audio(track.samples, track.sample_rate, request.format)
        response = store_track(
            self.storage,
            self.settings.s3_prefix,
            data,
            CONTENT_TYPES[request.format],
            fmt=request.format,
            duration=track.duration,
            sample_rate=track.sample_rate,
            model=self.engine.model_name,
            seed=params.seed,
            base_url=base_url,
        )
        log.info("stored %s (%.1f s, seed %d)", response.id, track.duration, params.seed)
        return response
