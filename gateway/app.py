"""The ASGI application: wires configuration, providers and routes together.

State that lives across requests is owned by one `Gateway` object, created here
and started in the app lifespan; no module keeps mutable globals.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from admin_ui import create_admin_app
from gateway.auth import ApiKeyMiddleware
from gateway.catalog import Catalog, build_provider
from gateway.config import Config, config_path, load_config
from gateway.dispatch import Dispatcher
from gateway.errors import GatewayError, error_response
from gateway.logs import configure_logging
from gateway.routes import proxy_routes
from gateway.types import Attempt
from providers.base import Provider

__all__ = ["Gateway", "app_factory", "create_app"]

log = logging.getLogger("gatewise")


class Gateway:
    """Everything one gateway process owns: providers and their pools, catalog, dispatcher."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.providers: dict[str, Provider] = {}
        self.catalog = Catalog(config, {})
        self.dispatcher = Dispatcher(self.catalog, self._rank, self._record)
        self.ready = False

    async def start(self) -> None:
        config = self.config
        for provider in config.providers:
            if provider.enabled:
                models = [m for m in config.models if m.provider == provider.name]
                self.providers[provider.name] = build_provider(provider, models)
            else:
                log.warning(
                    "provider '%s' is disabled: %s not set",
                    provider.name,
                    ", ".join(provider.missing_env),
                )
        self.catalog = Catalog(config, self.providers)
        self.dispatcher = Dispatcher(
            self.catalog,
            self._rank,
            self._record,
            max_attempts=config.selection.max_attempts,
            deadline=config.selection.deadline_seconds,
        )
        if not config.server.api_keys:
            log.warning(
                "NO CLIENT API KEYS CONFIGURED: the gateway is open to anyone who can reach it "
                "(set server.api_keys in %s)",
                config.source,
            )
        self.ready = True
        log.info(
            "gatewise ready: %d models, %d routes from %s",
            len(self.catalog.enabled),
            len(config.routes),
            config.source,
        )

    async def stop(self) -> None:
        self.ready = False
        for provider in self.providers.values():
            await provider.aclose()

    def _rank(self, job):  # replaced by selection in the selection module
        return list(job.target.candidates)

    def _record(self, attempt: Attempt) -> None:
        pass


def create_app(config: Config) -> Starlette:
    gateway = Gateway(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def readyz(request: Request) -> Response:
        disabled = [
            {"provider": p.name, "missing_env": list(p.missing_env)}
            for p in config.providers
            if not p.enabled
        ]
        body = {
            "status": "ready" if gateway.ready else "starting",
            "models": sorted(gateway.catalog.enabled),
            "disabled_providers": disabled,
        }
        return Response(
            orjson.dumps(body), 200 if gateway.ready else 503, media_type="application/json"
        )

    middleware = [Middleware(ApiKeyMiddleware, api_keys=config.server.api_keys)]
    if config.server.cors is not None:
        middleware.insert(
            0,
            Middleware(
                CORSMiddleware,
                allow_origins=config.server.cors.allow_origins,
                allow_headers=config.server.cors.allow_headers,
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            ),
        )
    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        *proxy_routes(gateway),
        Mount("", app=create_admin_app()),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )
    app.state.gateway = gateway
    return app


async def _http_error(request: Request, exc: Exception) -> Response:
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


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(
        GatewayError(
            500, "The gateway hit an internal error.", type="server_error", code="internal_error"
        )
    )


def app_factory() -> Starlette:
    """Entry point for `uvicorn --factory` and worker processes: config from the env."""
    configure_logging(os.environ.get("GATEWISE_LOG_LEVEL", "info"))
    return create_app(load_config(config_path()))
