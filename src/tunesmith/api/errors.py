"""The one place errors become HTTP responses: always JSON, never an HTML page or traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunesmith.errors import FieldError, InvalidRequest, TunesmithError

__all__ = ["error_response", "install_error_handlers"]

log = logging.getLogger(__name__)


def error_response(exc: TunesmithError) -> JSONResponse:
    """The JSON response for one of tunesmith's errors, with Retry-After when it applies."""
    return JSONResponse(exc.to_dict(), status_code=exc.status, headers=exc.headers())


async def _tunesmith_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TunesmithError)
    if exc.status >= 500:
        log.warning("%s %s -> %d: %s", request.method, request.url.path, exc.status, exc)
    return error_response(exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = [
        FieldError(".".join(str(p) for p in err["loc"][1:]) or "request", err["msg"])
        for err in exc.errors()
    ]
    return error_response(InvalidRequest(fields))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    body = {"error": codes.get(exc.status_code, "http_error"), "message": str(exc.detail)}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error in %s %s", request.method, request.url.path)
    body = {"error": "internal_error", "message": "internal server error; see the server log"}
    return JSONResponse(body, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(TunesmithError, _tunesmith_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
