"""What Prometheus is told about the traffic, counted on the request path for a few µs.

Every closed attempt passes `RoutingMetrics.observe` (from the recorder), once. The counts
live in plain dicts keyed by label tuples: one dict lookup and a float add per series,
no lock, no `prometheus_client` call per request (its multiprocess mode writes an mmap'd
file under a lock on every `inc()`: several µs per request; see the README's
"Metrics and alerts"). `snapshot()` hands the cumulative counts to whoever exposes or
shares them (`gateway/server/metrics.py`).

Labels are bounded by the configuration: route, model, provider and endpoint names come
from it, outcomes from the error classes, keys from the key registry. Never a request id,
a prompt or any text an upstream sent.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from gateway.routing.dispatch import Job, Outcome

__all__ = [
    "LATENCY_BUCKETS",
    "OVERHEAD_BUCKETS",
    "RoutingMetrics",
    "Snapshot",
    "request_outcome",
]

# Seconds. Upstream latency and time to first token span ms (a mock, a cache) to minutes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# The gateway's own time per request: µs to ms.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)

# name -> {labels tuple -> [value]} for counters; [bucket counts..., +Inf count, sum] for
# histograms (non-cumulative buckets, made cumulative when exposed).
Snapshot = dict[str, dict[tuple[str, ...], list[float]]]


def request_outcome(outcome: Outcome) -> str:
    """How the request ended, for a request's last attempt: success, fallback (an answer
    after a failed attempt), client_gone, or the error class that ended it."""
    error = outcome.error
    if outcome.client_gone:
        return "client_gone"
    if error is not None:
        return error.kind
    return "fallback" if outcome.number > 1 else "success"


class _Histogram:
    __slots__ = ("bounds", "series")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.series: dict[tuple[str, ...], list[float]] = {}

    def observe(self, key: tuple[str, ...], value: float) -> None:
        counts = self.series.get(key)
        if counts is None:
            counts = self.series[key] = [0.0] * (len(self.bounds) + 2)
        counts[bisect_left(self.bounds, value)] += 1
        counts[-1] += value


class RoutingMetrics:
    """This process's counts since it started. Series (name, labels):

    - attempts: route, model, provider, endpoint, outcome (success, client_gone, error class)
    - requests: route, model (the one that answered, "" if none), endpoint, outcome
      (`request_outcome`, or the error class of the last failure when no model answered)
    - tokens: model, key, direction (input, output); cost: model, key
    - histograms (seconds): upstream latency by model and provider; time to first token
      by model (answered streams and replies); gateway overhead by endpoint
    """

    HISTOGRAMS: dict[str, tuple[float, ...]] = {
        "upstream_latency": LATENCY_BUCKETS,
        "ttft": LATENCY_BUCKETS,
        "overhead": OVERHEAD_BUCKETS,
    }

    def __init__(self) -> None:
        self.attempts: dict[tuple[str, ...], list[float]] = {}
        self.requests: dict[tuple[str, ...], list[float]] = {}
        self.tokens: dict[tuple[str, ...], list[float]] = {}
        self.cost: dict[tuple[str, ...], list[float]] = {}
        self.latency = _Histogram(LATENCY_BUCKETS)
        self.ttft = _Histogram(LATENCY_BUCKETS)
        self.overhead = _Histogram(OVERHEAD_BUCKETS)

    def observe(self, outcome: Outcome) -> None:
        job = outcome.job
        model = outcome.model
        name = model.name
        route = job.target.route or ""
        endpoint = job.endpoint.value
        error = outcome.error
        kind = (
            "client_gone" if outcome.client_gone else error.kind if error is not None else "success"
        )
        _add(self.attempts, (route, name, model.provider, endpoint, kind), 1.0)
        timings = outcome.timings
        self.latency.observe((name, model.provider), timings.upstream_ms / 1000)
        if outcome.answered:
            _add(self.requests, (route, name, endpoint, request_outcome(outcome)), 1.0)
            if timings.ttft_ms is not None:
                self.ttft.observe((name,), timings.ttft_ms / 1000)
            if timings.overhead_ms is not None:
                self.overhead.observe((endpoint,), max(0.0, timings.overhead_ms) / 1000)
            usage = outcome.usage
            owner = job.owner or ""
            if usage is not None:
                _add(self.tokens, (name, owner, "input"), usage.prompt_tokens)
                _add(self.tokens, (name, owner, "output"), usage.completion_tokens)
            if outcome.cost:
                _add(self.cost, (name, owner), outcome.cost)
        elif kind == "client_gone":  # the client left before any answer: the request ends
            _add(self.requests, (route, "", endpoint, kind), 1.0)

    def unanswered(self, job: Job[Any, Any], kind: str) -> None:
        """A request no model answered (all failed, or the upstream refused it)."""
        _add(self.requests, (job.target.route or "", "", job.endpoint.value, kind), 1.0)

    def snapshot(self) -> Snapshot:
        """Copies of the cumulative counts, safe to serialize while traffic goes on."""
        return {
            "attempts": _copy(self.attempts),
            "requests": _copy(self.requests),
            "tokens": _copy(self.tokens),
            "cost": _copy(self.cost),
            "upstream_latency": _copy(self.latency.series),
            "ttft": _copy(self.ttft.series),
            "overhead": _copy(self.overhead.series),
        }


def _add(series: dict[tuple[str, ...], list[float]], key: tuple[str, ...], n: float) -> None:
    cell = series.get(key)
    if cell is None:
        series[key] = [n]
    else:
        cell[0] += n


def _copy(series: dict[tuple[str, ...], list[float]]) -> dict[tuple[str, ...], list[float]]:
    return {key: list(values) for key, values in series.items()}
