"""The ASGI application: wires configuration, providers and routes together.

State that lives across requests is owned by one `Gateway` object, created here
and started in the app lifespan; no module keeps mutable globals.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Mount, Route
from starlette.types import Receive, Scope, Send

from admin_ui import create_admin_app
from gateway.core.config import Config, config_path, load_config
from gateway.core.logs import configure_logging
from gateway.http.auth import ApiKeyMiddleware
from gateway.http.errors import GatewayError, error_response, http_error
from gateway.http.proxy import fast_handlers, proxy_routes
from gateway.routing.blacklist import Blacklist
from gateway.routing.catalog import Catalog, build_provider
from gateway.routing.dispatch import Dispatcher
from gateway.routing.dispatch import log as attempt_log
from gateway.routing.evaluation import Evaluator
from gateway.routing.feedback import FeedbackService
from gateway.routing.responses import ResponseIndex, ResponseRecord
from gateway.routing.selection import Selector
from gateway.routing.tracker import Tracker
from gateway.server.gctune import tune
from gateway.server.workers import WORKERS_ENV
from gateway.storage import Store, create_store
from gateway.storage.writer import StoreWriter
from providers.base import Provider

__all__ = ["Gateway", "app_factory", "create_app"]

log = logging.getLogger("gatewise")


class Gateway:
    """Everything one gateway process owns: pools, catalog, tracker, blacklist, store."""

    def __init__(
        self, config: Config, clock: Callable[[], float] = time.time, workers: int = 1
    ) -> None:
        self.config = config
        self.clock = clock
        self.workers = workers  # processes serving the same port (this one included)
        sel = config.selection
        self.blacklist = Blacklist(
            sel.blacklist_threshold,
            sel.blacklist_base_seconds,
            sel.blacklist_max_seconds,
            clock=clock,
        )
        self.tracker = Tracker(self.blacklist, clock=clock)
        self.selector = Selector(
            self.tracker, self.blacklist, sel, refresh_seconds=sel.score_refresh_seconds
        )
        self.index = ResponseIndex()
        self.evaluator = Evaluator(
            self.tracker, self.index, self._keep, log_payloads=config.storage.log_payloads
        )
        self.feedback: FeedbackService | None = None
        self.providers: dict[str, Provider] = {}
        self.catalog = Catalog(config, {})
        self.dispatcher = self._dispatcher()
        self.store: Store | None = None
        self.writer: StoreWriter | None = None
        self.ready = False

    def _dispatcher(self) -> Dispatcher:
        sel = self.config.selection
        return Dispatcher(
            self.catalog,
            self.selector.rank,
            self.tracker.record,
            max_attempts=sel.max_attempts,
            deadline=sel.deadline_seconds,
            wall=self.clock,
        )

    def _keep(self, record: ResponseRecord) -> None:
        if self.writer is not None:
            self.writer.enqueue_response(record)

    async def start(self) -> None:
        config = self.config
        self.store = create_store(config.storage.url)
        await self.store.open()
        self.tracker.restore(
            await self.store.load_states("stats"), await self.store.load_states("blacklist")
        )
        storage = config.storage
        self.writer = StoreWriter(
            self.store,
            self.tracker,
            flush_interval=storage.flush_interval,
            queue_size=storage.queue_size,
            retention_seconds=storage.retention_days * 86400,
            clock=self.clock,
        )
        self.tracker.sink = self.writer.enqueue
        # Sibling workers' answers reach the store within one flush; wait that long.
        settle = storage.flush_interval + 0.5 if self.workers > 1 else 0.0
        self.feedback = FeedbackService(
            self.index, self.store, self.tracker, self.clock, settle=settle
        )
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
        self.dispatcher = self._dispatcher()
        self.writer.start()
        self.evaluator.start()
        if not config.server.api_keys:
            log.warning(
                "NO CLIENT API KEYS CONFIGURED: the gateway is open to anyone who can reach it "
                "(set server.api_keys in %s)",
                config.source,
            )
        if not config.server.admin_token:
            log.warning("no admin token configured: the admin API is open on loopback only")
        self.ready = True
        log.info(
            "gatewise ready: %d models, %d routes from %s",
            len(self.catalog.enabled),
            len(config.routes),
            config.source,
        )

    async def stop(self) -> None:
        self.ready = False
        await self.evaluator.close()
        if self.writer is not None:
            await self.writer.close()
        if self.store is not None:
            await self.store.close()
        for provider in self.providers.values():
            await provider.aclose()
        attempt_log.flush()


class _GatewayApp(Starlette):
    """Starlette, with the proxy's POST endpoints served before the middleware stack.

    The hot path still gets its API-key check and its own error handling (in the
    endpoint); it skips only the generic layers, which profiles showed it paying for.
    """

    fast: dict[str, Any] | None = None
    auth: ApiKeyMiddleware | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast is not None and scope["type"] == "http" and scope["method"] == "POST":
            handler = self.fast.get(scope["path"])
            if handler is not None:
                assert self.auth is not None
                rejection = self.auth.rejection(scope)
                await (rejection or handler)(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


class _AdminMount(Mount):
    """The admin app takes every path except the OpenAI surface, so that a wrong method
    on /v1/* still gets its 405 instead of the admin app's 404."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope.get("path", "").startswith("/v1/"):
            return Match.NONE, {}
        return super().matches(scope)


def create_app(
    config: Config, clock: Callable[[], float] = time.time, workers: int = 1
) -> Starlette:
    gateway = Gateway(config, clock, workers)

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

    proxy = proxy_routes(gateway)
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
        *proxy,
        _AdminMount("", app=create_admin_app(gateway, config.server.admin_token)),
    ]
    app = _GatewayApp(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: _internal_error},
    )
    app.state.gateway = gateway
    if config.server.cors is None:  # CORS headers must reach every response: no shortcut
        app.fast = fast_handlers(proxy)
        app.auth = ApiKeyMiddleware(app, config.server.api_keys)
    return app


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
    app = create_app(load_config(config_path()), workers=int(os.environ.get(WORKERS_ENV, "1")))
    tune()
    return app
