"""Per-prompt routing on real recorded answers, simulated in-process: does it beat mixing
the two models at random, and how much of the strong model's quality does it keep at
half its calls?

The data is RouteLLM's (../shared/data/routellm/): GPT-4 ("strong", $10/$30 per M
tokens) and Mixtral-8x7B ("weak", $0.6/$0.6) on the same prompts, with whether each was
right (GSM8K) or its judge score (MT-Bench, 1-10). The learner of
gateway/routing/prompt_router.py runs directly (no HTTP: bench/ replays through a real
gateway elsewhere); 30 % of answers are rated (5 right, 1 wrong; a judge score s as
1 + 4 (s - 1) / 9 rounded); both models have equal priors, the weak one listed first.

Two measurements per seed (prompts shuffled by the seed):

- online: every prompt once, routed as the gateway would (Thompson sampling, with the
  quality `--tolerance`: the cheapest model within that fraction of the best), learning
  as it goes; quality, cost and the share of strong calls per half of the run.
- held-out: a quarter of the prompts is set aside; the learner streams the rest (again
  and again, reshuffled, if it takes more to reach the checkpoint) until it has R
  ratings, then routes the set-aside prompts by its expected gain from the strong
  model, sending to it the half with the highest gain (a threshold a gateway can set
  from its recent traffic's expected gains, with no answer's quality known): PGR at
  half the strong calls, after R rated prompts.

PGR = (q - q_weak) / (q_strong - q_weak); the random-mix line at a share s of strong
calls is q_weak + s (q_strong - q_weak) over the same prompts; the gap is q minus it.
Means over seeds with 95 % confidence intervals (Student t).

    python bench/prompt_routing.py [--data gsm8k|mt_bench|both] [--seeds 13]
        [--tolerance 0,0.1,0.2] [--checkpoints 100,250,500] [--timing] [--json PATH]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench.*` and `gateway` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
from scipy import stats as scipy_stats

from gateway.routing.prompt_features import Vector, features, prompt_text
from gateway.routing.prompt_router import PromptRouter

__all__ = ["Item", "load", "main"]

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routellm"
RATED = 0.3
MODELS = ("weak", "strong")  # the weak one listed first, as in the replay
PRICES = {"weak": (0.6, 0.6), "strong": (10.0, 30.0)}  # USD per million tokens in, out
ROUTE = "replay"


@dataclass(slots=True)
class Item:
    x: Vector
    quality: tuple[float, float]  # weak, strong: 0/1 correct, or the judge score 1-10
    rating: tuple[int, int]  # weak, strong: what a rater would give (1-5)
    cost: tuple[float, float]  # weak, strong: USD for this prompt's recorded answer


def _cost(model: str, prompt: str, answer: str) -> float:
    price_in, price_out = PRICES[model]
    return (len(prompt) / 4 * price_in + len(answer) / 4 * price_out) / 1e6  # ~4 chars a token


def load(name: str) -> list[Item]:
    items = []
    for line in (DATA / f"{name}.jsonl").read_bytes().splitlines():
        row = orjson.loads(line)
        if name == "gsm8k":
            body = {"messages": [{"role": "user", "content": row["prompt"]}]}
            quality = (float(row["weak_correct"]), float(row["strong_correct"]))
            rating = (5 if row["weak_correct"] else 1, 5 if row["strong_correct"] else 1)
        else:
            body = {"messages": [{"role": "user", "content": t} for t in row["user_turns"]]}
            quality = (float(row["weak_score"]), float(row["strong_score"]))
            rating = (_judge(row["weak_score"]), _judge(row["strong_score"]))
        text, turns = prompt_text(body)
        prompt = "\n".join(m["content"] for m in body["messages"])
        cost = (
            _cost("weak", prompt, row["weak_answer"] or ""),
            _cost("strong", prompt, row["strong_answer"] or ""),
        )
        items.append(Item(features(text, turns), quality, rating, cost))
    return items


def _judge(score: float) -> int:
    return round(1 + 4 * (score - 1) / 9)


def _router(seed: int) -> PromptRouter:
    return PromptRouter({ROUTE: dict.fromkeys(MODELS, 0.5)}, rng=random.Random(seed))


def _segment(served: Sequence[tuple[Item, int]]) -> dict[str, float]:
    """Quality, cost, strong share, PGR and the gap to random mixing over `served`."""
    n = len(served)
    q = sum(item.quality[k] for item, k in served) / n
    weak = sum(item.quality[0] for item, _ in served) / n
    strong = sum(item.quality[1] for item, _ in served) / n
    share = sum(k for _, k in served) / n
    oracle = [max(0, 1, key=lambda k, i=item: (i.quality[k], -k)) for item, _ in served]
    gap = strong - weak
    return {
        "quality": q,
        "cost_per_1k": 1000 * sum(item.cost[k] for item, k in served) / n,
        "strong_share": share,
        "pgr": (q - weak) / gap if gap else math.nan,
        "gap_to_random": q - (weak + share * gap),
        "q_weak": weak,
        "q_strong": strong,
        "q_oracle": sum(item.quality[k] for (item, _), k in zip(served, oracle, strict=True)) / n,
        "cost_oracle_per_1k": 1000
        * sum(item.cost[k] for (item, _), k in zip(served, oracle, strict=True))
        / n,
        "strong_share_oracle": sum(oracle) / n,
        "cost_strong_per_1k": 1000 * sum(item.cost[1] for item, _ in served) / n,
        "cost_weak_per_1k": 1000 * sum(item.cost[0] for item, _ in served) / n,
    }


class _Stream:
    """Serves items through one learner: routes, answers, rates 30 % of answers."""

    def __init__(self, seed: int, tolerance: float) -> None:
        self.router = _router(seed)
        self.rng = random.Random(seed * 7919 + 1)
        self.tolerance = tolerance
        self.ratings = 0
        self.served = 0

    def serve(self, item: Item) -> int:
        costs = item.cost
        k = self.router.choose(ROUTE, item.x, MODELS, costs, self.tolerance)
        if k is None:  # no rating yet: the model-level order, equal priors, first listed
            k = 0
        self.served += 1
        if self.rng.random() < RATED:
            rid = f"r{self.served}"
            self.router.remember(rid, ROUTE, item.x)
            self.router.rate(rid, MODELS[k], {"accuracy": item.rating[k]})
            self.ratings += 1
        return k


def online(items: list[Item], seed: int, tolerance: float) -> dict[str, dict[str, float]]:
    order = items[:]
    random.Random(seed).shuffle(order)
    stream = _Stream(seed, tolerance)
    served = [(item, stream.serve(item)) for item in order]
    half = len(served) // 2
    return {"first_half": _segment(served[:half]), "second_half": _segment(served[half:])}


def held_out(items: list[Item], seed: int, checkpoints: Sequence[int]) -> dict[int, dict[str, Any]]:
    order = items[:]
    rng = random.Random(seed)
    rng.shuffle(order)
    cut = len(order) // 4
    test, train = order[:cut], order[cut:]
    stream = _Stream(seed, 0.0)
    out: dict[int, dict[str, Any]] = {}
    epoch = train[:]
    passes = 0
    for checkpoint in sorted(checkpoints):
        while stream.ratings < checkpoint:
            if not epoch:
                epoch = train[:]
                rng.shuffle(epoch)
                passes += 1
            stream.serve(epoch.pop())
        learners = stream.router.posteriors[ROUTE]

        def gain(item: Item, learners: Any = learners) -> float:
            return float(item.x @ (learners["strong"].mean - learners["weak"].mean))

        # Half of the set-aside prompts to the strong model, those it gains most on: the
        # threshold is the median expected gain over them, as a gateway can calibrate it
        # on its recent traffic without knowing any answer's quality.
        gains = [gain(item) for item in test]
        ranked = sorted(range(len(test)), key=gains.__getitem__, reverse=True)
        strong = set(ranked[: len(test) // 2])
        served = [(item, int(i in strong)) for i, item in enumerate(test)]
        result: dict[str, Any] = dict(_segment(served))
        result["requests_seen"] = stream.served
        result["repeats"] = passes > 0
        out[checkpoint] = result
    return out


def _ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % confidence interval."""
    values = [v for v in values if not math.isnan(v)]
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan
    t = float(scipy_stats.t.ppf(0.975, len(values) - 1))
    return mean, t * statistics.stdev(values) / math.sqrt(len(values))


