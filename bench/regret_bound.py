"""What any router that keeps re-testing must spend on the weaker model: Lai and Robbins'
lower bound, from the recorded answers themselves.

    python bench/regret_bound.py [--rated 0.3]

Issue 22 asks for the strong model on >= 95 % of the second half of every replay run,
while a model that falls behind by bad luck (or improves later) must still be found.
A policy that finds the better model whatever the models' true qualities ("uniformly
good": its regret grows slower than any power of the run's length) must, by Lai and
Robbins (1985), call the weaker model at least ln(T) / KL times by request T, where KL
is the Kullback-Leibler divergence of the weaker model's rating distribution from the
stronger one's: the information one rating carries about which is better. (The exact
constant, Burnetas and Katehakis' K_inf, is at most this KL: the bound here is loose in
the router's favour.) With a share
r of answers rated, each call carries r x KL on average. Between request T/2 and T
that leaves at least ln(2) / (r x KL) weak calls: an asymptotic bound on the mean over
runs, so a single run can fall below it, but a goal for every run cannot be met by a
rule that also keeps re-testing. The rating distributions are the data sets' own (the
1-5 ratings the replay posts, add-half smoothed), not a model's: no constant here was
chosen by us.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench.*` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.replay_data import load

__all__ = ["kl_divergence", "main", "weak_calls_bound"]

RUN_LENGTH = {"gsm8k": 600, "mt_bench": 160}  # requests per replay run (bench/replay.py)


def kl_divergence(p: Counter[int], q: Counter[int], support: range = range(1, 6)) -> float:
    """KL(p || q) in nats between two rating counts, each add-half smoothed."""
    np, nq = sum(p.values()) + 0.5 * len(support), sum(q.values()) + 0.5 * len(support)
    out = 0.0
    for k in support:
        pk, qk = (p[k] + 0.5) / np, (q[k] + 0.5) / nq
        out += pk * math.log(pk / qk)
    return out


def weak_calls_bound(kl: float, rated: float, start: int, end: int) -> float:
    """Lai-Robbins: the fewest weak calls between requests `start` and `end` (mean)."""
    return math.log(end / start) / (rated * kl)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rated", type=float, default=0.3, help="share of answers rated")
    args = parser.parse_args(argv)
    print("| data | strong / weak mean rating | KL(weak || strong) per rating | "
          "weak calls in the second half, at least | strong share of it, at most |")  # fmt: skip
    print("|---|---|---:|---:|---:|")
    for name, length in RUN_LENGTH.items():
        prompts = load(name)
        strong = Counter(p.rating["strong"] for p in prompts)
        weak = Counter(p.rating["weak"] for p in prompts)
        kl = kl_divergence(weak, strong)
        half = length // 2
        calls = weak_calls_bound(kl, args.rated, half, length)
        means = [sum(k * c for k, c in counts.items()) / len(prompts) for counts in (strong, weak)]
        print(
            f"| {name} ({length} requests) | {means[0]:.2f} / {means[1]:.2f} | {kl:.3f} | "
            f"{calls:.1f} of {half} | {100 * (1 - calls / half):.1f} % |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
