"""Asynchronous jobs: `POST /jobs` answers at once, the track is made in the same batched
engine as `POST /generate`, and the job's record in storage says how far it is.

A job's record (``music-jobs/<id>.json``, a `Job`) is written when the job is accepted, when
it starts and ends, and every `job_heartbeat` seconds while it runs, so any replica on the same
storage answers for it. A record whose server stopped writing it (four heartbeats) is reported,
and rewritten, as ``failed``: no job stays ``running`` after its server is gone. A server that
shuts down fails its own unfinished jobs at once.

Cancelling sets the job's event: it leaves the batch at the next decode step and stores
nothing. A job on another replica is cancelled through a marker object
(``music-jobs/<id>.cancel``) which its server's heartbeat looks for.

While a job runs here its audio is kept as a WAV of the final length, filled in as the engine
decodes it (`LiveJob.audio`), for `GET /jobs/{id}/audio`; it is dropped a while after the job
ends, when the stored track is there to fetch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import anyio.to_thread
import numpy as np
import numpy.typing as npt

from tunesmith.admission import Admission
from tunesmith.config import Settings
from tunesmith.engine.audio import stream_pcm, wav_header
from tunesmith.errors import (
    Canceled,
    Conflict,
    NotFound,
    StorageError,
    TunesmithError,
)
from tunesmith.render import params_for
from tunesmith.schema import (
    JOB_PREFIX,
    MAX_SEED,
    GenerateRequest,
    Job,
    JobError,
    JobProgress,
    job_key,
)
from tunesmith.service import TrackService
from tunesmith.storage import new_key
from tunesmith.tracks import RECORD_TYPE, record_key, track_id
from tunesmith.uploads import AudioInputs

__all__ = ["JobManager", "LiveJob"]

STALE_HEARTBEATS = 4  # a record this many heartbeats old belongs to a server that stopped
KEEP_AUDIO_SECONDS = 120.0  # how long a finished job's streamed audio stays in memory

log = logging.getLogger(__name__)


def _stamp() -> str:
    """Now, to the millisecond: a record's age is judged against heartbeats under a second."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def cancel_key(job_id: str) -> str:
    return f"{JOB_PREFIX}{job_id}.cancel"


class LiveJob:
    """A job this server runs: its record as it stands, its cancel event, its audio so far."""

    def __init__(self, job: Job, total_bytes: int, header: bytes, sample_rate: int) -> None:
        self.job = job
        self.sample_rate = sample_rate
        self.cancel = threading.Event()
        self.shutdown = False  # canceled because the server stops, not by a caller
        self.audio = bytearray(header)  # a WAV of `total_bytes`, as far as it is decoded
        self.total_bytes = total_bytes
        self.finished_at: float | None = None
        self.thread: threading.Thread | None = None  # the one running it
        self.changed = threading.Event()  # set on every update; for waiting listeners
        self._lock = threading.Lock()
        # held while the record is written: the final one lands last, after any heartbeat's
        self.writing = threading.Lock()

    def update(self, **changes: object) -> Job:
        with self._lock:
            return self._publish(self.job.model_copy(update={**changes, "updated": _stamp()}))

    def finish(self, store: Callable[[Job], None], **changes: object) -> Job:
        """The final update, stored (`store`) before this server answers with it: a replica
        reading storage never sees an older state than this one shows."""
        with self.writing:
            final = self.job.model_copy(update={**changes, "updated": _stamp()})
            store(final)
            with self._lock:
                return self._publish(final)

    def _publish(self, job: Job) -> Job:
        self.job = job
        if job.finished and self.finished_at is None:
            self.finished_at = time.monotonic()
        self.changed.set()
        return job


