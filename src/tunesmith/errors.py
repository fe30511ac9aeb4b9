"""tunesmith's exceptions: every error the service raises on purpose is one of these.

Foreign errors (botocore, OSError from the hub, torch out-of-memory) are translated into this
tree at the boundary that meets them (storage backends, the engine loader); the HTTP layer maps
the tree to status codes in exactly one place (`tunesmith.api.errors`).

    TunesmithError                      base; `status` is the HTTP status it maps to
    ├── ConfigError                     invalid settings at start (names the setting)
    ├── InvalidRequest (422)            the caller's input is wrong; `fields` name each problem
    │   ├── PayloadTooLarge (413)       request body over the limit
    │   ├── ResponseTooLarge (413)      the result cannot fit the transport's payload limit
    │   ├── UnsupportedMediaType (415)  a request body type the receiver does not take
    │   └── NotAcceptable (406)         no response type the caller accepts can be produced
    ├── Unauthorized (401)              missing or wrong API key
    ├── NotFound (404)                  unknown stored object or route
    ├── MethodNotAllowed (405)          a route called with the wrong HTTP method
    ├── Conflict (409)                  the resource's state forbids it (cancel a finished job)
    ├── Unavailable (503)               try again later; carries `retry_after` seconds
    │   ├── ModelNotReady               the model is still loading
    │   ├── Overloaded                  the request queue is full
    │   ├── ShuttingDown                the server stopped before the request finished
    │   └── RateLimited (429)           this caller sent too many requests
    ├── ModelUnavailable (503)          the model cannot be loaded (offline, wrong path)
    ├── GenerationFailed (500)          the engine failed part-way (nothing was stored)
    │   └── Canceled                    the request was canceled before it finished
    │       ├── DeadlineExceeded (504)  it ran past its deadline (nothing was stored)
    │       └── ClientGone (499)        its client disconnected (nginx's status for it)
    ├── UpstreamError (502)             a remote tier (model endpoint, object store) failed
    │   ├── StorageError                the object store refused or failed the write/read
    │   └── UpstreamTimeout (504)       a remote tier did not answer in time
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Canceled",
    "ClientGone",
    "DeadlineExceeded",
    "ConfigError",
    "Conflict",
    "FieldError",
    "GenerationFailed",
    "InvalidRequest",
    "MethodNotAllowed",
    "ModelNotReady",
    "ModelUnavailable",
    "NotAcceptable",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "RateLimited",
    "ResponseTooLarge",
    "ShuttingDown",
    "StorageError",
    "TunesmithError",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "UpstreamError",
    "UpstreamTimeout",
]


class TunesmithError(Exception):
    """Base of every error tunesmith raises on purpose."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, object]:
        """The JSON body an API answers with for this error."""
        return {"error": self.code, "message": self.message}

    def headers(self) -> dict[str, str]:
        """HTTP headers that go with this error's response (``Retry-After`` for a 503)."""
        return {"Retry-After": "60"} if self.status == 503 else {}


class ConfigError(TunesmithError):
    """A setting is invalid; raised at start, before any request is taken."""

    code = "config_error"


@dataclass(frozen=True)
class FieldError:
    """One problem with one input field (`field` is a dotted path, e.g. ``duration``)."""

    field: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class InvalidRequest(TunesmithError):
    status = 422
    code = "invalid_request"

    def __init__(self, fields: list[FieldError], message: str | None = None) -> None:
        if message is None:
            message = "; ".join(f"{f.field}: {f.message}" for f in fields) or "invalid request"
        super().__init__(message)
        self.fields = fields

    def to_dict(self) -> dict[str, object]:
        body = super().to_dict()
        body["fields"] = [f.to_dict() for f in self.fields]
        return body


class PayloadTooLarge(InvalidRequest):
    status = 413
    code = "payload_too_large"

    def __init__(self, limit: int, field: str = "body") -> None:
        what = "request body" if field == "body" else "upload"
        super().__init__([FieldError(field, f"{what} exceeds {limit} bytes")])
        self.limit = limit


class ResponseTooLarge(InvalidRequest):
    status = 413
    code = "response_too_large"


class UnsupportedMediaType(InvalidRequest):
    status = 415
    code = "unsupported_media_type"


class NotAcceptable(InvalidRequest):
    status = 406
    code = "not_acceptable"


class Unauthorized(TunesmithError):
    status = 401
    code = "unauthorized"


class NotFound(TunesmithError):
    status = 404
    code = "not_found"


class Conflict(TunesmithError):
    status = 409
    code = "conflict"


class MethodNotAllowed(TunesmithError):
    status = 405
    code = "method_not_allowed"


class Unavailable(TunesmithError):
    status = 503
    code = "unavailable"

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class ModelNotReady(Unavailable):
    code = "model_loading"


class Overloaded(Unavailable):
    code = "overloaded"


class ShuttingDown(Unavailable):
    code = "shutting_down"


class RateLimited(Unavailable):
    status = 429
    code = "rate_limited"


class ModelUnavailable(TunesmithError):
    status = 503
    code = "model_unavailable"


class GenerationFailed(TunesmithError):
    status = 500
    code = "generation_failed"


class Canceled(GenerationFailed):
    code = "canceled"


class DeadlineExceeded(Canceled):
    status = 504
    code = "deadline_exceeded"


class ClientGone(Canceled):
    status = 499
    code = "client_closed_request"


class UpstreamError(TunesmithError):
    status = 502
    code = "upstream_error"


class StorageError(UpstreamError):
    code = "storage_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
