"""The one place settings are defined: environment variables prefixed ``TUNESMITH_``.

CLI flags mirror these names (``--s3-bucket`` is ``TUNESMITH_S3_BUCKET``) and win over the
environment. Invalid values fail at start through `load_settings`, with a message naming the
variable, never later in a request.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tunesmith.errors import ConfigError
from tunesmith.storage.base import PREFIX_PATTERN

__all__ = [
    "DEFAULT_MAX_DURATION",
    "DEFAULT_MODEL",
    "HARD_MAX_DURATION",
    "WINDOW_SECONDS",
    "Settings",
    "load_settings",
    "parse_bytes",
]

DEFAULT_MODEL = "facebook/musicgen-small"
# MusicGen was trained on 30 s windows (transformers caps the decoder at 1503 positions);
# longer tracks slide the window (`tunesmith.engine.musicgen.windows`).
WINDOW_SECONDS = 30.0
DEFAULT_MAX_DURATION = 300.0
HARD_MAX_DURATION = 3600.0  # an hour: SageMaker's asynchronous limit
ENV_PREFIX = "TUNESMITH_"
_ENDPOINT_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")  # SageMaker's rule
_MODEL_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")  # what `engine.registry.model_id` gives


class Settings(BaseSettings):
    """Runtime configuration of the service, the engine and the storage backend."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    model: str = Field(
        DEFAULT_MODEL,
        min_length=1,
        description="HF model id or local directory; several: comma-separated, the first the "
        "default",
    )
    model_memory: int | None = Field(
        None,
        description="Memory the loaded models may take together (6GB, 512MB or bytes); past "
        "it the least recently used idle model is unloaded first. Unset: no limit",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "int8", "int4", "fp16", "bf16"] = Field(
        "auto", description="auto: fp32 on CPU (exact), fp16 on CUDA; int8 and int4 are CPU-only"
    )
    max_batch: int = Field(8, ge=1, le=64, description="Requests decoded together")
    step: Literal["auto", "eager", "cuda-graph", "static"] = Field(
        "auto",
        description="The decode step: auto is cuda-graph on CUDA (fp16, bf16, fp32) and eager "
        "on the CPU; static is the cuda-graph step run without a graph",
    )
    batch_window_ms: float = Field(
        20.0, ge=0, le=1000, description="How long an idle engine waits for company"
    )
    storage: Literal["local", "s3"] = "local"
    local_dir: Path = Path("tunesmith-output")
    s3_bucket: str | None = None
    s3_prefix: str = "music-output/"
    url_mode: Literal["public", "presigned"] = "public"
    presign_expires: int = Field(3600, ge=1, le=7 * 24 * 3600)
    public_base_url: str | None = Field(
        None, description="Base URL clients reach this server at (local storage links)"
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: SecretStr | None = Field(
        None, description="The key callers must send; several: comma-separated"
    )
    api_keys_file: Path | None = Field(None, description="More keys, one per line")
    protect_metrics: bool = Field(False, description="Require a key on /metrics too")
    rate_limit: float | None = Field(
        None, gt=0, le=1e6, description="Requests a minute per key (or address) to generate"
    )
    max_duration: float = Field(DEFAULT_MAX_DURATION, gt=0, le=HARD_MAX_DURATION)
    extend_stride: float = Field(
        18.0,
        gt=0,
        lt=WINDOW_SECONDS,
        description="Seconds of new audio each window of a long track adds (audiocraft's 18 s)",
    )
    max_upload_bytes: int = Field(
        10 * 1024 * 1024,
        ge=1024,
        le=1024**3,
        description="Largest input_audio or melody upload accepted",
    )
    max_queue: int = Field(8, ge=1, le=1024, description="Requests admitted at once")
    max_waiting: int = Field(
        32, ge=0, le=65536, description="Requests that may wait for a slot beyond max_queue"
    )
    queue_timeout: float = Field(
        30.0, ge=0, le=3600, description="Seconds a request waits for a slot before a 503"
    )
    request_timeout: float | None = Field(
        None, gt=0, le=86400, description="Seconds a /generate may take before a 504"
    )
    shutdown_grace: float = Field(
        30.0, ge=0, le=3600, description="Seconds in-flight work may finish after SIGTERM"
    )
    max_jobs: int = Field(
        32, ge=1, le=4096, description="Jobs queued or running on this server at once"
    )
    job_heartbeat: float = Field(
        5.0,
        ge=0.1,
        le=300,
        description="Seconds between writes of a running job's record; a record not written "
        "for four of them belongs to a server that stopped, and its job is reported failed",
    )
    max_body_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    # The AWS tiers (tunesmith.aws): the SageMaker container and the Lambda function.
    max_response_bytes: int = Field(
        6 * 1024 * 1024,
        ge=64 * 1024,
        le=1024**3,
        description="Largest audio `tunesmith endpoint` answers with (the payload limit)",
    )
    endpoint_name: str | None = Field(
        None,
        pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$",
        description="SageMaker endpoint the Lambda invokes; unset runs the engine in-process",
    )
    # JSON decoded by `_endpoint_map`, so a malformed value is a ConfigError naming the variable
    endpoints: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description='SageMaker endpoints the Lambda routes to by model, JSON {"model id": '
        '"endpoint name"}, the default first; instead of TUNESMITH_ENDPOINT_NAME',
    )
    invoke_mode: Literal["sync", "async"] = "sync"
    invoke_timeout: float = Field(
        65.0, gt=0, le=3600, description="Seconds the Lambda waits for the endpoint's answer"
    )
    # Set by the CDK app so the Lambda can explain its refusals (`tunesmith.aws.deployment`).
    variant: Literal["serverless", "realtime", "async", "lambda"] | None = None
    time_limit: float | None = Field(
        None, gt=0, le=HARD_MAX_DURATION, description="Seconds a request may take here"
    )

    @field_validator("s3_prefix")
    @classmethod
    def _prefix_shape(cls, value: str) -> str:
        if value and not value.endswith("/"):
            value += "/"
        if not PREFIX_PATTERN.fullmatch(value):
            raise ValueError(
                "must be a relative key prefix such as 'music-output/' (letters, digits, "
                "'.', '_', '-' in each segment; no segment starting with '.')"
            )
        return value

    @field_validator(
        "api_key",
        "api_keys_file",
        "rate_limit",
        "request_timeout",
        "s3_bucket",
        "public_base_url",
        "endpoint_name",
        "variant",
        "time_limit",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("public_base_url")
    @classmethod
    def _base_url_shape(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("endpoints", mode="before")
    @classmethod
    def _endpoint_map(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}  # a JSONDecodeError is a ValueError
        if not isinstance(value, dict):
            raise ValueError('must be a JSON object, {"model id": "endpoint name", ...}')
        for key, name in value.items():
            if not isinstance(key, str) or not _MODEL_ID.fullmatch(key):
                raise ValueError(f"{key!r} is not a model id (letters, digits, '.', '_', '-')")
            if not isinstance(name, str) or not _ENDPOINT_NAME.fullmatch(name):
                raise ValueError(f"{name!r} (for {key!r}) is not a SageMaker endpoint name")
        return value

    @field_validator("model_memory", mode="before")
    @classmethod
    def _memory_size(cls, value: Any) -> Any:
        return None if value is None or value == "" else parse_bytes(value)

    @field_validator("model")
    @classmethod
    def _model_list(cls, value: str) -> str:
        from tunesmith.engine.registry import model_ids

        names = [part.strip() for part in value.split(",")]
        if not all(names):
            raise ValueError("an empty name in the comma-separated list")
        model_ids(names)  # two checkpoints under one id are refused here
        return ",".join(names)

    @property
    def models(self) -> dict[str, str]:
        """The served models, ``{id: checkpoint}``, the default first (`engine.registry`)."""
        from tunesmith.engine.registry import model_ids

        return model_ids(self.model.split(","))

    @property
    def default_model(self) -> str:
        """The checkpoint a request that names no model gets."""
        return self.model.split(",", 1)[0]

    @model_validator(mode="after")
    def _s3_needs_bucket(self) -> Settings:
        if self.storage == "s3" and not self.s3_bucket:
            raise ValueError("TUNESMITH_S3_BUCKET is required when TUNESMITH_STORAGE=s3")
        return self

    @model_validator(mode="after")
    def _one_endpoint_form(self) -> Settings:
        if self.endpoints and self.endpoint_name:
            raise ValueError(
                "TUNESMITH_ENDPOINTS and TUNESMITH_ENDPOINT_NAME are two forms of one setting: "
                "give one"
            )
        return self


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?", re.IGNORECASE)
_UNITS = {"b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}


def parse_bytes(value: object) -> int:
    """A size as bytes: ``6GB``, ``512MB``, ``1.5G``, ``2GiB`` or a plain number of bytes
    (``kB``/``MB``/``GB`` are powers of 1000, ``KiB``/``MiB``/``GiB`` of 1024)."""
    if isinstance(value, bool):
        raise ValueError("must be a size such as 6GB, 512MB or a number of bytes")
    text = repr(value) if isinstance(value, int | float) else str(value).strip()
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size such as 6GB, 512MB or a number of bytes")
    number, unit = match.group(1), (match.group(2) or "b").lower()
    scale = _UNITS[unit[0]]
    if "i" in unit:  # KiB, MiB...: powers of 1024
        scale = 1024 ** round(math.log(scale, 1000))
    size = int(float(number) * scale)
    if size <= 0:
        raise ValueError("must be more than 0 bytes")
    return size


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment plus explicit overrides (None values are ignored).

    Raises `ConfigError` naming each invalid variable.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"]]
            name = ENV_PREFIX + loc[0].upper() if loc else "settings"
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{name}: {msg}" if loc else msg)
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
