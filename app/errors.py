"""HTTP for errors: each use-case error's status, and the API's one error shape
{"error": {"code", "message"}}."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.usecases.errors import (
    N_,
    Conflict,
    Forbidden,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    RateLimited,
    TooLarge,
    Unavailable,
    UseCaseError,
)

log = logging.getLogger(__name__)

STATUS: dict[type[UseCaseError], int] = {
    InvalidInput: 400, NotAuthenticated: 401, Forbidden: 403, NotFound: 404, Conflict: 409,
    TooLarge: 413, RateLimited: 429, Unavailable: 503,
}


def status_of(error: UseCaseError) -> int:
    for kind in type(error).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 400


def headers_of(error: UseCaseError) -> dict[str, str]:
    if isinstance(error, RateLimited | Unavailable):
        return {"Retry-After": str(error.retry_after)}
    return {}


def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


HTTP_CODES = {
    400: "bad_request", 401: "not_authenticated", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 413: "body_too_large", 415: "unsupported_media_type",
}


async def use_case_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, UseCaseError)
    return error_response(status_of(exc), exc.code, exc.message, headers_of(exc))


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail
    if exc.status_code == 404:
        message = "The resource does not exist."
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"{request.method} is not allowed here" + (
            f"; use {allowed}." if allowed else ".")
    return error_response(exc.status_code, code, message, dict(exc.headers or {}))


STORAGE_RETRY_SECONDS = 30


def storage_unavailable() -> Unavailable:
    """What a user hears when the disk refuses a write (full, read-only, failing): the
    store's transactions are atomic, so the failed change was not made."""
    return Unavailable("storage_unavailable", N_(
        "The server cannot save changes right now (its storage is full or read-only); "
        "this change was not saved. Try again later."), STORAGE_RETRY_SECONDS)


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "Something went wrong on the server.")
