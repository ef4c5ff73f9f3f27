"""GET /metrics: the Prometheus text of what every worker of this replica served.

Each worker counts in memory (`gateway.routing.metrics.RoutingMetrics`, a few µs per
attempt) and, every `interval` seconds and at shutdown, writes its cumulative counts to
`<dir>/<pid>.json` (`GATEWISE_METRICS_DIR`, a fresh directory `gatewise serve` makes for
its workers). The worker that answers a scrape adds its own live counts to every other
worker's file: counters and histograms are the sum over workers, at most one interval
old for the others. A worker that died keeps its file, so counters never go back;
per-process gauges (the storage queue) count only files written within three intervals.

This is prometheus_client's multiprocess mode in outline, without its cost on the hot
path: its mmap'd values take a lock and a write per `inc()`, several µs per request.
State that the fleet shares (benches, scores) is read at scrape time from the answering
worker, whose view is the fleet's. The exposition itself is prometheus_client's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gateway.core.tasks import cancel
from gateway.core.types import OPTIMIZATIONS
from gateway.http.body import BodyBudget
from gateway.routing.blacklist import Blacklist
from gateway.routing.catalog import Catalog
from gateway.routing.metrics import RoutingMetrics, Snapshot
from gateway.routing.quota import Quota
from gateway.routing.selection import Selector
from gateway.server.looplag import LoopLag
from gateway.server.workers import accept_queue
from gateway.storage.writer import StoreWriter

__all__ = ["METRICS_DIR_ENV", "METRICS_STATE", "Metrics", "merge"]

METRICS_DIR_ENV = "GATEWISE_METRICS_DIR"
METRICS_STATE = "gatewise.metrics"  # the lifespan state's key for `Metrics` (see protocol.py)

log = logging.getLogger("gatewise.metrics")

# name in the snapshot -> (Prometheus name, help, label names)
COUNTERS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "requests": (
        "gatewise_requests",
        "Client requests by how they ended (success, fallback, client_gone, error class).",
        ("route", "model", "endpoint", "outcome"),
    ),
    "attempts": (
        "gatewise_attempts",
        "Upstream attempts by outcome (success, client_gone, error class).",
        ("route", "model", "provider", "endpoint", "outcome"),
    ),
    "tokens": (
        "gatewise_tokens",
        "Tokens of answered requests, by model, client key and direction (input, output).",
        ("model", "key", "direction"),
    ),
    "cost": (
        "gatewise_cost",
        "Cost of answered requests, by model and client key.",
        ("model", "key"),
    ),
    "refusals": (
        "gatewise_key_refusals",
        "Requests a client key's limits refused (429), by key and reason (requests, tokens, "
        "concurrency, budget).",
        ("key", "reason"),
    ),
    "trips": (
        "gatewise_inbound_limit_trips",
        "Connections closed by an inbound limit, by cause.",
        ("cause",),
    ),
    "dropped": ("gatewise_storage_dropped_rows", "Rows dropped with the write queue full.", ()),
    "refused": (
        "gatewise_storage_refused_rows",
        "Rows the store refused as they were (a value no column holds), dropped alone.",
        (),
    ),
    "body_refusals": (
        "gatewise_request_body_refusals",
        "Requests refused (503) because the request bodies a worker holds reached "
        "server.max_body_memory.",
        (),
    ),
    "answer_refusals": (
        "gatewise_answer_body_refusals",
        "Answers (or streams, at a large event) dropped, their clients told to retry, "
        "because the bodies a worker holds reached server.max_body_memory.",
        (),
    ),
}
HISTOGRAMS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "upstream_latency": (
        "gatewise_upstream_latency_seconds",
        "From sending an attempt to the end of its answer or its failure.",
        ("model", "provider"),
    ),
    "ttft": (
        "gatewise_time_to_first_token_seconds",
        "From sending an attempt to its answer's first piece (a whole reply: all of it).",
        ("model",),
    ),
    "overhead": (
        "gatewise_overhead_seconds",
        "A request's time in routing minus its time waiting on upstreams.",
        ("endpoint",),
    ),
}
# Per-process gauges and how workers add up: counts sum, the rest take the worst.
GAUGES: dict[str, tuple[str, str, str]] = {
    "connections": (
        "gatewise_open_connections",
        "Client connections the workers hold (each stream holds one).",
        "sum",
    ),
    "accept_queue": (
        "gatewise_accept_queue",
        "Client connections set up by the kernel, waiting for a worker to accept them.",
        "sum",
    ),
    "loop_lag": (
        "gatewise_event_loop_lag_seconds",
        "The longest a worker's event loop ran late in the last 10 s (its saturation).",
        "max",
    ),
    "bodies": (
        "gatewise_request_body_bytes",
        "Memory the request bodies the workers hold take, with the whole answers read for "
        "them, parsed (an upper estimate).",
        "sum",
    ),
    "queued": ("gatewise_storage_queued_rows", "Rows waiting to be written.", "sum"),
    "degraded": ("gatewise_storage_degraded", "1 while store writes fail.", "max"),
    "flush_lag": (
        "gatewise_storage_flush_lag_seconds",
        "Seconds since the last successful flush to the store.",
        "max",
    ),
}


class InboundState(Protocol):
    """What this process's server holds and has refused (`server.protocol.Inbound`)."""

    draining: bool  # it has begun to shut down

    def totals(self) -> dict[str, int]:
        """Inbound limits tripped, by cause."""

    def open_connections(self) -> int: ...


