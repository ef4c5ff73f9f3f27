"""Two gateways on one CPU at once: what one costs per request against the other.

    python bench/ab.py --a gatewise --b gatewise-baseline --baseline 0f5b4f2 [--rounds 7]
    python bench/ab.py --a gatewise-keys --b gatewise

On a shared machine the overhead run's rounds of one target and the next meet different
neighbours, and its paired ratios swing by 10-20 % (bench/README.md, Keys as tenants).
Here both targets are pinned to the same CPU and served by two wrk runs (c=50 each, on
the load CPU) at the same time, so whatever else the machine does falls on both alike.
Each target's CPU time per request (from /proc, its whole process tree) is the measure:
it does not depend on how the scheduler shares the CPU between them. Every round starts
both afresh, alternating which starts, is loaded and is sampled first (always `a` first
leaned 1.5-3 % against it); the report gives per round and the median
of B's CPU per request over A's, with a 95 % interval over rounds (scipy's t interval on
the log ratios), and the throughput ratio for reference.

Targets are the overhead run's (`bench/overhead.py`): gatewise, gatewise-keys,
gatewise-solo, gatewise-baseline (with --baseline REV), ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the checkout it lives in is imported
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness
from bench.overhead import BENCH, CHAT, KNOWN, Bench

__all__ = ["main"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--a", default="gatewise", choices=KNOWN[2:], help="the target judged")
    p.add_argument("--b", default="gatewise-baseline", choices=KNOWN[2:], help="its reference")
    p.add_argument("--baseline", default=None, metavar="REV", help="for gatewise-baseline")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--duration", type=int, default=8, help="seconds of load per round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if any(t.startswith("gatewise-baseline") for t in (args.a, args.b)) and not args.baseline:
        p.error("gatewise-baseline needs --baseline REV")
    if args.a == args.b:
        p.error("--a and --b must differ")
    # What overhead.Bench reads from its own arguments.
    args.load_policy, args.targets = "batch", [args.a, args.b]
    return args


async def _load(bench: Bench, targets: list[tuple[str, int, str]], seconds: int) -> list[dict]:
    runs = [
        harness.wrk_async(
            f"http://127.0.0.1:{port}{CHAT}",
            50,
            seconds,
            "auto",
            key,
            bench.load_cpus,
            batch=bench.batch,
        )
        for _, port, key in targets
    ]
    return list(await asyncio.gather(*runs))


def one_round(bench: Bench, a: str, b: str, rnd: int, args: argparse.Namespace) -> dict:
    order = [a, b] if rnd % 2 else [b, a]
    started = {}
    try:
        for name in order:
            child, port, key, _, _ = bench.launch(name, rnd)
            assert child is not None
            started[name] = (child, port, key)
        # Everything in the round's order, which alternates: an A/A run leaned 1.5-3 %
        # against whichever target always came first (bench/README.md, Two at once).
        targets = [(name, started[name][1], started[name][2]) for name in order]
        asyncio.run(_load(bench, targets, args.warmup))
        before = {name: started[name][0].cpu_ticks() for name in order}
        runs = asyncio.run(_load(bench, targets, args.duration))
        after = {name: started[name][0].cpu_ticks() for name in order}
    finally:
        for child, _, _ in started.values():
            child.stop()
    out: dict = {"round": rnd, "first": order[0]}
    for name, run in zip(order, runs, strict=True):
        ticks = after[name] - before[name]
        out[name] = {
            "rps": run["rps"],
            "requests": run["requests"],
            "errors": run["errors"],
            "cpu_us_per_req": ticks * harness.TICK_US / max(1, run["requests"]),
            "cpu_pct": 100 * ticks * harness.TICK_US / 1e6 / args.duration,
        }
    out["cpu_ratio"] = out[a]["cpu_us_per_req"] / out[b]["cpu_us_per_req"]
    out["rps_ratio"] = out[a]["rps"] / out[b]["rps"]
    return out


def interval(ratios: list[float]) -> tuple[float, float] | None:
    """A 95 % t interval for the median-ish ratio, on logs (ratios multiply)."""
    if len(ratios) < 3:
        return None
    from scipy import stats

    logs = [math.log(r) for r in ratios]
    low, high = stats.t.interval(0.95, len(logs) - 1, statistics.mean(logs), stats.sem(logs))
    return math.exp(low), math.exp(high)


def _commit() -> str:
    import subprocess

    out = subprocess.run(["git", "-C", str(BENCH.parent), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, check=False)  # fmt: skip
    return out.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cores = sorted(os.sched_getaffinity(0))
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {cores[-1]})
    rounds = []
    with tempfile.TemporaryDirectory(prefix="gatewise-ab-") as tmp:
        bench = Bench(args, Path(tmp), cores)
        try:
            bench.start_upstream()
            for rnd in range(1, args.rounds + 1):
                result = one_round(bench, args.a, args.b, rnd, args)
                rounds.append(result)
                print(f"round {rnd}: {args.a} {result[args.a]['cpu_us_per_req']:.0f} µs/req "
                      f"{result[args.a]['rps']:.0f} req/s, {args.b} "
                      f"{result[args.b]['cpu_us_per_req']:.0f} µs/req "
                      f"{result[args.b]['rps']:.0f} req/s: CPU ratio "
                      f"{result['cpu_ratio']:.3f}", flush=True)  # fmt: skip
        finally:
            bench.close()
    cpu = [r["cpu_ratio"] for r in rounds]
    rps = [r["rps_ratio"] for r in rounds]
    errors = sum(r[t]["errors"] for r in rounds for t in (args.a, args.b))
    summary = {
        "a": args.a,
        "b": args.b,
        "baseline": args.baseline,
        "rounds": rounds,
        "cpu_ratio_median": statistics.median(cpu),
        "cpu_ratio_95": interval(cpu),
        "rps_ratio_median": statistics.median(rps),
        "errors": errors,
        "commit": _commit(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    low_high = summary["cpu_ratio_95"]
    span = f" (95 %: {low_high[0]:.3f}-{low_high[1]:.3f})" if low_high else ""
    print(f"\n{args.a} CPU per request / {args.b}'s: median {summary['cpu_ratio_median']:.3f}"
          f"{span}; throughput ratio median {summary['rps_ratio_median']:.3f}; "
          f"errors {errors}")  # fmt: skip
    path = args.json or BENCH / "results" / f"ab-{datetime.date.today().isoformat()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2))
    print(f"results: {path}")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