class JobManager:
    """Runs jobs on `service` 's engine and keeps their records in its storage."""

    def __init__(self, settings: Settings, service: TrackService) -> None:
        self.settings = settings
        self.service = service
        self.storage = service.storage
        self.replica = uuid.uuid4().hex[:12]  # names this server in the records it writes
        self.admission = Admission(settings.max_jobs)
        self.live: dict[str, LiveJob] = {}
        # told of each stored track: (model id, audio seconds, seconds it took), for /metrics
        self.on_track: Callable[[str, float, float], None] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="job-heartbeat", daemon=True)
        self._beat.start()

    @property
    def running(self) -> int:
        """Jobs queued or running on this server."""
        return self.admission.in_flight

    # -- submitting ------------------------------------------------------------------------------

    async def submit(
        self, request: GenerateRequest, *, base_url: str, files: dict[str, bytes] | None = None
    ) -> Job:
        """Check the request and its uploads, store the job's record, start it; its `Job`.
        A job for a model not yet loaded waits for it, queued (its load starts now)."""
        inputs = await anyio.to_thread.run_sync(self.service.audio_inputs, request, files or {})
        self.admission.admit()  # Overloaded (503, Retry-After) past TUNESMITH_MAX_JOBS
        try:
            live = await anyio.to_thread.run_sync(self._accept, request, base_url)
        except BaseException:
            self.admission.release()
            raise
        live.thread = threading.Thread(
            target=self._run, args=(live, inputs, base_url), name=f"job-{live.job.id}"
        )
        live.thread.daemon = True
        live.thread.start()
        return live.job

    def _accept(self, request: GenerateRequest, base_url: str) -> LiveJob:
        """The job's record, stored before anything runs: its seed and final URLs fixed."""
        seed = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED + 1)
        request = request.model_copy(update={"seed": seed})
        key = new_key(self.settings.s3_prefix, request.format)
        job_id = track_id(key)
        where = self.storage.locate(key, base_url=base_url)
        meta = self.storage.locate(record_key(key), base_url=base_url)
        rate, channels, steps = self._shape(request)
        # the stream plays the audio as generated: with bpm, longer than the stored track
        frames = round(request.generation_seconds * rate)
        header = wav_header(frames, channels, rate)
        stamp = _stamp()
        job = Job(
            id=job_id,
            status="queued",
            created=stamp,
            updated=stamp,
            request=request,
            progress=JobProgress(steps_total=steps, audio_total=round(frames / rate, 3)),
            s3_url=where.s3_url,
            public_url=where.public_url,
            metadata_url=meta.public_url,
            audio_url=f"{base_url}/jobs/{job_id}/audio",
            events_url=f"{base_url}/jobs/{job_id}/events",
            replica=self.replica,
        )
        live = LiveJob(job, len(header) + frames * channels * 2, header, rate)
        self._write(job)  # StorageError (502): nothing was started
        with self._lock:
            self.live[job_id] = live
        return live

    def _shape(self, request: GenerateRequest) -> tuple[int, int, int]:
        """The sample rate, channels and decode steps of the request's track: from its model's
        engine once loaded, else from its config (the steps then as the track's frames, until
        the engine's first progress report says exactly)."""
        model = self.service.models.get(request.model)
        engine = model.engine
        if model.loaded and engine is not None:
            params = params_for(request)  # the sections it plays add windows
            steps = engine.steps_for(params.duration, 0, params.sections)
            return engine.sample_rate, engine.channels, steps
        abilities = self.service.models.abilities(model)
        steps = math.ceil(request.generation_seconds * abilities.frame_rate)
        return abilities.sample_rate, 2 if abilities.stereo else 1, steps

    # -- running ---------------------------------------------------------------------------------

    def _run(self, live: LiveJob, inputs: AudioInputs, base_url: str) -> None:
        job = live.job
        began = time.monotonic()
        started = False
        samples_done = 0
        rate = live.sample_rate

        def progress(done: int, total: int) -> None:
            nonlocal started
            changes: dict[str, object] = {}
            if not started:
                started = True
                changes["status"] = "running"
            seconds = round(samples_done / rate, 3)
            changes["progress"] = live.job.progress.model_copy(
                update={"steps_done": done, "steps_total": total, "audio_seconds": seconds}
            )
            live.update(**changes)

        def on_audio(chunk: npt.NDArray[np.float32]) -> None:
            nonlocal samples_done
            live.audio += stream_pcm(chunk)
            samples_done += chunk.shape[0]
            current = live.job.progress
            live.update(
                progress=current.model_copy(update={"audio_seconds": round(samples_done / rate, 3)})
            )

        try:
            result = self.service.generate_sync(
                job.request,
                base_url,
                progress=progress,
                inputs=inputs,
                cancel=live.cancel,
                on_audio=on_audio,
                key=f"{self.settings.s3_prefix}{job.id}.{job.request.format}",
            )
            outcome: dict[str, object] = {"status": "succeeded", "result": result}
            if self.on_track is not None:
                model = self.service.models.get(job.request.model).id
                self.on_track(model, result.duration, time.monotonic() - began)
            log.info("job %s stored %s (%.1f s)", job.id, result.id, result.duration)
        except Canceled:
            if live.shutdown:
                outcome = {"status": "failed", "error": _shutdown_error()}
            else:
                outcome = {"status": "canceled"}
        except TunesmithError as exc:
            outcome = {"status": "failed", "error": JobError(error=exc.code, message=exc.message)}
        except Exception as exc:  # a bug: reported on the job, the server serves on
            log.exception("job %s failed", job.id)
            outcome = {
                "status": "failed",
                "error": JobError(error="internal_error", message=str(exc)),
            }
        finally:
            self.admission.release()
        live.finish(self._write_final, **outcome)

    def _write(self, job: Job) -> None:
        self.storage.put(
            job_key(job.id), job.model_dump_json(indent=2).encode(), RECORD_TYPE, replace=True
        )

    def _write_final(self, job: Job) -> None:
        """A finished job's record, retried: the one write a job must not lose."""
        for attempt in range(5):
            try:
                self._write(job)
                if job.status == "canceled":
                    self.storage.delete(cancel_key(job.id))
                return
            except StorageError as exc:
                log.warning("job %s: could not write its record (%s)", job.id, exc.message)
                if self._stop.wait(min(2.0**attempt, 10.0)):
                    break
        log.error("job %s ended %s, but its record could not be stored", job.id, job.status)

    # -- reading and cancelling ---------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        """The job as it stands (this server's own from memory, others' from storage)."""
        with self._lock:
            live = self.live.get(job_id)
        if live is not None:
            return live.job
        return self._stored(job_id)

    def _stored(self, job_id: str) -> Job:
        if not job_id.isalnum() or len(job_id) != 32:
            raise NotFound(f"no job {job_id!r}")
        try:
            job = Job.model_validate_json(self.storage.get(job_key(job_id)))
        except NotFound:
            raise NotFound(f"no job {job_id!r}") from None
        except ValueError as exc:
            raise StorageError(f"the record of job {job_id} is unreadable: {exc}") from None
        if not job.finished and self._stale(job):
            job = job.model_copy(
                update={
                    "status": "failed",
                    "updated": _stamp(),
                    "error": JobError(
                        error="interrupted",
                        message="the server running this job stopped before it finished "
                        f"(no word from it since {job.updated}); submit it again",
                    ),
                }
            )
            with contextlib.suppress(StorageError):  # failed all the same; a later read writes it
                self._write(job)
        return job

    def _stale(self, job: Job) -> bool:
        if job.replica == self.replica:
            return True  # ours but not live here: its thread is gone
        written = datetime.fromisoformat(job.updated)
        # a second more: the clocks of two servers on one storage are never quite the same
        limit = timedelta(seconds=STALE_HEARTBEATS * self.settings.job_heartbeat + 1)
        return datetime.now(UTC) - written > limit

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job (blocking until it stops, briefly); `Conflict` if it
        already finished."""
        job = self.get(job_id)
        if job.finished:
            raise Conflict(f"job {job_id} already {job.status}")
        with self._lock:
            live = self.live.get(job_id)
        if live is None:  # another server runs it: it sees the marker at its next heartbeat
            self.storage.put(cancel_key(job_id), b"", "application/octet-stream", replace=True)
            return job
        live.cancel.set()
        deadline = time.monotonic() + 10
        while not live.job.finished and time.monotonic() < deadline:
            live.changed.wait(0.1)
            live.changed.clear()
        return live.job

    def live_job(self, job_id: str) -> LiveJob | None:
        with self._lock:
            return self.live.get(job_id)

    # -- upkeep ----------------------------------------------------------------------------------

    def _heartbeat(self) -> None:
        """Rewrite running jobs' records, look for cancel markers, forget old audio."""
        while not self._stop.wait(self.settings.job_heartbeat):
            with self._lock:
                jobs = list(self.live.values())
            for live in jobs:
                if live.finished_at is not None:
                    if time.monotonic() - live.finished_at > KEEP_AUDIO_SECONDS:
                        with self._lock:
                            self.live.pop(live.job.id, None)
                    continue
                try:
                    if self.storage.exists(cancel_key(live.job.id)):
                        live.cancel.set()
                    with live.writing:
                        if live.finished_at is None:  # else its final record is written
                            self._write(live.update())
                except StorageError as exc:
                    log.warning("job %s: heartbeat failed (%s)", live.job.id, exc.message)

    def close(self, grace: float = 10.0) -> None:
        """Stop: unfinished jobs are stopped and recorded ``failed`` (the server shut down)."""
        with self._lock:
            jobs = [live for live in self.live.values() if live.finished_at is None]
        for live in jobs:
            live.shutdown = True
            live.cancel.set()
        self._stop.set()
        self._beat.join()
        deadline = time.monotonic() + grace
        for live in jobs:
            if live.thread is not None:  # it records its own end
                live.thread.join(max(0.0, deadline - time.monotonic()))
            if live.finished_at is None:  # stuck (e.g. in a long prefill): record it anyway
                live.finish(self._write_final, status="failed", error=_shutdown_error())


def _shutdown_error() -> JobError:
    return JobError(
        error="interrupted",
        message="the server shut down before this job finished; submit it again",
    )
