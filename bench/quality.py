"""Routing-quality benchmark: does Gatewise send traffic where it should?

Scenarios run through the real gateway (a `gateway serve` child process) against a
scripted loopback upstream whose true quality, latency, cost and failures are known
and change over time; simulated users rate answers from the true quality. The same
scenarios run with two client-side baselines, round-robin and a fixed priority list.
Reported per scenario and strategy: regret against an oracle that knows the truth,
share of requests that reached the best model, client-visible failures, wasted
upstream attempts during an outage and how long traffic took to move away and back,
then PASS/FAIL against the targets.

    python bench/quality.py [--quick] [--scenarios speed,cost] [--seed 1] [--json PATH]

Exit status: 0 when the run completed (whatever the targets say), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench.*` and `gateway` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson

from bench.quality_metrics import check_targets, measure, render
from bench.quality_run import ROOT, STRATEGIES, run_scenario
from bench.quality_scenarios import SCENARIO_NAMES, Scenario, build_scenarios

__all__ = ["main"]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/quality.py", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small scenarios (~20 s in all)")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIO_NAMES),
        help=f"comma-separated subset of {','.join(SCENARIO_NAMES)}",
    )
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--workdir", default=None, help="keep the gateway configs and logs here (default: temp)"
    )
    parser.add_argument(
        "--json", default=None, help="where to write results (default bench/results/quality-DATE)"
    )
    args = parser.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    args.strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = sorted(set(args.scenarios) - set(SCENARIO_NAMES))
    unknown += sorted(set(args.strategies) - set(STRATEGIES))
    if unknown or not args.scenarios or not args.strategies:
        parser.error(f"unknown or missing scenario/strategy: {', '.join(unknown) or 'none given'}")
    return args


async def _run_all(
    scenarios: dict[str, Scenario], strategies: list[str], seed: int, workdir: Path
) -> dict[str, dict[str, dict[str, Any]]]:
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for name, scenario in scenarios.items():
        runs = await run_scenario(scenario, strategies, seed, workdir)
        results[name] = {strategy: measure(run) for strategy, run in runs.items()}
        for strategy, m in results[name].items():
            print(
                f"  {name:<9} {strategy:<15} {m['requests']:>5} requests in {m['seconds']:6.2f} s"
                f"  regret {m['regret']:.4g} {scenario.unit}",
                file=sys.stderr,
                flush=True,
            )
    return results


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    began = time.monotonic()
    all_scenarios = build_scenarios(quick=args.quick)
    scenarios = {name: all_scenarios[name] for name in args.scenarios}
    mode = "quick" if args.quick else "full"
    print(f"routing-quality benchmark ({mode}, seed {args.seed})", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="gatewise-quality-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        results = asyncio.run(_run_all(scenarios, args.strategies, args.seed, workdir))
    checks = check_targets(results)
    elapsed = time.monotonic() - began
    report = {
        "benchmark": "routing-quality",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": mode,
        "seed": args.seed,
        "duration_seconds": round(elapsed, 2),
        "python": platform.python_version(),
        "scenarios": {
            name: {
                "description": sc.description,
                "optimization": sc.optimization,
                "unit": sc.unit,
                "requests": sc.requests,
                "concurrency": sc.concurrency,
                "rate": sc.rate,
                "feedback_rate": sc.feedback_rate,
                "blacklist_seconds": sc.blacklist_seconds,
                "models": [m.name for m in sc.models],
                "strategies": results[name],
            }
            for name, sc in scenarios.items()
        },
        "targets": checks,
        "all_targets_passed": all(c["passed"] for c in checks),
    }
    path = Path(args.json) if args.json else _default_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(render(results, scenarios, checks))
    print(f"\n{mode} run took {elapsed:.1f} s; results in {path}")
    return 0


def _default_path() -> Path:
    return ROOT / "bench" / "results" / f"quality-{dt.date.today().isoformat()}.json"


if __name__ == "__main__":
    sys.exit(main())
