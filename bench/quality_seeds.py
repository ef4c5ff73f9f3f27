"""Routing quality over many seeds: how often does a scenario meet its targets?

One run of bench/quality.py is one draw: the gateway serves at concurrency 8, so which
model answers which step (and so which ratings arrive) varies with timing as well as
with the seed. A change to selection is judged here by the spread over seeds, not by
one lucky or unlucky run. Gatewise and round-robin only (the regret ratio needs both).

    python bench/quality_seeds.py [--scenario accuracy] [--seeds 1-16] [--sim] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench.*` and `gateway` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson

from bench import quality_sim
from bench.quality import _run_all
from bench.quality_metrics import (
    BEST_SHARE_TARGET,
    RATINGS_TARGET,
    REGRET_RATIO_TARGET,
    regret_ratio,
)
from bench.quality_run import ROOT
from bench.quality_scenarios import SCENARIO_NAMES, build_scenarios

__all__ = ["main", "seeds"]

STRATEGIES = ["gatewise", "round-robin"]


def seeds(text: str) -> list[int]:
    """ "1-4,9" -> [1, 2, 3, 4, 9]."""
    out: list[int] = []
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        out += range(int(first), int(last or first) + 1)
    return out


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/quality_seeds.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--scenario", default="accuracy", choices=[s for s in SCENARIO_NAMES if s != "outage"]
    )
    parser.add_argument("--seeds", default="1-16", type=seeds, help="e.g. 1-16 or 1,4,9")
    parser.add_argument("--quick", action="store_true", help="small scenarios (a smoke run)")
    parser.add_argument(
        "--sim",
        action="store_true",
        help="simulate in-process (bench/quality_sim.py): fast, approximate",
    )
    parser.add_argument(
        "--json", default=None, help="default bench/results/quality-seeds-DATE.json"
    )
    return parser.parse_args(argv)


def _row(seed: int, result: dict[str, dict[str, Any]]) -> dict[str, Any]:
    gw = result["gatewise"]
    ratio = regret_ratio(gw, result["round-robin"])
    row: dict[str, Any] = {"seed": seed, "regret_ratio": round(ratio, 2)}
    if "best_share_after_200_ratings" in gw:
        row["best_share"] = gw["best_share_after_200_ratings"]
        row["by_phase"] = [p["best_share"] for p in gw["after_200_ratings_by_phase"]]
    else:
        row["best_share"] = gw["best_share_after_warmup"]
    return row


def _summary(rows: list[dict[str, Any]], rated: bool) -> dict[str, Any]:
    shares = [r["best_share"] for r in rows]
    ratios = [r["regret_ratio"] for r in rows]
    out = {
        "runs": len(rows),
        "best_share_median": statistics.median(shares),
        "best_share_min": min(shares),
        "regret_ratio_median": statistics.median(ratios),
        "regret_ratio_min": min(ratios),
        "regret_ratio_met": sum(r >= REGRET_RATIO_TARGET for r in ratios),
    }
    if rated:
        out["best_share_met"] = sum(s >= BEST_SHARE_TARGET for s in shares)
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    began = time.monotonic()
    scenario = build_scenarios(quick=args.quick)[args.scenario]
    rows = []
    with tempfile.TemporaryDirectory(prefix="gatewise-seeds-") as tmp:
        for seed in args.seeds:
            if args.sim:
                results = quality_sim.run_all({args.scenario: scenario}, STRATEGIES, seed)
            else:
                results = asyncio.run(
                    _run_all({args.scenario: scenario}, STRATEGIES, seed, Path(tmp))
                )
            rows.append(_row(seed, results[args.scenario]))
            print(f"seed {seed}: {rows[-1]}", file=sys.stderr, flush=True)
    summary = _summary(rows, bool(scenario.feedback_rate))
    report = {
        "benchmark": "routing-quality-seeds",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "scenario": args.scenario,
        "mode": ("quick" if args.quick else "full") + (" simulated" if args.sim else ""),
        "duration_seconds": round(time.monotonic() - began, 2),
        "goals": {
            "regret_ratio": REGRET_RATIO_TARGET,
            "best_share": BEST_SHARE_TARGET,
            "ratings": RATINGS_TARGET,
        },
        "runs": rows,
        "summary": summary,
    }
    path = (
        Path(args.json)
        if args.json
        else ROOT / "bench" / "results" / f"quality-seeds-{dt.date.today()}.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(_render(rows, summary))
    print(f"\n{len(rows)} runs took {report['duration_seconds']:.0f} s; results in {path}")
    return 0


def _render(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    lines = ["| seed | best share | by phase | regret ratio |", "|---:|---:|---|---:|"]
    for r in rows:
        phases = " / ".join(f"{p:.3f}" for p in r.get("by_phase", [])) or "-"
        lines.append(
            f"| {r['seed']} | {r['best_share']:.3f} | {phases} | {r['regret_ratio']:.1f}x |"
        )
    s = summary
    lines.append("")
    lines.append(
        f"best share: median {s['best_share_median']:.3f}, min {s['best_share_min']:.3f}"
        + (
            f", >= {BEST_SHARE_TARGET:.2f} in {s['best_share_met']} of {s['runs']}"
            if "best_share_met" in s
            else ""
        )
    )
    lines.append(
        f"regret ratio: median {s['regret_ratio_median']:.1f}x, min {s['regret_ratio_min']:.1f}x, "
        f">= {REGRET_RATIO_TARGET:g}x in {s['regret_ratio_met']} of {s['runs']}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
