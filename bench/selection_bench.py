"""Micro-benchmark of model selection: `Selector.rank` over 100 configured models.

    python bench/selection_bench.py [--models 100] [--iterations 2000] [--json PATH]

The tracker holds a realistic state (hundreds of attempts per model with latencies,
tokens and costs, human ratings, automatic scores, two models blacklisted). "cold" is a
rank that recomputes every score (the tracker changed and the score cache expired);
"warm" is a rank served from the score cache, as most requests under load are.
Target: cold median <= 50 µs per rank, for every optimization.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `gateway` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.blacklist import Blacklist
from gateway.catalog import Catalog
from gateway.config import parse_config
from gateway.dispatch import Job
from gateway.selection import Selector
from gateway.tracker import FEEDBACK_DIMENSIONS, Tracker
from gateway.types import Attempt, Endpoint

TT = "text-to-text"
OPTIMIZATIONS = ("accuracy", "cost", "speed", "creativity", "continuity")
LIMIT_US = 50.0


def build(models: int, attempts: int, seed: int = 7):
    rng = random.Random(seed)
    names = [f"model-{i:03d}" for i in range(models)]
    raw = {
        "providers": [{"name": "up", "type": "mock"}],
        "models": [
            {
                "name": n,
                "provider": "up",
                "pricing": {
                    "input_per_million": rng.uniform(0.05, 5),
                    "output_per_million": rng.uniform(0.2, 15),
                },
                "priors": {k: rng.randint(3, 10) for k in ("accuracy", "creativity", "speed")},
            }
            for n in names
        ],
        "routes": [{"name": "auto", "models": names, "optimization": "accuracy"}],
    }
    config = parse_config(raw)
    sel = config.selection
    blacklist = Blacklist(sel.blacklist_threshold, sel.blacklist_base_seconds,
                          sel.blacklist_max_seconds)  # fmt: skip
    tracker = Tracker(blacklist)
    now = time.time()
    for i, name in enumerate(names):
        base = rng.uniform(80, 2000)
        for j in range(attempts):
            ok = rng.random() > 0.05
            tracker.record(Attempt(
                "req", None, 1, name, "up", TT, "auto", "accuracy", ok,
                latency_ms=base * rng.lognormvariate(0, 0.3), ttft_ms=base * 0.2,
                prompt_tokens=rng.randint(50, 2000), completion_tokens=rng.randint(10, 800),
                cost=rng.uniform(0, 0.01), timestamp=now + 10 * j, counts_as_failure=not ok,
                conversation_id=f"conv-{j % 50}",
            ))  # fmt: skip
        for _ in range(20):
            dims = rng.sample(FEEDBACK_DIMENSIONS, 2)
            tracker.add_feedback(name, TT, {d: float(rng.randint(1, 5)) for d in dims})
        for _ in range(50):
            tracker.add_auto_score(name, TT, rng.random())
        if i in (3, 42):  # two models benched by consecutive failures
            for _ in range(sel.blacklist_threshold):
                tracker.record(Attempt("req", None, 1, name, "up", TT, "auto", None, False,
                                       timestamp=now + 10 * attempts,
                                       counts_as_failure=True))  # fmt: skip
    selector = Selector(tracker, blacklist, sel, refresh_seconds=sel.score_refresh_seconds)
    return Catalog(config, {}), tracker, selector


def time_ranks(selector, tracker, job, iterations: int, cold: bool) -> list[float]:
    rank = selector.rank
    clock = time.perf_counter_ns
    cache = getattr(selector, "_cache", None)  # the score cache, if the Selector keeps one
    samples = []
    for _ in range(iterations):
        if cold:
            tracker.version += 1  # what any record() does: invalidates cached scores
            if hasattr(cache, "clear"):
                cache.clear()  # and the refresh window has passed
        t0 = clock()
        rank(job)
        samples.append((clock() - t0) / 1000)
    return samples


def run(models: int, iterations: int, attempts: int) -> dict:
    catalog, tracker, selector = build(models, attempts)
    target = catalog.resolve("auto", TT)
    out = {}
    for opt in OPTIMIZATIONS:
        job = Job("req", Endpoint.CHAT, TT, target, {"model": "auto", "messages": []},
                  optimization=opt, conversation_id="conv-7")  # fmt: skip
        ranked = selector.rank(job)
        assert len(ranked) == models - 2, "the two blacklisted models must be left out"
        time_ranks(selector, tracker, job, max(10, iterations // 10), cold=True)  # warm-up
        cold = time_ranks(selector, tracker, job, iterations, cold=True)
        warm = time_ranks(selector, tracker, job, iterations * 5, cold=False)
        out[opt] = {
            "cold_median_us": statistics.median(cold),
            "cold_p99_us": sorted(cold)[int(0.99 * len(cold))],
            "warm_median_us": statistics.median(warm),
            "pass": statistics.median(cold) <= LIMIT_US,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=100)
    p.add_argument("--iterations", type=int, default=None, help="cold ranks per optimization")
    p.add_argument("--attempts", type=int, default=None, help="recorded attempts per model")
    p.add_argument("--quick", action="store_true", help="200 iterations, 50 attempts")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    logging.getLogger("gatewise").setLevel(logging.ERROR)  # "model blacklisted" is expected
    args.iterations = args.iterations or (200 if args.quick else 2000)
    args.attempts = args.attempts or (50 if args.quick else 300)
    results = run(args.models, args.iterations, args.attempts)
    print(f"\nSelector.rank over {args.models} models ({args.iterations} cold ranks each; "
          f"target: cold median <= {LIMIT_US:g} µs)\n")  # fmt: skip
    print("| optimization | cold median µs | cold p99 µs | warm (cached) median µs | result |")
    print("|---|---:|---:|---:|---|")
    for opt, r in results.items():
        verdict = "PASS" if r["pass"] else "FAIL"
        print(f"| {opt} | {r['cold_median_us']:.1f} | {r['cold_p99_us']:.1f} | "
              f"{r['warm_median_us']:.2f} | {verdict} |")  # fmt: skip
    doc = {
        "models": args.models,
        "iterations": args.iterations,
        "attempts_per_model": args.attempts,
        "limit_us": LIMIT_US,
        "results": results,
        "pass": all(r["pass"] for r in results.values()),
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
