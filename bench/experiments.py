"""Experiments' statistics, measured: false winners under continuous monitoring (A/A) and
how many ratings a real lift needs to be found (power).

Each simulated experiment runs through the gateway's own `Experiments` object: ratings go
in through `Experiments.rated` (the path a real rating takes) and the decision is asked
for after every rating (`Experiments.decision`): monitored continuously, the way an
admin who reloads the dashboard all day would. A run ends at its first decision (the
gateway keeps the first decision it reaches) or at its horizon.

Ratings are drawn as the routing-quality benchmark draws them
(`bench.quality_scenarios.rating_for`: round(1 + 4q + N(0, 0.5)), clipped to 1..5). The
control's answers have true quality 0.6 (mean rating 3.4); in the power runs the
challenger's quality is set (scipy's brentq on the exact expected rating) so that its
mean rating is 0.3 points higher. Each rating belongs to either arm with probability
1/2 (the 50/50 split).

    python bench/experiments.py [--runs 500] [--horizon 4000] [--promise 250] [--json PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench.*` and `gateway` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
from scipy.optimize import brentq
from scipy.stats import norm

from bench.quality_scenarios import rating_for
from gateway.core.config import ExperimentConfig, ModelConfig
from gateway.core.types import ResponseRecord
from gateway.routing.experiments import ArmStats, Experiments
from gateway.storage import SQLiteStore

__all__ = ["expected_rating", "main", "simulate"]

ROOT = Path(__file__).resolve().parents[1]
NOISE = 0.5  # the rating noise of bench/quality_scenarios.py (rating_for's gauss)
CONTROL_QUALITY = 0.6
LIFT = 0.3
AA_TARGET = 0.05  # at most this share of A/A runs may declare a winner
POWER_TARGET = 0.80  # at least this share of lifted runs must find the winner in time
PROMISE = 250  # ratings in all (both arms) within which the docs promise the winner


def expected_rating(quality: float) -> float:
    """The exact mean of rating_for(quality, N(0, NOISE)): round, then clip to 1..5."""
    centre = 1 + 4 * quality
    mean = 0.0
    for r in range(1, 6):
        low = -float("inf") if r == 1 else r - 0.5
        high = float("inf") if r == 5 else r + 0.5
        mean += r * float(norm.cdf((high - centre) / NOISE) - norm.cdf((low - centre) / NOISE))
    return mean


def lifted_quality(control: float, lift: float) -> float:
    target = expected_rating(control) + lift
    return float(brentq(lambda q: expected_rating(q) - target, control, 1.0))


def _experiments() -> tuple[Experiments, ExperimentConfig]:
    config = ExperimentConfig.model_validate(
        {
            "name": "sim",
            "route": "auto",
            "arms": [{"name": "control", "model": "a"}, {"name": "challenger", "model": "b"}],
            "metric": "overall",
        }
    )
    models = {n: ModelConfig(name=n, provider="mock") for n in ("a", "b")}
    store = SQLiteStore(":memory:")  # never opened: nothing here is stored
    experiments = Experiments([config], models, {"auto": None}, store, "bench", clock=lambda: 0.0)
    return experiments, config


def simulate(
    qualities: tuple[float, float],
    horizon: int,
    seed: int,
    experiments: Experiments,
    strict: bool = False,
) -> dict[str, Any]:
    """One experiment: ratings one at a time, a decision asked for after each. `strict`:
    a "no detectable difference" does not end the run, only a winner or the horizon (the
    confidence sequence's own guarantee, without the gateway's first-decision rule)."""
    running = experiments.all["sim"]
    running.own = [ArmStats(), ArmStats()]
    running.decision = None
    rng = random.Random(seed)
    records = [
        ResponseRecord("r", "q", m, "mock", "text-to-text", "auto", None, 0.0, 0.0,
                       experiment="sim", arm=arm)
        for m, arm in (("a", "control"), ("b", "challenger"))
    ]  # fmt: skip
    for n in range(1, horizon + 1):
        arm = 0 if rng.random() < 0.5 else 1
        rating = rating_for(qualities[arm], rng.gauss(0, NOISE))
        experiments.rated(records[arm], {"overall": rating}, None)
        decision = experiments.decision("sim")
        if decision is not None and (decision["status"] == "winner" or not strict):
            return {"ratings": n, "status": decision["status"], "winner": decision["winner"]}
    return {"ratings": horizon, "status": "running", "winner": None}


def _summary(runs: list[dict[str, Any]], promise: int | None = None) -> dict[str, Any]:
    n = len(runs)
    winners = [r for r in runs if r["status"] == "winner"]
    out: dict[str, Any] = {
        "runs": n,
        "winner": len(winners) / n,
        "no_difference": sum(r["status"] == "no_difference" for r in runs) / n,
        "undecided": sum(r["status"] == "running" for r in runs) / n,
    }
    if winners:
        counts = sorted(r["ratings"] for r in winners)
        out["ratings_to_winner"] = {
            "median": statistics.median(counts),
            "p80": counts[min(len(counts) - 1, int(0.8 * len(counts)))],
            "max": counts[-1],
        }
    if promise is not None:
        found = [r for r in runs if r["winner"] == "challenger" and r["ratings"] <= promise]
        out["challenger_within_promise"] = len(found) / n
        out["wrong_winner"] = sum(r["winner"] == "control" for r in runs) / n
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/experiments.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--runs", type=int, default=500, help="simulated experiments of each kind")
    parser.add_argument(
        "--horizon", type=int, default=4000, help="ratings an A/A run is watched for"
    )
    parser.add_argument("--promise", type=int, default=PROMISE, help="ratings the docs promise")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="where to write the results")
    args = parser.parse_args(argv)

    experiments, config = _experiments()
    challenger = lifted_quality(CONTROL_QUALITY, LIFT)
    began = time.perf_counter()
    aa = [
        simulate((CONTROL_QUALITY, CONTROL_QUALITY), args.horizon, args.seed * 100_000 + i,
                 experiments)
        for i in range(args.runs)
    ]  # fmt: skip
    strict = [
        simulate((CONTROL_QUALITY, CONTROL_QUALITY), args.horizon, args.seed * 100_000 + i,
                 experiments, strict=True)
        for i in range(args.runs)
    ]  # fmt: skip
    power = [
        simulate((CONTROL_QUALITY, challenger), args.horizon, args.seed * 100_000 + 50_000 + i,
                 experiments)
        for i in range(args.runs)
    ]  # fmt: skip
    elapsed = time.perf_counter() - began
    result = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
        "command": "python bench/experiments.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "method": "normal-mixture confidence sequence (gateway/routing/sequential.py)",
        "alpha": config.alpha,
        "min_samples": config.min_samples,
        "expected_samples": config.expected_samples,
        "control_mean_rating": round(expected_rating(CONTROL_QUALITY), 4),
        "challenger_mean_rating": round(expected_rating(challenger), 4),
        "horizon": args.horizon,
        "seconds": round(elapsed, 1),
        "aa": _summary(aa),
        "aa_strict": _summary(strict),
        "power": _summary(power, args.promise),
        "promise": args.promise,
    }
    result["aa_ok"] = max(result["aa"]["winner"], result["aa_strict"]["winner"]) <= AA_TARGET
    result["power_ok"] = result["power"]["challenger_within_promise"] >= POWER_TARGET
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0 if result["aa_ok"] and result["power_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
