"""What the API tier knows of the AWS deployment it runs in: its variant and that variant's limits.

The CDK app (deploy/) sets two deployment-only settings (`tunesmith.config.Settings`):

    TUNESMITH_VARIANT      serverless | realtime | async | lambda
    TUNESMITH_TIME_LIMIT   seconds one request may take on this deployment: the tightest of
                           API Gateway's wait, SageMaker's 60 s and the function's own limit

With them the function explains its refusals (a track too long for the variant's time limit
names the async variant; a form too large for SageMaker Serverless's 4 MB names that limit)
instead of letting the request time out or fail further on. Without them (the function run
outside the CDK app) the refusals are the plain ones. This module imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, get_args

from tunesmith.config import DEFAULT_MAX_DURATION, HARD_MAX_DURATION
from tunesmith.errors import FieldError, InvalidRequest, PayloadTooLarge
from tunesmith.schema import DurationLimit

if TYPE_CHECKING:
    from tunesmith.config import Settings

__all__ = [
    "ASYNC_MAX_DURATION",
    "INPUT_PREFIX",
    "LAMBDA_EVENT_BODY_BYTES",
    "REQUEST_LIMITS",
    "VARIANTS",
    "Deployment",
    "RequestTooLarge",
    "Variant",
]

Variant = Literal["serverless", "realtime", "async", "lambda"]
VARIANTS: Final[tuple[Variant, ...]] = get_args(Variant)
# The async variant's default duration limit, which refusals elsewhere point to.
ASYNC_MAX_DURATION: Final = DEFAULT_MAX_DURATION
# Where the async variant's function puts a form (uploads included) for SageMaker to read:
# InvokeEndpointAsync takes at most 128 kB inline, anything larger as an S3 input location.
INPUT_PREFIX: Final = "music-inputs/"
# The most body bytes a synchronous Lambda invocation (6 MB, 6291456 bytes) can carry from
# API Gateway once base64 (4/3) and the rest of the event (headers, context: ~32 kB) are added.
LAMBDA_EVENT_BODY_BYTES: Final = (6 * 1024 * 1024 - 32 * 1024) * 3 // 4
# The most bytes one SageMaker invocation takes, per variant (None: no such limit on the way).
REQUEST_LIMITS: Final[Mapping[Variant, int | None]] = {
    "serverless": 4_000_000,  # SageMaker Serverless: 4 MB
    "realtime": 6 * 1024 * 1024,  # InvokeEndpoint: 6 MB (6291456 bytes)
    "async": None,  # the input goes through S3
    "lambda": None,  # no SageMaker: the engine runs in the function
}


class RequestTooLarge(PayloadTooLarge):
    """A request too large for the way it must travel (413), with a message saying why."""

    def __init__(self, limit: int, message: str) -> None:
        super().__init__(limit)
        self.message = message
        self.args = (message,)


@dataclass(frozen=True)
class Deployment:
    """The variant (None: unknown) and its time limit in seconds (None: unknown)."""

    variant: Variant | None = None
    time_limit: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Deployment:
        """``TUNESMITH_VARIANT`` and ``TUNESMITH_TIME_LIMIT`` (validated by `Settings`)."""
        return cls(settings.variant, settings.time_limit)

    def duration_limit(self, max_duration: float) -> DurationLimit:
        """`max_duration`, and the refusal of a longer track saying what the variant allows."""
        if self.variant is None:
            message = f"must be at most {max_duration:g} seconds on this deployment"
        elif self.variant == "async":
            message = (
                f"must be at most {max_duration:g} seconds on this deployment (the async "
                f"variant; -c max_duration=... raises it, up to {HARD_MAX_DURATION:g} s)"
            )
        else:
            limit = self.time_limit
            within = "" if limit is None else f", which must answer within {limit:g} s"
            message = (
                f"must be at most {max_duration:g} seconds on the {self.variant} "
                f"variant{within}; deploy the async variant (-c variant=async) for tracks up "
                f"to {ASYNC_MAX_DURATION:g} s"
            )
        return DurationLimit(max_duration, message)

    def check_duration(self, duration: float, max_duration: float) -> None:
        """Refuse (422) a duration over `max_duration`, saying what the variant allows."""
        limit = self.duration_limit(max_duration)
        if duration > limit.seconds:
            raise InvalidRequest([FieldError("duration", limit.message)])

    def check_request_size(self, size: int) -> None:
        """Refuse (413) a model-tier request larger than this variant's SageMaker takes."""
        limit = REQUEST_LIMITS[self.variant] if self.variant is not None else None
        if limit is None or size <= limit:
            return
        raise RequestTooLarge(
            limit,
            f"the request is {size} bytes with its uploads; the {self.variant} variant's "
            f"SageMaker endpoint takes at most {limit} bytes: send a shorter or more compressed "
            "upload (FLAC, Ogg or MP3)",
        )
