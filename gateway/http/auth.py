"""Client API-key check for the OpenAI surface, as plain ASGI middleware: it finds the
key's holder and leaves it in the scope for the handlers (`tenant_of`).

Anthropic's Messages API (/v1/messages...) also takes the key as `x-api-key`, as the
`anthropic` SDKs send it, and is refused in Anthropic's error shape. The header is
looked for only there, and only when no Authorization came: the OpenAI path pays
nothing for it."""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.core.keys import KeyRing, Tenant
from gateway.http.errors import anthropic_error, plain_error

__all__ = ["ApiKeyMiddleware", "bearer_token", "tenant_of"]

_TENANT = "gatewise.tenant"
_MESSAGES = "/v1/messages"


def tenant_of(scope: Scope) -> Tenant | None:
    """Who sent this request; None when the gateway has no keys (it is open)."""
    return scope.get(_TENANT)


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class ApiKeyMiddleware:
    """Requires `Authorization: Bearer <key>` on /v1/* (or `x-api-key: <key>` on
    /v1/messages*); open when no key is configured."""

    def __init__(self, app: ASGIApp, keys: KeyRing, prefix: str = "/v1/") -> None:
        self.app = app
        self.keys = keys
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rejection = self.rejection(scope) if scope["type"] == "http" else None
        if rejection is None:
            await self.app(scope, receive, send)
        else:
            await rejection(scope, receive, send)

    def rejection(self, scope: Scope) -> Response | None:
        """The 401 to send, or None when the request may pass."""
        if self.keys.open or not scope["path"].startswith(self.prefix):
            return None
        header = None
        raw = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                known = self.keys.recall(value)  # a key seen before: no parsing
                if known is not None:
                    scope[_TENANT] = known
                    return None
                raw, header = value, value.decode("latin-1")
                break
        token = bearer_token(header)
        if token is not None and (tenant := self.keys.find(token)) is not None:
            self.keys.remember(raw, tenant)
            scope[_TENANT] = tenant
            return None
        anthropic = scope["path"].startswith(_MESSAGES)
        if header is None and anthropic:
            token = _api_key(scope)
            if token is not None and (tenant := self.keys.find(token)) is not None:
                scope[_TENANT] = tenant
                return None
        if token is None:
            how = "x-api-key: <key>" if anthropic else "Authorization: Bearer <key>"
            message = f"You didn't provide an API key. Send it as '{how}'."
        else:
            message = "Incorrect API key provided."
        if anthropic:
            return anthropic_error(401, message)
        return plain_error(401, message, code="invalid_api_key")


def _api_key(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-api-key":
            return value.decode("latin-1").strip() or None
    return None
