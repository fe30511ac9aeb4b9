"""The deployment's choices, read from CDK context (``cdk deploy -c variant=async -c ...``).

Context values arrive as strings from the command line and as JSON values from ``cdk.json``;
both are accepted. A bad value stops synthesis with a message naming the key.

Variants and what shapes them (DESIGN.md, "AWS limits"):

    serverless  SageMaker Serverless Inference: CPU only, <= 6144 MB, 4 MB payloads, 60 s per
                invocation; pay per inference, scales to zero (the design's default)
    realtime    a SageMaker real-time endpoint on an instance (ml.g4dn.xlarge: a T4 GPU);
                6 MB payloads, 60 s per invocation; billed per instance-hour, idle or not
                (at least one instance; more under load, up to `max_instances`)
    async       a SageMaker asynchronous endpoint: the API answers 202 at once and the
                endpoint writes the track to S3 (up to 1 h per request, 1 GB payloads);
                its instances follow the queue, down to none while idle
    lambda      no SageMaker: the engine runs in a Lambda container image (CPU, <= 10 GB,
                15 min), behind the same API

Each variant takes tracks as long as it can make within its time limit (`time_limit`: the
tightest of API Gateway's wait, SageMaker's 60 s and the function's own limit) at the speed
assumed for where its engine runs (`SECONDS_PER_AUDIO_SECOND`); longer ones are refused up
front, naming the async variant, rather than timing out. ``-c max_duration=...`` overrides it.
Uploads are capped to what reaches the model tier: a form travels base64-encoded in the
function's event (6 MB) and then to SageMaker (4 MB serverless).

``-c model=A,B`` deploys several models, the first the default, as ``TUNESMITH_MODEL`` takes
them: one endpoint each (`endpoint_names`), or, with ``variant=lambda``, all in the function.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from tunesmith.aws.deployment import (
    ASYNC_MAX_DURATION,
    INPUT_PREFIX,
    LAMBDA_EVENT_BODY_BYTES,
    REQUEST_LIMITS,
    VARIANTS,
    Variant,
)
from tunesmith.config import HARD_MAX_DURATION, WINDOW_SECONDS
from tunesmith.storage.base import PREFIX_PATTERN

__all__ = ["SECONDS_PER_AUDIO_SECOND", "DeployConfig", "Variant", "longest_track"]

CPU_TORCH_INDEX: Final = "https://download.pytorch.org/whl/cpu"
GPU_TORCH_INDEX: Final = "https://download.pytorch.org/whl/cu128"
# API Gateway REST integrations stop at 29 s unless the Regional API's quota is raised.
DEFAULT_API_TIMEOUT: Final = 29
# SageMaker waits at most 60 s for a real-time or serverless container's answer.
SAGEMAKER_SYNC_LIMIT: Final = 60
# Seconds of compute per second of audio where the engine runs, end to end for a short clip:
SECONDS_PER_AUDIO_SECOND: Final = {
    "cpu fp32": 3.9,  # measured: 77.9 ms/step, `tunesmith bench -d 6`, 2-vCPU AVX2 EPYC (README)
    "cpu int8": 1.35,  # measured: 26.8 ms/step, the same run
    "gpu": 1.0,  # assumed, not measured: a T4 (ml.g4dn) decoding about as fast as realtime
}
_ENDPOINT_NAME_CHARS: Final = 63  # SageMaker's limit
# Each window after the first re-reads this much of the last one before adding the stride.
_WINDOW_OVERLAP: Final = 12.0
# Kept from the time limit for what follows the track: storing it and answering.
_ANSWER_SECONDS: Final = 2
# The function's own fields and form headers, beside the uploads.
_FORM_FIELDS_BYTES: Final = 64 * 1024
PAYLOAD_LIMITS: Final[dict[Variant, int]] = {
    "serverless": 4_000_000,  # 4 MB
    "realtime": 6 * 1024 * 1024,  # 6 MB (InvokeEndpoint's body limit, 6291456 bytes)
    "async": 1024**3,  # 1 GB, written to S3
    "lambda": 6 * 1024 * 1024,  # unused: the function stores the track itself
}


@dataclass(frozen=True)
class DeployConfig:
    """Everything the stack varies on; `from_context` reads and checks it."""

    variant: Variant = "serverless"
    url_mode: Literal["public", "presigned"] = "public"
    prefix: str = "music-output/"
    expire_days: int = 0  # 0 keeps tracks until deleted
    retain_bucket: bool = True
    api_key: bool = True
    throttle_rate: float = 5.0  # requests per second, steady
    throttle_burst: int = 10
    api_timeout: int = DEFAULT_API_TIMEOUT  # seconds; above 29 needs a quota increase
    max_duration: float = 0.0  # 0: what the variant can make within its time limit
    # baked into the image at build time; several, comma-separated: the first the default
    model: str = "facebook/musicgen-small"
    precision: str = ""  # default: int8 on a CPU (3x fp32's speed), the engine's auto on a GPU
    serverless_memory: int = 6144
    serverless_concurrency: int = 2
    instance_type: str = "ml.g4dn.xlarge"
    instance_count: int = 1
    async_timeout: int = 3600
    # Application Auto Scaling of the realtime and async variants (`tunesmith_deploy.scaling`)
    min_instances: int = 0  # async may reach 0 while idle; a real-time variant keeps 1
    max_instances: int = 2
    invocations_target: float = 4.0  # realtime: invocations per instance per minute
    backlog_target: float = 2.0  # async: queued requests per instance
    scale_in_cooldown: int = 600  # seconds
    scale_out_cooldown: int = 300
    lambda_memory: int = 10240
    lambda_timeout: int = 900
    endpoint_name: str = ""  # default: tunesmith-<variant>
    torch_index: str = ""  # default: CPU wheels, or CUDA wheels on a GPU instance

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("variant", self.variant in VARIANTS, f"one of {', '.join(VARIANTS)}"),
            ("url_mode", self.url_mode in ("public", "presigned"), "public or presigned"),
            ("prefix", bool(self.prefix) and PREFIX_PATTERN.fullmatch(self.prefix) is not None
             and not self.prefix.startswith(INPUT_PREFIX),
             f"a key prefix such as music-output/, outside {INPUT_PREFIX}"),
            ("expire_days", 0 <= self.expire_days <= 36500, "0 (keep) to 36500 days"),
            ("throttle_rate", 0 < self.throttle_rate <= 10000, "> 0 requests per second"),
            ("throttle_burst", 0 < self.throttle_burst <= 5000, "1 to 5000"),
            ("api_timeout", 1 <= self.api_timeout <= 900, "1 to 900 seconds"),
            ("max_duration",
             self.max_duration == 0 or 1 <= self.max_duration <= HARD_MAX_DURATION,
             f"1 to {HARD_MAX_DURATION:g} seconds (0: what the variant can make in time)"),
            ("serverless_memory", self.serverless_memory in range(1024, 6145, 1024),
             "1024, 2048, 3072, 4096, 5120 or 6144 MB"),
            ("serverless_concurrency", 1 <= self.serverless_concurrency <= 200, "1 to 200"),
            ("instance_type", self.instance_type.startswith("ml."), "a SageMaker type, ml.*"),
            ("instance_count", 1 <= self.instance_count <= 100, "1 to 100"),
            ("async_timeout", 1 <= self.async_timeout <= 3600, "1 to 3600 seconds"),
            ("min_instances", 0 <= self.min_instances <= 100, "0 to 100"),
            ("max_instances",
             max(1, self.min_instances, self.instance_count) <= self.max_instances <= 100,
             f"{max(1, self.min_instances, self.instance_count)} to 100 (at least min_instances "
             "and instance_count)"),
            ("invocations_target", 0 < self.invocations_target <= 100000,
             "> 0 invocations per instance per minute"),
            ("backlog_target", 0 < self.backlog_target <= 100000, "> 0 requests per instance"),
            ("scale_in_cooldown", 0 <= self.scale_in_cooldown <= 86400, "0 to 86400 seconds"),
            ("scale_out_cooldown", 0 <= self.scale_out_cooldown <= 86400, "0 to 86400 seconds"),
            ("lambda_memory", 128 <= self.lambda_memory <= 10240, "128 to 10240 MB"),
            ("lambda_timeout", 1 <= self.lambda_timeout <= 900, "1 to 900 seconds"),
            ("endpoint_name",
             re.fullmatch(r"([a-zA-Z0-9](-*[a-zA-Z0-9]){0,62})?", self.endpoint_name) is not None,
             "a SageMaker endpoint name (letters, digits, hyphens; at most 63)"),
            ("model", _distinct_models(self.model, self.sagemaker_endpoint_name),
             "checkpoints, comma-separated, with distinct ids (the last path parts)"),
        ]  # fmt: skip
        for key, ok, expected in checks:
            if not ok:
                raise ValueError(f"context {key}={getattr(self, key)!r}: must be {expected}")

    @classmethod
    def from_context(cls, get: Callable[[str], Any]) -> DeployConfig:
        """Read each field from CDK context (`get` is ``node.try_get_context``)."""
        values: dict[str, Any] = {}
        for name, default in cls().__dict__.items():
            raw = get(name)
            if raw is not None:
                values[name] = _coerce(name, raw, type(default))
        return cls(**values)

    # -- what the variant implies ------------------------------------------------------------

    @property
    def uses_sagemaker(self) -> bool:
        return self.variant != "lambda"

    @property
    def gpu(self) -> bool:
        """Whether the endpoint runs on a GPU instance (the accelerated ml.g*/ml.p* types)."""
        return self.variant in ("realtime", "async") and self.instance_type.startswith(
            ("ml.g", "ml.p")
        )

    @property
    def scales(self) -> bool:
        """Whether the endpoint's instance count follows its load (the instance variants)."""
        return self.variant in ("realtime", "async")

    @property
    def scaling_min(self) -> int:
        """The fewest instances: async may have none while idle, a real-time variant needs one."""
        return self.min_instances if self.variant == "async" else max(1, self.min_instances)

    @property
    def sagemaker_endpoint_name(self) -> str:
        """The default model's endpoint name (the one endpoint's, with one model)."""
        return self.endpoint_name or f"tunesmith-{self.variant}"

    @property
    def models(self) -> dict[str, str]:
        """``{model id: checkpoint}``, the default first (ids as the server gives them)."""
        from tunesmith.engine.registry import model_ids

        return model_ids(name.strip() for name in self.model.split(","))

    @property
    def endpoint_names(self) -> dict[str, str]:
        """``{model id: endpoint name}``: the default keeps `sagemaker_endpoint_name`, so adding
        a model leaves the endpoint already deployed as it is; each other adds its id."""
        base = self.sagemaker_endpoint_name
        return {
            model: base if index == 0 else _endpoint_name(base, model)
            for index, model in enumerate(self.models)
        }

    @property
    def torch_wheels(self) -> str:
        return self.torch_index or (GPU_TORCH_INDEX if self.gpu else CPU_TORCH_INDEX)

    @property
    def payload_limit(self) -> int:
        return PAYLOAD_LIMITS[self.variant]

    @property
    def invoke_timeout(self) -> int:
        """How long the function waits for the model tier (async: the endpoint's time limit)."""
        if self.variant == "async":
            return self.async_timeout
        # answer (504) before API Gateway gives up, keeping ~2 s to store the track
        return max(1, min(self.api_timeout - 2, SAGEMAKER_SYNC_LIMIT + 5))

    @property
    def time_limit(self) -> int:
        """Seconds one request may take on this variant, answer included."""
        if self.variant == "async":
            return self.async_timeout
        if self.variant == "lambda":
            return max(1, min(self.api_timeout, self.lambda_timeout) - _ANSWER_SECONDS)
        return max(1, min(self.api_timeout - _ANSWER_SECONDS, SAGEMAKER_SYNC_LIMIT))

    @property
    def engine_precision(self) -> str:
        """``TUNESMITH_PRECISION`` for the engine: as asked, else int8 on a CPU, auto on a GPU."""
        return self.precision or ("auto" if self.gpu else "int8")

    @property
    def speed(self) -> float:
        """The assumed seconds of compute per second of audio (`SECONDS_PER_AUDIO_SECOND`)."""
        if self.gpu:
            return SECONDS_PER_AUDIO_SECOND["gpu"]
        int8 = self.engine_precision == "int8"
        return SECONDS_PER_AUDIO_SECOND["cpu int8" if int8 else "cpu fp32"]

    @property
    def duration_limit(self) -> float:
        """The longest track the API takes: ``-c max_duration``, else what fits in time."""
        if self.max_duration:
            return self.max_duration
        longest = longest_track(self.time_limit, self.speed)
        return min(longest, ASYNC_MAX_DURATION) if self.variant == "async" else longest

    @property
    def upload_limit(self) -> int:
        """The largest upload that can reach the model tier in one request."""
        limit = REQUEST_LIMITS[self.variant]
        body = LAMBDA_EVENT_BODY_BYTES if limit is None else min(limit, LAMBDA_EVENT_BODY_BYTES)
        return body - _FORM_FIELDS_BYTES

    @property
    def function_timeout(self) -> int:
        """The Lambda function's own time limit, seconds."""
        if self.variant == "lambda":
            return self.lambda_timeout
        if self.variant == "async":
            return 30  # it only queues the request
        return self.invoke_timeout + 10


