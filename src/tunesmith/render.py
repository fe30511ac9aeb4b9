"""A request turned into encoded audio and its record: the one step the service, the SageMaker
container and the CLI share (generate, then encode; storing and answering stay with each
caller)."""

from __future__ import annotations

import secrets
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tunesmith import __version__
from tunesmith.engine import (
    CONTENT_TYPES,
    GenerationParams,
    Track,
    encode_audio,
    encoded_rate,
)
from tunesmith.engine.audio.loops import with_loop_points
from tunesmith.engine.base import Engine
from tunesmith.engine.params import ProgressCallback, SectionParams
from tunesmith.engine.registry import model_id
from tunesmith.errors import GenerationFailed
from tunesmith.production.produce import Produced, produce
from tunesmith.schema import MAX_SEED, AudioFormat, GenerateRequest, InputRecord, TrackRecord
from tunesmith.tracks import new_record
from tunesmith.uploads import AudioInput, AudioInputs

__all__ = ["RenderedAudio", "engine_description", "params_for", "render"]


@dataclass(frozen=True)
class RenderedAudio:
    """One finished track, encoded: its bytes and its record (`record.sample_rate` is the
    file's: 48 kHz for Opus, not necessarily the model's). The record's id and key are filled
    in when it is stored (`tunesmith.tracks.store_track`)."""

    data: bytes
    record: TrackRecord


def params_for(request: GenerateRequest, seed: int | None = None) -> GenerationParams:
    """Engine parameters for a request; a missing seed is drawn at random (and reported).

    The prompt names the tempo and key asked for; with bpm the engine makes more audio than
    the track keeps (`Production.generation_seconds`), each section its share of it."""
    if seed is None:
        seed = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED + 1)
    plan = request.production
    seconds = request.generation_seconds
    scale = seconds / request.duration
    sections = tuple(
        SectionParams(plan.prompt_for(f"{request.prompt}, {section.prompt}"), length * scale)
        for section, length in zip(request.sections or [], request.section_seconds(), strict=True)
    )
    return GenerationParams(
        prompt=plan.prompt_for(request.prompt),
        duration=seconds,
        sections=sections,
        seed=seed,
        temperature=request.temperature,
        top_k=request.top_k,
        top_p=request.top_p,
        guidance_scale=request.guidance_scale,
    )


def engine_description(engine: Engine) -> dict[str, str]:
    """What of the engine decides a track's exact audio, for its record."""
    return {
        "tunesmith": __version__,
        "precision": engine.precision,
        "device": engine.device,
        "kernels": engine.kernels.path,
        "step": engine.step_kind,
        "extend_stride": f"{engine.extend_stride:g}",
    }


def render(
    engine: Engine,
    request: GenerateRequest,
    fmt: AudioFormat | None = None,
    progress: ProgressCallback | None = None,
    inputs: AudioInputs | None = None,
    on_audio: Callable[[npt.NDArray[np.float32]], None] | None = None,
    cancel: threading.Event | None = None,
    model: str | None = None,
) -> RenderedAudio:
    """Generate `request` on `engine` (continuing or following `inputs`' audio) and encode it
    as `fmt` (default: the request's format). `on_audio` gets the samples as they are decoded
    (`Engine.stream`); setting `cancel` stops the generation (`Canceled`). The record's
    `model` is the checkpoint that made it, its request's `model` the id it was asked for by
    (`model`; default: the id `engine` 's checkpoint gets), so POSTing it again asks for it.

    Blocking; raises the engine's `TunesmithError` s (`GenerationFailed`, `ModelNotReady`...)."""
    fmt = fmt or request.format
    model = model or model_id(engine.model_name)
    request = request.model_copy(update={"model": model})  # the record's request names it
    inputs = inputs or AudioInputs()
    params = params_for(request)
    started = time.monotonic()
    continuation = None if inputs.continuation is None else inputs.continuation.samples
    melody = None if inputs.melody is None else inputs.melody.samples
    chunks = []
    for chunk in engine.stream(params, progress, continuation, melody, cancel):
        if on_audio is not None:
            on_audio(chunk)
        chunks.append(chunk)
    track = Track(np.concatenate(chunks), engine.sample_rate)
    produced = produce_track(track, request)
    track = Track(produced.samples, track.sample_rate)
    data = encode_audio(
        track.samples, track.sample_rate, fmt, request.normalization, request.loudness_lufs
    )
    if request.loop and fmt == "wav":  # samplers loop the whole file
        data = with_loop_points(data, 0, track.samples.shape[0] - 1, track.sample_rate)
    uploads: dict[str, AudioInput | None] = {
        "input_audio": inputs.continuation,
        "melody": inputs.melody,
    }
    record = new_record(
        request,
        model=engine.model_name,
        engine=engine_description(engine),
        seed=params.seed,
        fmt=fmt,
        content_type=CONTENT_TYPES[fmt],
        duration=track.duration,
        sample_rate=encoded_rate(fmt, track.sample_rate),
        channels=int(track.samples.shape[1]),
        generation_seconds=round(time.monotonic() - started, 3),
        inputs={
            name: InputRecord(sha256=up.sha256, start=up.start, end=up.end)
            for name, up in uploads.items()
            if up is not None
        },
        production=produced.analysis or None,
    )
    return RenderedAudio(data, record)


def produce_track(track: Track, request: GenerateRequest) -> Produced:
    """The generated audio made to the request's producer fields (unchanged without them).
    `GenerationFailed` when the stretcher fails."""
    plan = request.production
    if not plan.asked:
        return Produced(track.samples)
    try:
        return produce(track.samples, track.sample_rate, plan, request.duration)
    except (RuntimeError, ValueError, OSError, subprocess.SubprocessError) as exc:
        raise GenerationFailed(f"could not make the track to bpm/key/fade_out: {exc}") from exc
