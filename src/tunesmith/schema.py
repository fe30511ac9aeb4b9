"""The one request/response contract, shared by the local API, the CLI and the Lambda tier.

`parse_generate_request` is the only way a request enters the service: it takes the raw JSON
body (bytes, str or an already-decoded dict), applies the deployment's duration limit and
raises `InvalidRequest` naming each bad field.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from tunesmith import defaults
from tunesmith.config import HARD_MAX_DURATION
from tunesmith.errors import FieldError, InvalidRequest
from tunesmith.production.request import ProducerFields

__all__ = [
    "JOB_PREFIX",
    "MAX_PROMPT_CHARS",
    "MAX_SEED",
    "AudioFormat",
    "DurationLimit",
    "Normalization",
    "GenerateRequest",
    "GenerateResponse",
    "InputRecord",
    "Job",
    "JobError",
    "JobProgress",
    "JobStatus",
    "TrackPage",
    "TrackSummary",
    "TrackRecord",
    "job_key",
    "parse_generate_request",
    "request_json_schema",
]

MAX_PROMPT_CHARS = 2000
MAX_SEED = 2**63 - 1
MIN_DURATION = 1.0
MIN_LOUDNESS_LUFS = -70.0  # BS.1770's absolute gate: anything quieter measures as silence
MAX_LOUDNESS_LUFS = -1.0  # louder could not stay under the -1 dBTP ceiling
AudioFormat = Literal["wav", "flac", "mp3", "ogg", "opus"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]
FINISHED: tuple[JobStatus, ...] = ("succeeded", "failed", "canceled")
Normalization = Literal["peak", "loudness", "rms", "clip", "none", "limit"]


@dataclass(frozen=True)
class DurationLimit:
    """The longest track a deployment makes, and the message refusing a longer one."""

    seconds: float
    message: str

    @classmethod
    def on_this_server(cls, seconds: float) -> DurationLimit:
        return cls(seconds, f"must be at most {seconds:g} seconds on this server")

    @classmethod
    def of(cls, context: Any) -> DurationLimit:
        """The limit a validation context carries, else the contract's own."""
        limit = context.get("duration_limit") if isinstance(context, dict) else None
        return limit if isinstance(limit, DurationLimit) else cls.on_this_server(HARD_MAX_DURATION)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    prompt: str = Field(
        min_length=1,
        max_length=MAX_PROMPT_CHARS,
        description="What the music should sound like",
        examples=["upbeat electronic dance music with heavy bass"],
    )
    duration: float = Field(
        10.0,
        ge=MIN_DURATION,
        allow_inf_nan=False,
        description="Length of the track in seconds, at most the server's limit "
        "(TUNESMITH_MAX_DURATION)",
        # documented, not enforced here: `_within_limit` refuses with the server's own limit
        json_schema_extra={"maximum": HARD_MAX_DURATION},
    )
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED, description="Same seed and parameters give the same audio"
    )
    temperature: float = Field(defaults.TEMPERATURE, gt=0, le=10.0, allow_inf_nan=False)
    top_k: int = Field(defaults.TOP_K, ge=0, le=2048, description="0 turns top-k sampling off")
    top_p: float = Field(
        defaults.TOP_P, ge=0, le=1.0, allow_inf_nan=False, description="0 turns it off"
    )
    guidance_scale: float = Field(
        defaults.GUIDANCE_SCALE,
        ge=0,
        le=20.0,
        allow_inf_nan=False,
        description="Classifier-free guidance; <=1 off",
    )
    format: AudioFormat = "wav"
    normalization: Normalization = Field(
        "peak",
        description="peak, rms (audiocraft's), loudness (BS.1770, through a true-peak "
        "limiter), limit (the limiter alone), clip or none; never louder than -1 dBTP",
    )
    loudness_lufs: float = Field(
        -14.0,
        ge=MIN_LOUDNESS_LUFS,
        le=MAX_LOUDNESS_LUFS,
        allow_inf_nan=False,
        description="Target integrated loudness for normalization 'loudness'",
    )
    continuation_start: float = Field(
        0.0,
        ge=0,
        le=HARD_MAX_DURATION,
        allow_inf_nan=False,
        description="Seconds into input_audio where the audio to continue starts",
    )
    continuation_end: float | None = Field(
        None,
        gt=0,
        le=HARD_MAX_DURATION,
        allow_inf_nan=False,
        description="Seconds into input_audio where it ends (default: the upload's end); "
        "at most its last 30 s are used",
    )
    model: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Which served model makes the track, by the id GET /models lists "
        "(default: the server's first)",
    )
    source_track: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{32}$",
        description="The id of the stored track input_audio is, when it is one (the studio "
        "sets it when it continues a track): the new track's lineage",
    )

    @field_validator("prompt")
    @classmethod
    def _prompt_has_text(cls, value: str) -> str:
        stripped = value.strip()
        if not stripped:
            raise ValueError("must contain non-whitespace text")
        if "\x00" in stripped:
            raise ValueError("must not contain NUL characters")
        return stripped

    @field_validator("duration")
    @classmethod
    def _within_limit(cls, value: float, info: ValidationInfo) -> float:
        # `parse_generate_request` passes the deployment's limit; a record read back from
        # storage has none, and is held to the contract's
        limit = DurationLimit.of(info.context)
        if value > limit.seconds:
            raise ValueError(limit.message)
        return value

    @field_validator("model")
    @classmethod
    def _served_model(cls, value: str | None, info: ValidationInfo) -> str | None:
        # `parse_generate_request` passes the ids this deployment serves; a record read back
        # from storage has none and keeps the id it was made with
        served = info.context.get("models") if isinstance(info.context, dict) else None
        if value is not None and served and value not in served:
            raise ValueError(f"unknown model {value!r}; served: {', '.join(served)}")
        return value

    @field_validator("continuation_end")
    @classmethod
    def _end_after_start(cls, value: float | None, info: ValidationInfo) -> float | None:
        start = info.data.get("continuation_start")
        if value is not None and start is not None and value <= start:
            raise ValueError(f"must be after continuation_start ({start:g} s)")
        return value

    @property
    def continues(self) -> bool:
        """Whether the request sets a continuation range (then it needs input_audio)."""
        return self.continuation_start > 0 or self.continuation_end is not None


