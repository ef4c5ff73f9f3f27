"""Where a gateway process is assembled: configuration in, a running ASGI app out.

State that lives across requests is owned by one `Gateway` object, built and wired
here once and started in the app lifespan; no module keeps mutable globals. The HTTP
layer and the admin UI get it through the interfaces they declare.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

from starlette.applications import Starlette

from admin_ui import DIRECT_ONLY, create_admin_app
from gateway.core.config import Config, config_path, load_config
from gateway.core.keys import KeyRing
from gateway.core.logs import EventLog, SummaryLog, configure_logging
from gateway.http.app import create_http_app, readiness
from gateway.http.body import BodyBudget
from gateway.routing.blacklist import Blacklist
from gateway.routing.catalog import Catalog, build_provider
from gateway.routing.comparisons import Comparisons
from gateway.routing.dispatch import Dispatcher
from gateway.routing.evaluation import Evaluator
from gateway.routing.experiments import Experiments
from gateway.routing.feedback import FeedbackService, ResponseIndex
from gateway.routing.fleet import Fleet
from gateway.routing.key_registry import KeyRegistry
from gateway.routing.metrics import RoutingMetrics
from gateway.routing.origins import Origins, new_origin
from gateway.routing.pairwise import PairwiseService
from gateway.routing.quota import Quota, QuotaShare
from gateway.routing.recorder import Recorder
from gateway.routing.selection import Selector
from gateway.routing.tracker import Tracker
from gateway.server.gctune import tune
from gateway.server.metrics import METRICS_DIR_ENV, METRICS_STATE, Metrics
from gateway.server.probes import PROBE_SPARE, STOPPING, Probes
from gateway.server.protocol import InboundLimits
from gateway.server.tracing import tracing_from_env
from gateway.server.workers import WORKERS_ENV
from gateway.storage import StoreError, create_store
from gateway.storage.writer import StoreWriter
from providers.base import Provider

__all__ = ["Gateway", "WorkerApp", "app_factory", "create_app"]

log = logging.getLogger("gatewise")


class Gateway:
    """Everything one gateway process owns, built and wired once, here: providers and
    their pools, the catalog, the selector, the recording chain (tracker, blacklist,
    evaluator, writer), the store. `start()` opens the store and the background tasks;
    `stop()` drains and closes them."""

    def __init__(
        self, config: Config, clock: Callable[[], float] = time.time, workers: int = 1
    ) -> None:
        self.config = config
        self.clock = clock
        self.workers = workers  # processes serving the same port (this one included)
        sel = config.selection
        storage = config.storage
        self.blacklist = Blacklist(
            sel.blacklist_threshold,
            sel.blacklist_base_seconds,
            sel.blacklist_max_seconds,
            clock=clock,
        )
        self.tracker = Tracker(clock=clock)
        models = {m.name: m for m in config.models}
        per_prompt = {
            r.name: {m: models[m].priors.accuracy / 10 for m in r.models}
            for r in config.routes
            if r.per_prompt
        }
        self.prompts = None
        if per_prompt:  # numpy is loaded only when a route routes per prompt
            from gateway.routing.prompt_router import PromptRouter

            self.prompts = PromptRouter(per_prompt, rng=random.Random(sel.seed))
        self.selector = Selector(
            self.tracker,
            self.blacklist,
            sel,
            refresh_seconds=sel.score_refresh_seconds,
            prompts=self.prompts,
        )
        self.store = create_store(storage.url, pool_size=storage.pool_size)
        self.fleet = Fleet(
            new_origin(),
            self.tracker,
            self.blacklist,
            self.store,
            interval=storage.share_interval,
            share=storage.share,
            clock=clock,
            prompts=self.prompts,
        )
        self.writer = StoreWriter(
            self.store,
            flush_interval=storage.flush_interval,
            queue_size=storage.queue_size,
            retention_seconds=storage.retention_days * 86400,
            clock=clock,
        )
        self.index = ResponseIndex()
        self.experiments = Experiments(
            config.experiments,
            {m.name: m for m in config.models},
            {r.name: r for r in config.routes},
            self.store,
            self.fleet.origin,
            benched=self.blacklist.is_blacklisted,
            enabled={m.name for m in config.models if config.provider(m.provider).enabled},
            interval=min(0.5, storage.share_interval),
            clock=clock,
        )
        self.evaluator = Evaluator(
            self.tracker,
            self.index,
            self.writer,
            log_payloads=storage.log_payloads,
            experiments=self.experiments,
        )
        self.events = EventLog("gatewise.attempts")
        self.keys = KeyRing(config.server.api_keys)
        self.quota = Quota(clock=clock)
        self.quota_share = QuotaShare(
            self.fleet.origin, self.quota, self.store, interval=storage.share_interval
        )
        known = {m.name for m in config.models} | {r.name for r in config.routes}
        self.key_registry = KeyRegistry(
            self.keys, self.store, known, interval=min(0.5, storage.share_interval), clock=clock
        )
        traces = tracing_from_env()
        self.tracer_provider = traces[1] if traces is not None else None
        self.traced = traces is not None
        self.recorder = Recorder(
            self.tracker,
            self.blacklist,
            self.evaluator,
            self.writer,
            self.events,
            benches=self.fleet,
            quota=self.quota,
            metrics=RoutingMetrics(),
            tracing=traces[0] if traces is not None else None,
            experiments=self.experiments,
        )
        self.providers: dict[str, Provider] = {
            p.name: build_provider(p, [m for m in config.models if m.provider == p.name])
            for p in config.providers
            if p.enabled
        }
        self.catalog = Catalog(config, self.providers)
        self.comparisons = Comparisons(
            config.comparisons,
            self.catalog,
            self.recorder,
            self.blacklist,
            self.store,
            self.fleet.origin,
            interval=storage.share_interval,
            clock=clock,
        )
        # Rows a crashed process left, folded by whoever outlives it (see origins.py).
        self.origins = Origins(
            self.store,
            self.fleet.origin,
            [
                *self.fleet.folds,
                *self.quota_share.folds,
                *self.comparisons.folds,
                *self.experiments.folds,
            ],
            clock=clock,
        )
        self.dispatcher = Dispatcher(
            self.catalog,
            self.selector,
            self.recorder,
            max_attempts=sel.max_attempts,
            deadline=sel.deadline_seconds,
            wall=clock,
            traces=traces[0] if traces is not None else None,
            experiments=self.experiments,
            shadows=self.comparisons if config.comparisons else None,
        )
        # An answer another worker or replica gave reaches the store within one flush:
        # a rating that arrives here first waits that long for it instead of a 404.
        settle = storage.flush_interval + 0.5
        self.feedback = FeedbackService(
            self.index,
            self.store,
            self.tracker,
            clock,
            settle=lambda: settle if storage.share or workers > 1 else 0.0,
            experiments=self.experiments,
            prompts=self.prompts,
        )
        self.pairwise = PairwiseService(self.feedback, clock)
        refusals = SummaryLog(logging.getLogger("gatewise.inbound"), "inbound_limit", "refused")
        self.bodies = BodyBudget(config.server.max_body_memory, refusals)
        # Workers of one `gatewise serve` share a directory of their counts (one worker: none).
        self.metrics = Metrics(
            self.recorder.metrics,
            self.writer,
            self.blacklist,
            self.selector,
            self.catalog,
            directory=os.environ.get(METRICS_DIR_ENV) if workers > 1 else None,
            clock=clock,
            quota=self.quota,
            bodies=self.bodies,
        )
        self.ready = False

    async def start(self) -> None:
        config = self.config
        try:
            await self.store.open()
            await self.fleet.load()
            await self.key_registry.pull()
            await self.experiments.load()
        except self.store.OUTAGES as exc:
            # Traffic does not wait for the database: route on the configuration's priors
            # (and what this process learns), buffer what is to be stored, and connect in
            # the background (the fleet's task), catching up when it is there.
            log.warning(
                "storage is unavailable at start; serving without it, connecting meanwhile",
                extra={
                    "fields": {
                        "event": "storage_degraded",
                        "error": type(exc).__name__,
                        # A StoreError's words are the store's own, with no secret in them.
                        "detail": str(exc) if isinstance(exc, StoreError) else None,
                    }
                },
            )
        self.writer.start()
        self.evaluator.start()
        self.fleet.start()
        self.key_registry.start()
        self.experiments.start()
        self.metrics.start()
        self.comparisons.start()
        # Always: a key with limits can be made at runtime, and every key's usage is
        # reported fleet-wide and kept across restarts (a lone process's round is one
        # read a second when nothing was counted).
        self.quota_share.start()
        self.origins.start()
        for provider in config.providers:
            if not provider.enabled:
                log.warning(
                    "provider '%s' is disabled: %s not set",
                    provider.name,
                    ", ".join(provider.missing_env),
                )
        if not config.server.api_keys:
            log.warning(
                "NO CLIENT API KEYS CONFIGURED: the gateway is open to anyone who can reach it "
                "(set server.api_keys in %s)",
                config.source,
            )
        if not config.server.admin_token:
            log.warning("no admin token configured: %s", DIRECT_ONLY)
        self.ready = True
        log.info(
            "gatewise ready: %d models, %d routes from %s",
            len(self.catalog.enabled),
            len(config.routes),
            config.source,
        )

    def storage(self) -> dict[str, object]:
        """How storage is doing, for /readyz: "degraded" while writes or the fleet's
        rounds fail, with how much waits and how much was dropped."""
        writer, fleet = self.writer, self.fleet
        degraded = writer.degraded or fleet.failures > 0 or not fleet.loaded
        return {
            "state": "degraded" if degraded else "ok",
            "error": writer.last_error if writer.degraded else None,
            "queued": writer.queued,
            "dropped": writer.dropped,
            "fleet_peers": fleet.peers,
        }

    async def stop(self) -> None:
        self.ready = False
        await self.comparisons.stop()  # its calls' outcomes reach the evaluator and writer
        await self.metrics.close()
        await self.evaluator.close()
        await self.writer.close()
        await self.quota_share.stop()
        await self.key_registry.close()
        await self.experiments.close()
        await self.fleet.close()
        await self.origins.close()  # after every row of this process was folded
        await self.store.close()
        for provider in self.providers.values():
            await provider.aclose()
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()  # exports what is left
        self.events.flush()


def create_app(
    config: Config,
    clock: Callable[[], float] = time.time,
    workers: int = 1,
    probe: socket.socket | None = None,
) -> Starlette:
    """The gateway's ASGI app; with `probe`, a listening socket, the probe port is served
    from the app's start to its stop (gateway/server/probes.py)."""
    gateway = Gateway(config, clock, workers)

    def stopping() -> bool:
        inbound = gateway.metrics.inbound  # the server's, from its first connection on
        return inbound is not None and inbound.draining

    def ready() -> tuple[int, bytes]:
        return (503, STOPPING) if stopping() else readiness(gateway)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        await gateway.start()
        state = {METRICS_STATE: gateway.metrics}  # for the server protocol (Inbound.serve)
        probes = None
        if probe is not None:
            limits = replace(InboundLimits.of(config.server, 0), max_connections=PROBE_SPARE)
            idle = config.server.idle_timeout
            probes = Probes(probe, app, ready, limits, stopping=stopping, idle_timeout=idle)
            probes.start(state)
        try:
            yield state
        finally:
            if probes is not None:
                await probes.stop()
            await gateway.stop()

    admin = create_admin_app(gateway, config.server.admin_token, config.server.metrics_token)
    app = create_http_app(gateway, admin=admin, lifespan=lifespan)
    app.state.gateway = gateway
    return app


def app_factory(probe: socket.socket | None = None) -> Starlette:
    """Entry point for `uvicorn --factory` and worker processes: config from the env."""
    configure_logging(os.environ.get("GATEWISE_LOG_LEVEL", "info"))
    workers = int(os.environ.get(WORKERS_ENV, "1"))
    app = create_app(load_config(config_path()), workers=workers, probe=probe)
    tune()
    return app


class WorkerApp:
    """`app_factory` with the probe port's listener, as uvicorn's factory for worker
    processes: pickled to each (the socket duplicated into it, as uvicorn's own are),
    so that every worker serves the probe port from its own thread."""

    def __init__(self, probe: socket.socket) -> None:
        self.probe = probe

    def __call__(self) -> Starlette:
        return app_factory(self.probe)
