"""The routing-quality scenarios, simulated in-process: hundreds of seeds a minute.

bench/quality.py drives a real gateway over HTTP, ~20 s per seed: right for the report,
too slow to see how a change to selection moves the spread over hundreds of seeds (the
accuracy target misses in 1-3 of 16 real runs, so 16 seeds cannot tell two variants
apart). Here the gateway's own Selector and Tracker route each step with an injected
clock, answers finish in the order sent with `concurrency` in flight (so ratings lag as
they do over HTTP), and the simulated users rate from the same truth and random draws.
It is an approximation: no HTTP, no timing jitter, no fallback (scenarios with outages
or failure rates are left to the real run). Calibration (2026-11-27, accuracy, same
code): at a78f414 174 of 200 simulated seeds met the 90 % best-share goal, 42 of 48 real
runs; at a4714f6 175 of 200, and 15 of 16 real runs.

    python bench/quality_seeds.py --sim --seeds 1-200
"""

from __future__ import annotations

import random
import time
from collections import deque
from typing import Any

from bench.quality_metrics import measure
from bench.quality_run import Record, Run
from bench.quality_scenarios import Scenario
from bench.quality_upstream import Hit
from bench.selection_bench import FakeClock
from gateway.core.config import parse_config
from gateway.core.types import Attempt
from gateway.routing.blacklist import Blacklist
from gateway.routing.catalog import Catalog
from gateway.routing.dispatch import ReplyJob
from gateway.routing.recorder import learn
from gateway.routing.selection import Selector
from gateway.routing.tracker import Tracker
from providers.base import Endpoint

__all__ = ["run_all", "simulate"]

TT = "text-to-text"


def simulate(scenario: Scenario, strategy: str, seed: int, concurrency: int | None = None) -> Run:
    """One run of `strategy` ("gatewise" or "round-robin") through `scenario`."""
    if scenario.outages or any(scenario.truth(m, 0).fail_rate for m in scenario.names):
        raise ValueError(f"{scenario.name}: outages and failures need the real run")
    began = time.monotonic()
    raw = scenario.gateway_config("http://127.0.0.1:9", seed)
    raw["providers"][0] = {"name": raw["providers"][0]["name"], "type": "mock"}
    config = parse_config(raw)
    target = Catalog(config, {}).resolve(raw["routes"][0]["name"], TT)
    clock = FakeClock()
    blacklist = Blacklist(threshold=config.selection.blacklist_threshold, clock=clock)
    tracker = Tracker(clock=clock)
    selector = Selector(
        tracker, blacklist, config.selection, rng=random.Random(seed), clock=clock,
        refresh_seconds=config.selection.score_refresh_seconds,
    )  # fmt: skip
    job = ReplyJob("sim", Endpoint.CHAT, target, {"model": target.name}, scenario.optimization)
    in_flight: deque[Record] = deque()
    records: list[Record] = []
    ratings = 0

    def finish(record: Record) -> None:
        nonlocal ratings
        truth = scenario.truth(record.model, record.step)  # type: ignore[arg-type]
        if strategy == "gatewise":
            spec = scenario.spec(record.model)  # type: ignore[arg-type]
            learn(
                tracker,
                blacklist,
                Attempt(
                    "sim", None, 1, record.model, "bench", TT, target.name,  # type: ignore[arg-type]
                    scenario.optimization, True, latency_ms=truth.latency_ms,
                    prompt_tokens=truth.prompt_tokens, completion_tokens=truth.completion_tokens,
                    cost=spec.cost(truth), timestamp=clock.now,
                ),
            )  # fmt: skip
        rating = scenario.user_rating(record.model, record.step, seed)  # type: ignore[arg-type]
        if rating is not None:
            if strategy == "gatewise":
                tracker.add_feedback(record.model, TT, {"overall": float(rating)})  # type: ignore[arg-type]
            record.rated = True
            ratings += 1
        record.done = clock.now
        record.status = 200

    flight = concurrency or scenario.concurrency
    names = scenario.names
    for step in range(scenario.requests):
        model = selector.rank(job)[0].name if strategy == "gatewise" else names[step % len(names)]
        truth = scenario.truth(model, step)
        clock.now += 1 / scenario.rate if scenario.rate else truth.latency_ms / 1000 / flight
        record = Record(step, clock.now, model=model, ratings_before=ratings)
        records.append(record)
        in_flight.append(record)
        if len(in_flight) >= flight:
            finish(in_flight.popleft())
    while in_flight:
        finish(in_flight.popleft())
    hits = [Hit(r.sent, r.step, r.model, 200) for r in records]  # type: ignore[arg-type]
    return Run(scenario, strategy, records, hits, began, time.monotonic() - began)


def run_all(
    scenarios: dict[str, Scenario], strategies: list[str], seed: int
) -> dict[str, dict[str, dict[str, Any]]]:
    """Metrics per scenario and strategy, shaped like bench.quality's."""
    return {
        name: {s: measure(simulate(sc, s, seed)) for s in strategies}
        for name, sc in scenarios.items()
    }