class GenerateRequest(ProducerFields, _Request):
    """Body of ``POST /generate``. Unknown fields are refused: a typo must not be ignored.

    The producers' fields (`tunesmith.production.request`) follow the others."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class GenerateResponse(BaseModel):
    """What ``POST /generate`` answers with."""

    id: str
    s3_url: str | None
    public_url: str
    duration: float
    sample_rate: int
    channels: int
    format: AudioFormat
    model: str = Field(description="The id of the model that made it (GET /models)")
    seed: int
    metadata_url: str = Field(description="The track's JSON record: everything to reproduce it")
    production: dict[str, Any] | None = Field(
        None,
        description="With bpm, key or sections: what the analysis found (tempo_found, stretch, "
        "key_found, key_shift, downbeat...) and the section map",
    )
    warnings: list[str] = Field(
        default_factory=list, description="What was done that may be audible (a large stretch)"
    )


class InputRecord(BaseModel):
    """An uploaded file a track was conditioned on: which bytes, and which part was used."""

    sha256: str
    start: float
    end: float


class TrackRecord(BaseModel):
    """The JSON record beside every track (``<prefix><id>.json``): the request as it ran (its
    seed filled in), the model and engine that ran it, and what came out. POSTing ``request``
    again to a server with the same model and engine (and the same uploads, whose hashes are
    in ``inputs``) gives the same audio, byte for byte."""

    id: str
    created: str  # ISO 8601, UTC
    request: GenerateRequest
    model: str  # the id a request names it by (GET /models)
    checkpoint: str | None = None  # what it was loaded from: a hub id or a directory
    engine: dict[str, str]  # tunesmith version, precision, device, kernels
    seed: int
    duration: float
    sample_rate: int
    channels: int
    format: AudioFormat
    content_type: str
    audio_key: str
    generation_seconds: float | None = None
    inputs: dict[str, InputRecord] = Field(default_factory=dict)
    # bpm/key/sections: the analysis (`tunesmith.production.produce`) and the section map
    production: dict[str, Any] | None = None
    warnings: list[str] = Field(default_factory=list)


JOB_PREFIX = "music-jobs/"  # where job records are stored, beside the tracks' folder


def job_key(job_id: str) -> str:
    """The key of a job's record (``music-jobs/<id>.json``)."""
    return f"{JOB_PREFIX}{job_id}.json"