def _summary(runs: Sequence[dict[str, float]]) -> dict[str, list[float]]:
    return {key: list(_ci([run[key] for run in runs])) for key in runs[0]}


def _fmt(summary: dict[str, list[float]], keys: Sequence[str]) -> str:
    return "  ".join(f"{k}={summary[k][0]:.3f}±{summary[k][1]:.3f}" for k in keys)


_SHOW = ("quality", "strong_share", "pgr", "gap_to_random", "cost_per_1k")


def timing(items: list[Item], texts: Sequence[tuple[str, int]]) -> dict[str, float]:
    """CPU µs per request for features, for choosing among two models, for both (what
    the request path adds), and per rating (remembering the features, then the update;
    not on the request path)."""
    router = _router(1)
    stream = _Stream(1, 0.0)
    stream.router = router
    for item in items[:300]:
        stream.serve(item)
    costs = (1.0, 2.0)

    def per(call: Callable[[int], object], n: int) -> float:
        """CPU µs per call (this process's CPU time: what other processes on a busy
        machine take is not counted), the best of 3 rounds."""
        best = math.inf
        for _ in range(3):
            begin = time.process_time()
            for i in range(n):
                call(i)
            best = min(best, (time.process_time() - begin) / n * 1e6)
        return best

    m = len(texts)
    feats = per(lambda i: features(*texts[i % m]), 2000)
    choose = per(lambda i: router.choose(ROUTE, items[i % m].x, MODELS, costs), 2000)
    both = per(lambda i: router.choose(ROUTE, features(*texts[i % m]), MODELS, costs), 2000)
    rate = per(
        lambda i: (
            router.remember(f"t{i}", ROUTE, items[i % m].x),
            router.rate(f"t{i}", "weak", {"accuracy": 3}),
        ),
        500,
    )
    return {"features_us": feats, "choose_us": choose, "request_us": both, "rating_us": rate}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/prompt_routing.py", description=__doc__)
    parser.add_argument("--data", default="both", choices=["gsm8k", "mt_bench", "both"])
    parser.add_argument("--seeds", type=int, default=13)
    parser.add_argument("--tolerance", default="0", help="comma-separated, e.g. 0,0.1,0.2")
    parser.add_argument("--checkpoints", default="100,250,500")
    parser.add_argument("--timing", action="store_true", help="µs per request, then exit")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    names = ["gsm8k", "mt_bench"] if args.data == "both" else [args.data]
    report: dict[str, Any] = {"seeds": args.seeds, "rated": RATED}
    for name in names:
        items = load(name)
        if args.timing:
            texts = _texts(name)
            report[name] = {"timing": timing(items, texts)}
            print(name, {k: round(v, 1) for k, v in report[name]["timing"].items()})
            continue
        result: dict[str, Any] = {}
        everyone = _segment([(item, 1) for item in items])
        print(
            f"\n{name}: {len(items)} prompts; always-strong q={everyone['q_strong']:.3f} "
            f"cost/1k=${everyone['cost_strong_per_1k']:.3f}; always-weak "
            f"q={everyone['q_weak']:.3f} cost/1k=${everyone['cost_weak_per_1k']:.3f}; "
            f"oracle q={everyone['q_oracle']:.3f} cost/1k=${everyone['cost_oracle_per_1k']:.3f} "
            f"strong share {everyone['strong_share_oracle']:.3f}"
        )
        for tolerance in (float(t) for t in args.tolerance.split(",")):
            runs = [online(items, seed, tolerance) for seed in range(1, args.seeds + 1)]
            for half in ("first_half", "second_half"):
                summary = _summary([run[half] for run in runs])
                result[f"online tolerance={tolerance} {half}"] = summary
                print(f"online tol={tolerance} {half}: {_fmt(summary, _SHOW)}")
        checkpoints = [int(c) for c in args.checkpoints.split(",")]
        runs_h = [held_out(items, seed, checkpoints) for seed in range(1, args.seeds + 1)]
        for checkpoint in checkpoints:
            per_seed = [run[checkpoint] for run in runs_h]
            summary = _summary([{k: v for k, v in r.items() if k != "repeats"} for r in per_seed])
            repeats = sum(r["repeats"] for r in per_seed)
            result[f"held-out after {checkpoint} ratings"] = summary | {
                "seeds_with_repeats": repeats
            }
            note = f" (train prompts repeated in {repeats} seeds)" if repeats else ""
            print(f"held-out after {checkpoint} ratings{note}: {_fmt(summary, _SHOW)}")
        report[name] = result
    if args.json:
        args.json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return 0


def _texts(name: str) -> list[tuple[str, int]]:
    out = []
    for line in (DATA / f"{name}.jsonl").read_bytes().splitlines():
        row = orjson.loads(line)
        turns = [row["prompt"]] if name == "gsm8k" else row["user_turns"]
        out.append(prompt_text({"messages": [{"role": "user", "content": t} for t in turns]}))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
