"""How many pairwise judgements same-prompt comparisons need to recover the true order
of three models with known pairwise win rates.

    python bench/comparisons.py [--seeds 500] [--design all|star] [--json PATH]

Three simulated models A > B > C follow the Bradley-Terry model with known strengths
(by default P(A beats B) = P(B beats C) = 60 %, so P(A beats C) = 69.2 %); a judgement
is a tie with probability `--ties` (10 %), otherwise a win drawn from those rates.
Judgements arrive one at a time, each on a pair of models chosen at random: any of the
three pairs (`--design all`), or only the pairs with one challenger C
(`--design star`: A-C and B-C, as when a route of two models is compared with one
challenger; A and B are then only ever compared through C). After every `--step`
judgements the gateway's own fit (`gateway/routing/pairstats.py`, what
`GET /comparisons` reports) is read, as an operator refreshing the page would, and the
run stops when `order_decided` holds: every model leads the next one down by more than
the 95 % interval of their difference. Reported over `--seeds` runs: the judgements
until the order was decided (median, 80th, 95th percentile), the share of runs decided
within `--max` judgements, and the share whose decided order was wrong (continuous
monitoring inflates it above the nominal 5 % per comparison: this measures by how much).

Target (stated in the README): with the default rates and design, the order is decided
and right within the 95th-percentile count in at least 95 % of runs, and a wrong order is
declared in at most 5 % of them.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `gateway` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.routing.pairstats import Tally, bradley_terry

MODELS = ("A", "B", "C")  # the true order, best first


def strengths(adjacent: float) -> dict[str, float]:
    """Bradley-Terry strengths where each model beats the next one down with
    probability `adjacent`."""
    step = math.log(adjacent / (1 - adjacent))
    return {"A": step, "B": 0.0, "C": -step}


def win_rate(theta: dict[str, float], x: str, y: str) -> float:
    return 1 / (1 + math.exp(theta[y] - theta[x]))


def run_once(
    seed: int,
    theta: dict[str, float],
    *,
    ties: float,
    design: str,
    step: int,
    max_judgements: int,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """One simulated comparison, judged until the fit's order is decided (or `max`)."""
    rng = random.Random(seed)
    pairs: Sequence[tuple[str, str]] = (
        (("A", "B"), ("B", "C"), ("A", "C")) if design == "all" else (("A", "C"), ("B", "C"))
    )
    counts = {pair: [0, 0, 0] for pair in pairs}  # first wins, second wins, ties
    for n in range(1, max_judgements + 1):
        x, y = pairs[rng.randrange(len(pairs))]
        if rng.random() < ties:
            counts[(x, y)][2] += 1
        elif rng.random() < win_rate(theta, x, y):
            counts[(x, y)][0] += 1
        else:
            counts[(x, y)][1] += 1
        if n % step:
            continue
        fit = bradley_terry([Tally(x, y, *c) for (x, y), c in counts.items() if sum(c)])
        if len(fit.ratings) == len(MODELS) and fit.separated(confidence):
            order = tuple(r.model for r in fit.ratings)
            return {"seed": seed, "decided_at": n, "right": order == MODELS, "order": order}
    return {"seed": seed, "decided_at": None, "right": None, "order": None}


def percentile(values: list[int], q: float) -> int | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def summarise(runs: list[dict[str, Any]], max_judgements: int) -> dict[str, Any]:
    decided = [r for r in runs if r["decided_at"] is not None]
    right = [r["decided_at"] for r in decided if r["right"]]
    wrong = [r for r in decided if not r["right"]]
    at = [r["decided_at"] for r in decided]
    p95 = percentile(at, 0.95)
    return {
        "runs": len(runs),
        "decided": len(decided),
        "decided_share": round(len(decided) / len(runs), 4),
        "wrong": len(wrong),
        "wrong_share": round(len(wrong) / len(runs), 4),
        "judgements_median": statistics.median(at) if at else None,
        "judgements_p80": percentile(at, 0.80),
        "judgements_p95": p95,
        "judgements_max": max(at) if at else None,
        # the share of runs decided, and right, within the 95th percentile's count
        "right_within_p95": round(
            sum(1 for n in right if p95 is not None and n <= p95) / len(runs), 4
        ),
        "max_judgements": max_judgements,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=500)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--adjacent", type=float, default=0.60, help="P(A>B) = P(B>C)")
    parser.add_argument("--ties", type=float, default=0.10)
    parser.add_argument("--design", choices=("all", "star"), default="all")
    parser.add_argument("--step", type=int, default=10, help="judgements between looks")
    parser.add_argument("--max", type=int, default=5000, dest="max_judgements")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    theta = strengths(args.adjacent)
    began = time.perf_counter()
    runs = [
        run_once(
            seed, theta, ties=args.ties, design=args.design, step=args.step,
            max_judgements=args.max_judgements,
        )
        for seed in range(args.first_seed, args.first_seed + args.seeds)
    ]  # fmt: skip
    summary = summarise(runs, args.max_judgements)
    rates = {f"{x}>{y}": round(win_rate(theta, x, y), 4)
             for x, y in (("A", "B"), ("B", "C"), ("A", "C"))}  # fmt: skip
    result = {
        "bench": "comparisons",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "design": args.design,
        "win_rates": rates,
        "ties": args.ties,
        "step": args.step,
        "seconds": round(time.perf_counter() - began, 1),
        **summary,
    }
    print(
        f"three models, win rates {rates}, ties {args.ties:.0%}, design {args.design}, "
        f"a look every {args.step} judgements, {summary['runs']} runs:"
    )
    print(
        f"  order decided in {summary['decided_share']:.1%} of runs within "
        f"{args.max_judgements}; judgements until decided: median "
        f"{summary['judgements_median']}, p80 {summary['judgements_p80']}, "
        f"p95 {summary['judgements_p95']}, max {summary['judgements_max']}"
    )
    print(
        f"  decided and right within {summary['judgements_p95']}: "
        f"{summary['right_within_p95']:.1%}; a wrong order declared: "
        f"{summary['wrong_share']:.1%} ({result['seconds']} s)"
    )
    path = args.json
    if path is None:
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        path = Path(__file__).parent / "results" / f"comparisons-{args.design}-{day}.json"
    # One line per run: [seed, judgements until decided (null: never), the order decided]
    detail = [[r["seed"], r["decided_at"], "".join(r["order"] or ())] for r in runs]
    text = json.dumps({**result, "runs_detail": "RUNS"}, indent=1)
    rows = ",\n  ".join(json.dumps(row) for row in detail)
    path.write_text(text.replace('"RUNS"', f"[\n  {rows}\n ]") + "\n")
    print(f"  written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
