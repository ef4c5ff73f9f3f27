"""Admin-token check for the admin API; without a token, direct local requests only.

"Loopback" alone is no guard: a reverse proxy on the same host makes every request it
carries come from 127.0.0.1. So a request is served without a token only when nothing
about it says it was relayed: the peer is a loopback address, it carries no forwarding
header (any proxy that adds one gives itself away), its Host names this host by a
loopback name (a proxy passing the public Host, and DNS rebinding, fail here), a
browser's Origin, if sent, is a loopback one too (another site's page cannot act on the
admin API), and it speaks HTTP/1.1 or later (nginx's default `proxy_pass` speaks 1.0).
A relay that changes none of these (a TCP tunnel, a bare HTTP/1.1 proxy) still looks
local: `DIRECT_ONLY` is what the start-up warning and the README say.
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.http.auth import bearer_token
from gateway.http.errors import plain_error

__all__ = ["DIRECT_ONLY", "AdminAuthMiddleware", "is_direct_local"]

PROTECTED = ("/performance", "/evaluations", "/admin", "/metrics", "/experiments", "/comparisons")
METRICS = "/metrics"  # also read with the metrics token, which reads nothing else
PUBLIC = frozenset({"/admin/openapi.json"})

DIRECT_ONLY = (
    "without an admin token the admin API answers only requests made directly on this "
    "host: from a loopback address, to a loopback Host name, over HTTP/1.1, with no "
    "Forwarded, X-Forwarded-*, X-Real-IP, Via or other proxy header, and no foreign "
    "Origin. A proxy or tunnel on this host that adds none of these makes outside "
    "clients look local: set server.admin_token before putting one in front."
)

# Headers a relay adds to say what it relayed: their presence means "not direct".
_RELAY_HEADERS = frozenset(
    {
        b"forwarded",
        b"via",
        b"x-real-ip",
        b"x-client-ip",
        b"true-client-ip",
        b"cf-connecting-ip",
        b"fastly-client-ip",
        b"x-cluster-client-ip",
        b"x-original-forwarded-for",
    }
)
_RELAY_PREFIXES = (b"x-forwarded-", b"x-envoy-")


def _loopback_address(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _loopback_name(host: str) -> bool:
    """A Host or Origin host that names this machine: localhost or a loopback address."""
    host = host.lower().rstrip(".")
    return host == "localhost" or host.endswith(".localhost") or _loopback_address(host)


def _host_of(authority: str) -> str:
    if authority.startswith("["):  # [::1]:8000
        return authority[1 : authority.find("]")] if "]" in authority else ""
    return authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority


def is_direct_local(scope: Scope) -> bool:
    """True when the request came straight from this host, as the module says."""
    client = scope.get("client")
    if not client or not _loopback_address(str(client[0])):
        return False
    if scope.get("http_version") in ("1.0", "0.9"):
        return False
    host = origin = None
    for name, value in scope["headers"]:
        if name in _RELAY_HEADERS or name.startswith(_RELAY_PREFIXES):
            return False
        if name == b"host":
            host = value.decode("latin-1")
        elif name == b"origin":
            origin = value.decode("latin-1")
    if host is None or not _loopback_name(_host_of(host)):
        return False
    if origin is not None and origin != "null":
        parts = urlsplit(origin)
        if not parts.hostname or not _loopback_name(parts.hostname):
            return False
    return True


class AdminAuthMiddleware:
    def __init__(self, app: ASGIApp, token: str | None, metrics_token: str | None = None) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.metrics_token = metrics_token.encode() if metrics_token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if scope["type"] != "http" or not path.startswith(PROTECTED) or path in PUBLIC:
            await self.app(scope, receive, send)
            return
        if path == METRICS and self.metrics_token is not None:
            if self._presents(scope, self.metrics_token) or (
                self.token is not None and self._presents(scope, self.token)
            ):
                await self.app(scope, receive, send)
                return
            error = plain_error(
                401,
                "/metrics needs 'Authorization: Bearer <metrics token>'.",
                code="invalid_metrics_token",
            )
        elif self.token is None:
            if is_direct_local(scope):
                await self.app(scope, receive, send)
                return
            error = plain_error(
                403,
                "Without an admin token the admin API answers only direct requests from "
                "this host (not relayed by a proxy); configure server.admin_token.",
                code="admin_loopback_only",
            )
        else:
            if self._presents(scope, self.token):
                await self.app(scope, receive, send)
                return
            error = plain_error(
                401,
                "The admin API needs 'Authorization: Bearer <admin token>'.",
                code="invalid_admin_token",
            )
        await error(scope, receive, send)

    @staticmethod
    def _presents(scope: Scope, expected: bytes) -> bool:
        header = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None
        )
        token = bearer_token(header)
        return token is not None and hmac.compare_digest(token.encode(), expected)