def merge(snapshots: Iterable[Snapshot]) -> Snapshot:
    """Counters and histograms of several processes, series by series, summed."""
    total: Snapshot = {}
    for snapshot in snapshots:
        for name, series in snapshot.items():
            into = total.setdefault(name, {})
            for key, values in series.items():
                have = into.get(key)
                if have is None:
                    into[key] = list(values)
                else:
                    for i, value in enumerate(values):
                        have[i] += value
    return total


def _encode(snapshot: Snapshot) -> dict[str, list[list[Any]]]:
    return {name: [[list(k), v] for k, v in series.items()] for name, series in snapshot.items()}


def _decode(data: dict[str, list[list[Any]]]) -> Snapshot:
    return {name: {tuple(k): list(v) for k, v in rows} for name, rows in data.items()}


class Metrics(Collector):
    """This process's metrics and the shared directory's; `exposition()` is the scrape."""

    def __init__(
        self,
        routing: RoutingMetrics,
        writer: StoreWriter,
        blacklist: Blacklist,
        selector: Selector,
        catalog: Catalog,
        directory: str | None = None,
        interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        quota: Quota | None = None,
        bodies: BodyBudget | None = None,
    ) -> None:
        self.routing = routing
        self.quota = quota
        self.bodies = bodies
        self.writer = writer
        self.blacklist = blacklist
        self.selector = selector
        self.catalog = catalog
        self.directory = Path(directory) if directory else None
        self.interval = interval
        self.clock = clock
        self.inbound: InboundState | None = None  # told by the server's first connection
        self.lag = LoopLag()
        self.pid = os.getpid()
        self._task: asyncio.Task[None] | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    # -- this process ----------------------------------------------------------------
    def own(self) -> tuple[Snapshot, dict[str, float]]:
        """This process's counts and per-process gauges, now."""
        snapshot = self.routing.snapshot()
        writer = self.writer
        snapshot["dropped"] = {(): [float(writer.dropped)]}
        snapshot["refused"] = {(): [float(writer.refused)]}
        inbound = self.inbound
        if inbound is not None:
            snapshot["trips"] = {(c,): [float(n)] for c, n in inbound.totals().items()}
        if self.quota is not None:
            snapshot["refusals"] = {k: [float(n)] for k, n in self.quota.refusals.items()}
        bodies = self.bodies
        if bodies is not None:
            snapshot["body_refusals"] = {(): [float(bodies.refused)]}
            snapshot["answer_refusals"] = {(): [float(bodies.answers_refused)]}
        gauges = {
            "connections": float(inbound.open_connections() if inbound is not None else 0),
            "accept_queue": float(accept_queue()),
            "loop_lag": self.lag.worst(),
            "bodies": float(bodies.held if bodies is not None else 0),
            "queued": float(writer.queued),
            "degraded": 1.0 if writer.degraded else 0.0,
            "flush_lag": max(0.0, self.clock() - writer.flushed_at),
        }
        return snapshot, gauges

    def write(self) -> None:
        """This process's file in the shared directory, replaced whole."""
        if self.directory is None:
            return
        snapshot, gauges = self.own()
        data = {"pid": self.pid, "at": self.clock(), "counts": _encode(snapshot), "gauges": gauges}
        path = self.directory / f"{self.pid}.json"
        temporary = path.with_suffix(".tmp")
        try:
            temporary.write_bytes(orjson.dumps(data))
            os.replace(temporary, path)
        except OSError as exc:
            log.warning("metrics not shared", extra={"fields": {"error": type(exc).__name__}})

    def start(self) -> None:
        self.lag.start(asyncio.get_running_loop())
        if self.directory is not None:
            self._task = asyncio.create_task(self._run(), name="gatewise-metrics")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.write()

    async def close(self) -> None:
        await cancel(self._task)
        self._task = None
        self.write()  # what this worker served stays in the sum after it is gone

    # -- the scrape --------------------------------------------------------------------
    def _others(self) -> Iterator[dict[str, Any]]:
        if self.directory is None:
            return
        for path in self.directory.glob("*.json"):
            if path.name == f"{self.pid}.json":
                continue
            try:
                yield orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue  # a worker mid-write replaces its file atomically; this is rare

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        own, gauges = self.own()
        fresh_after = self.clock() - 3 * self.interval
        snapshots = [own]
        per_process = [gauges]
        for other in self._others():
            snapshots.append(_decode(other.get("counts", {})))
            if other.get("at", 0) >= fresh_after:
                per_process.append(other.get("gauges", {}))
        total = merge(snapshots)
        yield from _counters(total)
        yield from _histograms(total)
        for name, (metric, doc, how) in GAUGES.items():
            values = [g.get(name, 0.0) for g in per_process]
            family = GaugeMetricFamily(metric, doc)
            family.add_metric([], sum(values) if how == "sum" else max(values))
            yield family
        workers = GaugeMetricFamily("gatewise_workers", "Worker processes reporting.")
        workers.add_metric([], len(per_process))
        yield workers
        yield from self._benches()
        yield from self._scores()

    def _benches(self) -> Iterator[Metric]:
        blacklist = self.blacklist
        now = self.clock()
        benched = GaugeMetricFamily(
            "gatewise_model_blacklisted", "1 while the model is benched.", labels=["model"]
        )
        remaining = GaugeMetricFamily(
            "gatewise_model_blacklist_remaining_seconds",
            "Seconds until a benched model returns (0: not benched).",
            labels=["model"],
        )
        streak = GaugeMetricFamily(
            "gatewise_model_consecutive_failures",
            "The model's current failure streak.",
            labels=["model"],
        )
        for model in sorted(self.catalog.enabled):
            until = blacklist.until(model)
            benched.add_metric([model], 0.0 if until is None else 1.0)
            remaining.add_metric([model], 0.0 if until is None else max(0.0, until - now))
            streak.add_metric([model], blacklist.consecutive_failures(model))
        yield benched
        yield remaining
        yield streak

    def _scores(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "gatewise_selection_score",
            "The routing score of each model, by conversation type and optimization.",
            labels=["model", "conversation_type", "optimization"],
        )
        catalog = self.catalog
        models = [m for m in catalog.config.models if m.name in catalog.enabled]
        ctypes = sorted({t for m in models for t in m.conversation_types})
        for ctype in ctypes:
            serving = [m for m in models if ctype in m.conversation_types]
            for optimization in OPTIMIZATIONS:
                for score in self.selector.rankings(serving, ctype, optimization):
                    family.add_metric([score.model, ctype, optimization], score.total)
        yield family


def _counters(total: Snapshot) -> Iterator[Metric]:
    for name, (metric, doc, labels) in COUNTERS.items():
        family = CounterMetricFamily(metric, doc, labels=list(labels))
        for key, values in sorted(total.get(name, {}).items()):
            family.add_metric(list(key), values[0])
        yield family


def _histograms(total: Snapshot) -> Iterator[Metric]:
    for name, (metric, doc, labels) in HISTOGRAMS.items():
        bounds = RoutingMetrics.HISTOGRAMS[name]
        family = HistogramMetricFamily(metric, doc, labels=list(labels))
        for key, values in sorted(total.get(name, {}).items()):
            buckets: list[tuple[str, float]] = []
            running = 0.0
            for bound, count in zip(bounds, values, strict=False):
                running += count
                buckets.append((_le(bound), running))
            running += values[len(bounds)]
            buckets.append(("+Inf", running))
            family.add_metric(list(key), buckets, values[-1])
        yield family


def _le(bound: float) -> str:
    return repr(float(bound))
