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
from providers.base import Endpoint

__all__ = [
    "LATENCY_BUCKETS",
    "OVERHEAD_BUCKETS",
    "RoutingMetrics",
    "Snapshot",
]

# Seconds. Upstream latency and time to first token span ms (a mock, a cache) to minutes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# The gateway's own time per request: µs to ms.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)

# name -> {labels tuple -> [value]} for counters; [bucket counts..., +Inf count, sum] for
# histograms (non-cumulative buckets, made cumulative when exposed).
Snapshot = dict[str, dict[tuple[str, ...], list[float]]]


class _Cells:
    """The cells one kind of attempt adds to, found with one dict lookup per attempt."""

    __slots__ = ("attempt", "cost", "latency", "overhead", "request", "tokens", "ttft")

    def __init__(self, metrics: RoutingMetrics, key: _Key, provider: str) -> None:
        route, model, endpoint, ended, owner, answered = key
        route = route or ""
        attempt = "success" if ended == "fallback" else ended
        self.attempt = _cell(metrics.attempts, (route, model, provider, endpoint.value, attempt))
        self.latency = _cell(metrics.latency, (model, provider), len(LATENCY_BUCKETS) + 2)
        ends = answered or ended == "client_gone"  # the request's last attempt
        self.request = (
            _cell(metrics.requests, (route, model if answered else "", endpoint.value, ended))
            if ends
            else None
        )
        who = owner or ""
        self.ttft = _cell(metrics.ttft, (model,), len(LATENCY_BUCKETS) + 2)
        self.overhead = _cell(metrics.overhead, (endpoint.value,), len(OVERHEAD_BUCKETS) + 2)
        self.tokens = (
            _cell(metrics.tokens, (model, who, "input")),
            _cell(metrics.tokens, (model, who, "output")),
        )
        self.cost = _cell(metrics.cost, (model, who))


# route, model, endpoint, how it ended (see RoutingMetrics), client key, answered
_Key = tuple[str | None, str, Endpoint, str, str | None, bool]
Series = dict[tuple[str, ...], list[float]]


class RoutingMetrics:
    """This process's counts since it started. Series (name, labels):

    - attempts: route, model, provider, endpoint, outcome (success, client_gone, error class)
    - requests: route, model (the one that answered, "" if none), endpoint, outcome
      (success; fallback: answered after a failed attempt; client_gone; or the error
      class that ended it: a failure midway, or the last failure when none answered)
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
        self.attempts: Series = {}
        self.requests: Series = {}
        self.tokens: Series = {}
        self.cost: Series = {}
        self.latency: Series = {}  # [bucket counts..., +Inf count, sum]
        self.ttft: Series = {}
        self.overhead: Series = {}
        self._cells: dict[_Key, _Cells] = {}

    def observe(self, outcome: Outcome) -> None:
        job = outcome.job
        error = outcome.error
        answered = outcome.answered
        if outcome.client_gone:
            ended = "client_gone"
        elif error is not None:
            ended = error.kind
        else:
            ended = "success" if outcome.number == 1 else "fallback"
        model = outcome.model
        key = (job.target.route, model.name, job.endpoint, ended, job.owner, answered)
        cells = self._cells.get(key)
        if cells is None:
            cells = self._cells[key] = _Cells(self, key, model.provider)
        cells.attempt[0] += 1
        timings = outcome.timings
        seconds = timings.upstream_ms / 1000
        latency = cells.latency
        latency[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        latency[-1] += seconds
        request = cells.request
        if request is None:
            return
        request[0] += 1
        if not answered:
            return
        ttft_ms = timings.ttft_ms
        if ttft_ms is not None:
            seconds = ttft_ms / 1000
            ttft = cells.ttft
            ttft[bisect_left(LATENCY_BUCKETS, seconds)] += 1
            ttft[-1] += seconds
        overhead_ms = timings.overhead_ms
        if overhead_ms is not None:
            seconds = overhead_ms / 1000 if overhead_ms > 0 else 0.0
            overhead = cells.overhead
            overhead[bisect_left(OVERHEAD_BUCKETS, seconds)] += 1
            overhead[-1] += seconds
        usage = outcome.usage
        if usage is not None:
            tokens = cells.tokens
            tokens[0][0] += usage.prompt_tokens
            tokens[1][0] += usage.completion_tokens
        if outcome.cost:
            cells.cost[0] += outcome.cost

    def unanswered(self, job: Job[Any, Any], kind: str) -> None:
        """A request no model answered (all failed, or the upstream refused it)."""
        _cell(self.requests, (job.target.route or "", "", job.endpoint.value, kind))[0] += 1

    def snapshot(self) -> Snapshot:
        """Copies of the cumulative counts, safe to serialize while traffic goes on.
        Series never counted (cells made ahead, e.g. tokens of a failure) are left out."""
        return {
            "attempts": _copy(self.attempts),
            "requests": _copy(self.requests),
            "tokens": _copy(self.tokens),
            "cost": _copy(self.cost),
            "upstream_latency": _copy(self.latency),
            "ttft": _copy(self.ttft),
            "overhead": _copy(self.overhead),
        }


def _cell(series: Series, key: tuple[str, ...], size: int = 1) -> list[float]:
    cell = series.get(key)
    if cell is None:
        cell = series[key] = [0.0] * size
    return cell


def _copy(series: Series) -> Series:
    return {key: list(values) for key, values in series.items() if any(values)}