class JobProgress(BaseModel):
    """How far a job is: decoder steps over every window, and seconds of audio decoded."""

    steps_done: int = 0
    steps_total: int = 0
    audio_seconds: float = 0.0
    # what the audio stream will hold: with bpm, the take before it is cut to the bars
    audio_total: float = 0.0


class JobError(BaseModel):
    """Why a job failed: the error's code and message, as an error response carries them."""

    error: str
    message: str


class Job(BaseModel):
    """A job, as ``GET /jobs/{id}`` answers and ``music-jobs/<id>.json`` stores it.

    The URLs are the track's final ones, known from the start; they resolve once `status` is
    ``succeeded``. `replica` names the server running it, `updated` is when that server last
    wrote the record: a job whose server stopped writing is reported ``failed``."""

    id: str
    status: JobStatus
    created: str  # ISO 8601, UTC
    updated: str
    request: GenerateRequest  # its seed filled in
    progress: JobProgress = Field(default_factory=JobProgress)
    s3_url: str | None
    public_url: str
    metadata_url: str
    audio_url: str | None = Field(
        None, description="The audio while it is made (WAV); null where it cannot be streamed"
    )
    events_url: str | None = None
    result: GenerateResponse | None = None
    error: JobError | None = None
    replica: str = ""

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class TrackSummary(BaseModel):
    """A stored track in the history: its record and where to fetch it."""

    id: str
    created: str
    public_url: str
    metadata_url: str
    record: TrackRecord


class TrackPage(BaseModel):
    """One page of ``GET /tracks``: records newest first, and the cursor of the next page."""

    tracks: list[TrackSummary]
    next: str | None = Field(None, description="Pass as ?before= for the next page; null: last")


def _field_errors(exc: ValidationError) -> list[FieldError]:
    fields = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "field required"
        fields.append(FieldError(loc, msg))
    return fields


def parse_generate_request(
    raw: bytes | str | dict[str, Any],
    *,
    max_duration: float | DurationLimit,
    form: bool = False,
    models: Sequence[str] = (),
) -> GenerateRequest:
    """Validate a request body against the contract and this deployment's duration limit
    (seconds, or a `DurationLimit` whose message says why).

    `form`: the values are a form's strings (``multipart/form-data``), converted to each
    field's type (``"30"`` is a duration of 30); a JSON body must have the types themselves.
    `models`: the model ids this deployment serves (empty: any name passes here)."""
    if not isinstance(max_duration, DurationLimit):
        max_duration = DurationLimit.on_this_server(max_duration)
    data: Any = raw
    if isinstance(raw, bytes | str):
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidRequest([FieldError("body", f"not valid JSON: {exc}")]) from None
    if not isinstance(data, dict):
        raise InvalidRequest([FieldError("body", "must be a JSON object")])
    if form and "sections" in data:  # a list of objects has no form encoding
        raise InvalidRequest([FieldError("sections", "only in a JSON body")])
    try:
        return GenerateRequest.model_validate(
            data, strict=not form, context={"duration_limit": max_duration, "models": list(models)}
        )
    except ValidationError as exc:
        raise InvalidRequest(_field_errors(exc)) from None


def request_json_schema() -> dict[str, Any]:
    """`GenerateRequest`'s JSON schema with its nested definitions (a section) written out
    where they are used: neither an OpenAPI request body nor an API Gateway model resolves
    pydantic's ``#/$defs/...`` references."""
    schema = GenerateRequest.model_json_schema()
    return cast(dict[str, Any], _inline(schema, schema.pop("$defs", {})))


def _inline(node: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inline(item, definitions) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _inline(definitions[str(node["$ref"]).removeprefix("#/$defs/")], definitions)
    return {key: _inline(value, definitions) for key, value in node.items()}
