"""Admin-token check for the admin API; without a token, loopback clients only."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.http.auth import bearer_token
from gateway.http.errors import plain_error

__all__ = ["AdminAuthMiddleware"]

_LOOPBACK = ("127.0.0.1", "::1", "localhost")
PROTECTED = ("/performance", "/evaluations", "/admin")
PUBLIC = frozenset({"/admin/openapi.json"})


class AdminAuthMiddleware:
    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if scope["type"] != "http" or not path.startswith(PROTECTED) or path in PUBLIC:
            await self.app(scope, receive, send)
            return
        if self.token is None:
            client = scope.get("client")
            host = client[0] if client else ""
            if host in _LOOPBACK or host.startswith("127."):
                await self.app(scope, receive, send)
                return
            error = plain_error(
                403,
                "The admin API is open on loopback only until an admin token is configured.",
                code="admin_loopback_only",
            )
        else:
            header = next(
                (v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None
            )
            token = bearer_token(header)
            if token is not None and hmac.compare_digest(token.encode(), self.token):
                await self.app(scope, receive, send)
                return
            error = plain_error(
                401,
                "The admin API needs 'Authorization: Bearer <admin token>'.",
                code="invalid_admin_token",
            )
        await error(scope, receive, send)