def longest_track(seconds: float, speed: float) -> float:
    """The longest track, whole seconds, made in `seconds` at `speed` (compute seconds per
    audio second). Past one window, each stride of new audio also re-reads the overlap."""
    made = seconds / speed
    if made > WINDOW_SECONDS:
        stride = WINDOW_SECONDS - _WINDOW_OVERLAP
        made = WINDOW_SECONDS + (made - WINDOW_SECONDS) * stride / WINDOW_SECONDS
    return float(max(1, min(math.floor(made), HARD_MAX_DURATION)))


def _endpoint_name(base: str, model: str) -> str:
    """`base` and the model's id as a SageMaker endpoint name (letters, digits, hyphens, at most
    63): a longer one keeps its start and ends in a hash of the id, to stay distinct."""
    name = f"{base}-{re.sub(r'[^a-zA-Z0-9]+', '-', model).strip('-') or 'model'}"
    if len(name) <= _ENDPOINT_NAME_CHARS:
        return name
    digest = hashlib.sha256(model.encode()).hexdigest()[:8]
    return f"{name[: _ENDPOINT_NAME_CHARS - 9].rstrip('-')}-{digest}"


def _distinct_models(model: str, base: str) -> bool:
    """Whether `model` lists checkpoints whose ids, and endpoint names, are all distinct."""
    from tunesmith.engine.registry import model_ids

    names = [name.strip() for name in model.split(",")]
    try:
        ids = model_ids(names)
    except ValueError:
        return False
    endpoints = {_endpoint_name(base, model) for model in list(ids)[1:]} | {base}
    return all(names) and len(endpoints) == len(ids)


def _coerce(name: str, raw: Any, kind: type) -> Any:
    """A context value as the field's type ("true"/"false", numbers given as strings)."""
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("true", "1", "yes"):
            return True
        if text in ("false", "0", "no"):
            return False
        raise ValueError(f"context {name}={raw!r}: must be true or false")
    if kind in (int, float):
        try:
            number = float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"context {name}={raw!r}: must be a number") from None
        if kind is int:
            if not number.is_integer():
                raise ValueError(f"context {name}={raw!r}: must be a whole number")
            return int(number)
        return number
    if isinstance(raw, list):  # cdk.json may list the models
        return ",".join(str(item) for item in raw)
    return str(raw)
