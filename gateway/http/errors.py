"""The one place errors become HTTP responses: in OpenAI's error shape, or in
Anthropic's for its Messages API (`anthropic_error_response`).

Domain errors (`gateway.core.errors`) carry no status; the table below gives each
kind its status and OpenAI error type, and `retry_after` becomes a header here. The
Anthropic error type follows from the same status, so both shapes always agree.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from gateway.core.errors import (
    Conflict,
    GatewayError,
    InvalidFeedback,
    InvalidFilter,
    InvalidRequest,
    LengthRequired,
    MemoryBusy,
    ModelUnavailable,
    NoModelAvailable,
    NotAllowed,
    NotFound,
    QuotaExceeded,
    RateLimitExceeded,
    RejectedByUpstream,
    RequestTooLarge,
    ShuttingDown,
    StoreUnavailable,
    TokenRateLimitExceeded,
    UpstreamFailed,
)

__all__ = [
    "anthropic_error",
    "anthropic_error_body",
    "anthropic_error_response",
    "anthropic_error_type",
    "error_body",
    "error_response",
    "http_error",
    "internal_error",
    "plain_error",
    "status_of",
]

_CLIENT = "invalid_request_error"
_SERVER = "server_error"

# Most specific first: the first class an error is an instance of decides.
_STATUS: tuple[tuple[type[GatewayError], int, str], ...] = (
    (RequestTooLarge, 413, _CLIENT),
    (LengthRequired, 411, _CLIENT),
    (InvalidFeedback, 422, _CLIENT),
    (InvalidFilter, 422, _CLIENT),
    (InvalidRequest, 400, _CLIENT),
    (NotAllowed, 403, _CLIENT),
    (QuotaExceeded, 429, "insufficient_quota"),  # OpenAI's types for these
    (TokenRateLimitExceeded, 429, "tokens"),
    (RateLimitExceeded, 429, "requests"),
    (NotFound, 404, _CLIENT),
    (Conflict, 409, _CLIENT),
    (ModelUnavailable, 503, _SERVER),
    (NoModelAvailable, 503, _SERVER),
    (StoreUnavailable, 503, _SERVER),
    (ShuttingDown, 503, _SERVER),
    (MemoryBusy, 503, _SERVER),
    (RejectedByUpstream, 400, _CLIENT),
    (UpstreamFailed, 502, _SERVER),
)


def status_of(exc: GatewayError) -> tuple[int, str]:
    """The HTTP status and OpenAI error type of a domain error."""
    if isinstance(exc, UpstreamFailed):
        if exc.timed_out:
            return 504, _SERVER
        if exc.rate_limited:
            return 503, _SERVER
    if isinstance(exc, RejectedByUpstream):
        status = exc.upstream_status
        return (status if status is not None and 400 <= status < 500 else 400), _CLIENT
    for kind, status, type_ in _STATUS:
        if isinstance(exc, kind):
            return status, type_
    return 500, _SERVER


def error_body(
    message: str, type: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(exc: GatewayError, headers: dict[str, str] | None = None) -> Response:
    status, type_ = status_of(exc)
    merged = dict(headers or {})
    merged.update(exc.headers)
    if exc.retry_after is not None:
        merged["retry-after"] = str(math.ceil(exc.retry_after))
    return plain_error(status, exc.message, type_, exc.code, exc.param, merged)


def plain_error(
    status: int,
    message: str,
    type: str = _CLIENT,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """An OpenAI-shaped error that no domain error stands for (auth, routing, 500)."""
    body = orjson.dumps(error_body(message, type, code, param))
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def internal_error(path: str) -> Response:
    """A 500 for what the gateway did not foresee, in the shape of the API asked."""
    message = "The gateway hit an internal error."
    if path.startswith("/v1/messages"):  # Anthropic's API, Anthropic's shape
        return anthropic_error(500, message)
    return plain_error(500, message, _SERVER, "internal_error")


# Anthropic's error types by status (its documented table); 503 has no type of its own
# there and means the same as its 529.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def anthropic_error_type(status: int) -> str:
    found = _ANTHROPIC_TYPES.get(status)
    if found is not None:
        return found
    return "invalid_request_error" if status < 500 else "api_error"


def anthropic_error_body(message: str, type: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type, "message": message}}


def anthropic_error_response(exc: GatewayError, headers: dict[str, str] | None = None) -> Response:
    """A domain error as Anthropic's Messages API reports errors, same status."""
    status, _ = status_of(exc)
    merged = dict(headers or {})
    merged.update(exc.headers)
    if exc.retry_after is not None:
        merged["retry-after"] = str(math.ceil(exc.retry_after))
    return anthropic_error(status, exc.message, merged)


def anthropic_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps(anthropic_error_body(message, anthropic_error_type(status)))
    return Response(body, status_code=status, headers=headers, media_type="application/json")


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (no route, wrong method) in the shape of the API asked."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message, code = f"Unknown path: {request.method} {request.url.path}", "not_found"
    elif exc.status_code == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}"
        code = "method_not_allowed"
    else:
        message, code = str(exc.detail), None
    headers = dict(exc.headers or {})
    if request.url.path.startswith("/v1/messages"):  # Anthropic's API, Anthropic's shape
        return anthropic_error(exc.status_code, message, headers)
    return plain_error(exc.status_code, message, code=code, headers=headers)
