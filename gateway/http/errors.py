"""OpenAI-shaped errors: every failure a client sees has the same body."""

from __future__ import annotations

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

__all__ = ["GatewayError", "error_body", "error_response", "http_error"]


class GatewayError(Exception):
    """An error that is the gateway's answer to the client, with its HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}


def error_body(message: str, type: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(exc: GatewayError, headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps(error_body(exc.message, exc.type, exc.code, exc.param))
    merged = {**exc.headers, **(headers or {})}
    return Response(body, status_code=exc.status, headers=merged, media_type="application/json")


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"Unknown path: {request.method} {request.url.path}"
        code = "not_found"
    elif exc.status_code == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}"
        code = "method_not_allowed"
    else:
        message, code = str(exc.detail), None
    return error_response(
        GatewayError(exc.status_code, message, code=code), dict(exc.headers or {})
    )
