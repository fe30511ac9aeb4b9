"""The async variant's jobs: the job contract (`tunesmith.schema.Job`) on top of SageMaker's
asynchronous inference, which keeps no state that can be asked for.

InvokeEndpointAsync only reports where the answer (the audio) and its error document will be
written; later one of those objects appears. So ``POST /jobs`` (and ``POST /generate``) queue
the request and write the job's record, ``music-jobs/<id>.json``: the request (its seed
filled in), the final URLs, and the failure location SageMaker reported (`AsyncJob`; read as a
plain `Job`, that field is ignored). ``GET /jobs/{id}`` then looks for the two objects:

    the audio exists           -> succeeded; `result` from the track's record, which the
                                  container stored beside it before answering (SageMaker
                                  keeps only the answer's body: `tunesmith.aws.protocol`)
    the error document exists  -> failed, with its error and message
    neither                    -> queued: SageMaker does not say when it starts a request, so
                                  ``running`` is never reported; past SageMaker's queue limit
                                  and the request's time limit it is failed instead

A finished job's record is rewritten once, so later GETs read that one object. The URLs are
signed afresh on each answer (presigned mode). What the variant cannot do: cancel (SageMaker
has no call to stop an invocation: 409), stream events or audio (``events_url`` and
``audio_url`` are null), report progress (zeros; ``audio_seconds`` once it succeeded).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Final, NoReturn

from pydantic import ValidationError

from tunesmith.aws.deployment import INPUT_PREFIX
from tunesmith.aws.protocol import RecordDestination, invocation_body
from tunesmith.aws.sagemaker import SageMakerEndpoint, parse_s3_uri
from tunesmith.errors import (
    Conflict,
    NotFound,
    StorageError,
    TunesmithError,
    UpstreamError,
)
from tunesmith.schema import (
    MAX_SEED,
    GenerateRequest,
    GenerateResponse,
    Job,
    JobError,
    JobProgress,
    TrackRecord,
    job_key,
)
from tunesmith.storage import S3Storage
from tunesmith.tracks import RECORD_TYPE, describe_track, now

__all__ = ["QUEUE_TTL", "AsyncJob", "AsyncJobs"]

log = logging.getLogger(__name__)

# How long a request may wait in SageMaker's queue (InvokeEndpointAsync's RequestTTLSeconds
# default, 6 h); a job with no answer past that and its time limit never gets one.
QUEUE_TTL: Final = 21600
_GRACE: Final = 600  # for SageMaker to write the answer once the time limit is reached
_JOB_ID: Final = re.compile(r"[0-9a-f]{32}")
_MESSAGE_CHARS: Final = 2000


class AsyncJob(Job):
    """A job as the async variant stores it: the contract's fields, plus where SageMaker
    writes the error document (None: the endpoint has no failure path)."""

    failure_location: str | None = None

    def public(self) -> Job:
        """The job as ``GET /jobs/{id}`` answers it."""
        return Job.model_validate(self.model_dump(exclude={"failure_location"}))


class AsyncJobs:
    """Jobs on asynchronous endpoints, recorded in `storage` (tracks under `prefix`); each
    endpoint is given the same S3 output path (the CDK app's), so a job's status is read from
    storage alone, whichever endpoint it was queued on."""

    def __init__(self, storage: S3Storage, *, prefix: str, time_limit: int) -> None:
        self.storage = storage
        self.prefix = prefix
        self.time_limit = time_limit  # seconds one invocation may take (1 to 3600)

    # -- submit ------------------------------------------------------------------------------

    def submit(
        self,
        request: GenerateRequest,
        endpoint: SageMakerEndpoint,
        files: Mapping[str, bytes] | None = None,
    ) -> Job:
        """Queue `request` on `endpoint` and record the job; its record says where it goes."""
        # the seed is chosen here, so the answer can report it at once
        seed = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED + 1)
        request = request.model_copy(update={"seed": seed})
        job_id = uuid.uuid4().hex
        body, content_type = invocation_body(request, files or {})
        filename = f"track.{request.format}"
        bucket = self.storage.bucket
        destination = RecordDestination(
            bucket=bucket,
            key=f"{self.prefix}{job_id}.json",
            audio_key=f"{self.prefix}{job_id}/{filename}",
            endpoint=endpoint.name,
        )
        source = uri = None
        if files:  # too large to go inline: SageMaker reads it from S3
            source = f"{INPUT_PREFIX}{job_id}.form"
            uri = f"s3://{bucket}/{source}"
            self.storage.put(source, body, content_type)
        try:
            locations = endpoint.submit(
                content_type=content_type,
                inference_id=job_id,
                filename=filename,
                timeout=self.time_limit,
                body=None if source else body,
                input_location=uri,
                custom_attributes=destination.to_attributes(),
            )
        except TunesmithError:
            if source is not None:
                self._discard(source)
            raise
        output_bucket, key = parse_s3_uri(locations.output)
        if output_bucket != bucket or key != destination.audio_key:
            raise UpstreamError(
                f"SageMaker will write to {locations.output}, not s3://{bucket}/"
                f"{destination.audio_key}: the endpoint's S3 output path is misconfigured "
                f"(it must be s3://{bucket}/{self.prefix.rstrip('/')})"
            )
        failure = locations.failure
        if failure is not None and parse_s3_uri(failure)[0] != bucket:
            log.warning("job %s: SageMaker puts its error document in %s", job_id, failure)
            failure = None
        where = self.storage.locate(key)
        created = now()
        job = AsyncJob(
            id=job_id,
            status="queued",
            created=created,
            updated=created,
            request=request,
            s3_url=where.s3_url,
            public_url=where.public_url,
            metadata_url=self.storage.locate(destination.key).public_url,
            replica=endpoint.name,
            failure_location=failure,
        )
        self.storage.put(job_key(job_id), job.model_dump_json(indent=2).encode(), RECORD_TYPE)
        return job.public()

    def _discard(self, key: str) -> None:
        """Remove a queued request's input that SageMaker will never read (best effort)."""
        try:
            self.storage.delete(key)
        except StorageError:
            log.warning("could not remove %s after its request failed to queue", key)

    # -- status ------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        """The job's status as SageMaker's objects tell it; `NotFound` for an unknown id."""
        job = self._load(job_id)
        if not job.finished:
            job = self._refresh(job)
        return self._present(job).public()

    def cancel(self, job_id: str) -> NoReturn:
        """Always refused (409): SageMaker cannot stop an asynchronous invocation."""
        job = self.get(job_id)
        if job.finished:
            raise Conflict(f"job {job_id} has already {job.status}; there is nothing to cancel")
        raise Conflict(
            f"job {job_id} cannot be canceled: SageMaker asynchronous inference has no way to "
            "stop a queued or running request, so it runs to completion"
        )

    def _load(self, job_id: str) -> AsyncJob:
        if not _JOB_ID.fullmatch(job_id):
            raise NotFound(f"no job {job_id[:80]!r}: job ids are 32 lowercase hex characters")
        try:
            data = self.storage.get(job_key(job_id))
        except NotFound:
            raise NotFound(f"no job {job_id}") from None
        try:
            return AsyncJob.model_validate_json(data)
        except ValidationError:
            raise StorageError(f"the record of job {job_id} is unreadable") from None

    def _refresh(self, job: AsyncJob) -> AsyncJob:
        """Look for the job's answer, then its error document; record the outcome if any."""
        _, audio_key = parse_s3_uri(job.s3_url or "")
        if self.storage.exists(audio_key):
            record = self._track_record(job, audio_key)
            finished = job.model_copy(
                update={
                    "status": "succeeded",
                    "updated": now(),
                    "result": self._result(job.id, record),
                    "progress": JobProgress(audio_seconds=record.duration),
                }
            )
        elif (error := self._failure(job)) is not None:
            finished = job.model_copy(update={"status": "failed", "updated": now(), "error": error})
        elif datetime.fromisoformat(job.created) + self._deadline() < datetime.now(UTC):
            error = JobError(
                error="upstream_timeout",
                message=f"SageMaker wrote neither the track nor an error within "
                f"{self._deadline().total_seconds():g} s of the request (its queue limit and "
                "time limit); the request was lost",
            )
            finished = job.model_copy(update={"status": "failed", "updated": now(), "error": error})
        else:
            return job
        self.storage.put(
            job_key(job.id), finished.model_dump_json(indent=2).encode(), RECORD_TYPE, replace=True
        )
        log.info("job %s: %s", job.id, finished.status)
        return finished

    def _deadline(self) -> timedelta:
        return timedelta(seconds=QUEUE_TTL + self.time_limit + _GRACE)

    def _track_record(self, job: AsyncJob, audio_key: str) -> TrackRecord:
        """The record the container stored beside the track."""
        key = f"{self.prefix}{job.id}.json"
        try:
            record = TrackRecord.model_validate_json(self.storage.get(key))
        except NotFound:
            raise UpstreamError(
                f"the track of job {job.id} is stored at {audio_key}, but the model container "
                f"stored no record beside it ({key}): is the endpoint's image older than this "
                "function?"
            ) from None
        except ValidationError:
            raise UpstreamError(f"the record {key} of job {job.id} is unreadable") from None
        if record.id != job.id or record.seed != job.request.seed:
            raise UpstreamError(f"the record {key} describes another track than job {job.id}")
        return record

    def _result(self, job_id: str, record: TrackRecord) -> GenerateResponse:
        return describe_track(self.storage, record, record_at=f"{self.prefix}{job_id}.json")

    def _failure(self, job: AsyncJob) -> JobError | None:
        """The error document SageMaker wrote, if it has written one."""
        if job.failure_location is None:
            return None
        _, key = parse_s3_uri(job.failure_location)
        try:
            document = self.storage.get(key)
        except NotFound:
            return None
        return failure_error(document)

    def _present(self, job: AsyncJob) -> AsyncJob:
        """`job` with its URLs located afresh (a presigned URL expires; a public one stays)."""
        _, audio_key = parse_s3_uri(job.s3_url or "")
        update: dict[str, object] = {
            "public_url": self.storage.locate(audio_key).public_url,
            "metadata_url": self.storage.locate(f"{self.prefix}{job.id}.json").public_url,
        }
        if job.result is not None:
            update["result"] = job.result.model_copy(
                update={"public_url": update["public_url"], "metadata_url": update["metadata_url"]}
            )
        return job.model_copy(update=update)


def failure_error(document: bytes) -> JobError:
    """A SageMaker error document as the job's error: the container's JSON error (what it
    answered), or SageMaker's own text (a timeout, say)."""
    text = document.decode("utf-8", errors="replace").strip()
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, dict) and value.get("message"):
        code = str(value.get("error") or "generation_failed")
        return JobError(error=code, message=str(value["message"])[:_MESSAGE_CHARS])
    message = text[:_MESSAGE_CHARS] or "SageMaker reported a failure and no message"
    return JobError(error="upstream_error", message=message)
