"""The ASGI application: the OpenAI surface, Anthropic's Messages API, health checks and
(mounted by the server) the admin app, behind the client API-key check and optional
CORS."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.http.auth import ApiKeyMiddleware
from gateway.http.errors import http_error, internal_error
from gateway.http.messages import messages_routes
from gateway.http.pairwise import pairwise_routes
from gateway.http.proxy import Backend, fast_handlers, proxy_routes
from gateway.http.request_id import stamped

__all__ = ["create_http_app", "readiness"]

log = logging.getLogger("gatewise")


class _GatewayApp(Starlette):
    """Starlette, with the proxy's POST endpoints served before the middleware stack.

    The hot path still gets its API-key check and its own error handling (in the
    endpoint); it skips only the generic layers, which profiles showed it paying for.
    `fast` maps those paths to their endpoints (empty: no shortcut).
    """

    def __init__(
        self,
        fast: Mapping[str, Callable[[Scope, Receive, Send], Any]],
        auth: ApiKeyMiddleware,
        **starlette: Any,
    ) -> None:
        super().__init__(**starlette)
        self.fast = fast
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        if self.fast and scope["method"] == "POST":
            handler = self.fast.get(scope["path"])
            if handler is not None:
                rejection = self.auth.rejection(scope)
                if rejection is None:
                    await handler(scope, receive, send)  # sets its own x-request-id
                else:
                    await rejection(scope, receive, stamped(scope, send))
                return
        await super().__call__(scope, receive, stamped(scope, send))


class _AdminMount(Mount):
    """The admin app takes every path except the OpenAI surface, so that a wrong method
    on /v1/* still gets its 405 instead of the admin app's 404."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope.get("path", "").startswith("/v1/"):
            return Match.NONE, {}
        return super().matches(scope)


def create_http_app(
    gateway: Backend,
    *,
    admin: ASGIApp | None = None,
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[Any]] | None = None,
) -> Starlette:
    config = gateway.config

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def readyz(request: Request) -> Response:
        status, body = readiness(gateway)
        return Response(body, status, media_type="application/json")

    proxy = proxy_routes(gateway) + messages_routes(gateway) + pairwise_routes(gateway)
    keys = gateway.keys
    middleware = [Middleware(ApiKeyMiddleware, keys=keys)]
    cors = config.server.cors
    if cors is not None:
        middleware.insert(
            0,
            Middleware(
                CORSMiddleware,
                allow_origins=cors.allow_origins,
                allow_headers=cors.allow_headers,
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            ),
        )
    routes: list[Route | Mount] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        *proxy,
    ]
    if admin is not None:
        routes.append(_AdminMount("", app=admin))
    # CORS headers must reach every response: with CORS on, no shortcut.
    fast = fast_handlers(proxy) if cors is None else {}
    return _GatewayApp(
        fast,
        ApiKeyMiddleware(_no_app, keys),  # only its rejection() is used, on the fast path
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: _internal_error},
    )


def readiness(gateway: Backend) -> tuple[int, bytes]:
    """/readyz's status and body: 503 while starting; storage's state beside it."""
    disabled = [
        {"provider": p.name, "missing_env": list(p.missing_env)}
        for p in gateway.config.providers
        if not p.enabled
    ]
    body = {
        "status": "ready" if gateway.ready else "starting",
        "models": sorted(gateway.catalog.enabled),
        "disabled_providers": disabled,
        # Degraded storage keeps the gateway ready: traffic does not need the store.
        "storage": gateway.storage(),
    }
    return (200 if gateway.ready else 503), orjson.dumps(body)


async def _no_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("the fast path's key check passes requests on itself")


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return internal_error(request.url.path)
