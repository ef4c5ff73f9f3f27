"""How far per-prompt routing on these features can go, given far more than a gateway sees.

    python bench/pgr_ceiling.py [--train 120,250,500,1000] [--repeats 20] [--cascade]

Issue 22 asks for PGR >= 0.7 at half the strong model's calls after 500 rated prompts.
The gateway's learner gets, per rated prompt, one model's rating (the model that served
it), noisy, 30 % of the time. This gives a ridge regression far more: N prompts with
*both* models' recorded quality, so the gain of the strong model on each is known
exactly, fitted offline on the gateway's own features (`prompt_features.features`),
with its ridge strength picked afterwards from a grid by the test result itself (which
flatters it). It then sends the half of the other prompts with the highest predicted
gain to the strong model. What it reaches bounds, from above, what the learner can
reach from N ratings on these features; "length" (the longer half to the strong model)
and "oracle" (knowing every answer) are the reference lines. With scikit-learn
installed it also fits 32,768 hashed TF-IDF word 1-2-grams and character 3-5-grams, to
see whether more features would help.

`--cascade` also fits the same features of the prompt *and of the weak model's recorded
answer* (`prompt_features.features` of each, side by side): what a cascade would know,
where the cheap model answers first and the gateway decides from its answer whether to
ask the strong one. It bounds how much such a design could add, not what Gatewise does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `bench.*` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.replay_data import load
from gateway.routing.prompt_features import features, prompt_text

__all__ = ["half_to_strong_pgr", "main", "ridge"]

LAMBDAS = (1.0, 10.0, 100.0)


def half_to_strong_pgr(score: np.ndarray, weak: np.ndarray, strong: np.ndarray) -> float:
    """PGR when the half of the prompts with the highest `score` go to the strong model:
    (q - q_weak) / (q_strong - q_weak), q the mean quality served."""
    n = len(score)
    chosen = np.zeros(n, dtype=bool)
    chosen[np.argsort(-score, kind="stable")[: n // 2]] = True
    served = np.where(chosen, strong, weak).mean()
    return float((served - weak.mean()) / (strong.mean() - weak.mean()))


def ridge(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """Ridge regression weights: (X'X + lam I)^-1 X'y."""
    return np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ y)


def _tfidf(texts: list[str]) -> Any:
    """Hashed TF-IDF word 1-2-grams and character 3-5-grams, if scikit-learn is here."""
    try:
        from scipy.sparse import hstack
        from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
    except ImportError:
        print("(scikit-learn not installed: the TF-IDF comparison is skipped)")
        return None
    words = HashingVectorizer(n_features=2**14, ngram_range=(1, 2), alternate_sign=False)
    chars = HashingVectorizer(
        n_features=2**14, analyzer="char_wb", ngram_range=(3, 5), alternate_sign=False
    )
    both = hstack([words.transform(texts), chars.transform(texts)]).tocsr()
    return TfidfTransformer().fit_transform(both)


def _sk_ridge(alpha: float) -> Any:
    from sklearn.linear_model import Ridge

    return Ridge(alpha=alpha)


def _mean_ci(values: Sequence[float]) -> str:
    arr = np.asarray(values)
    half = 1.96 * arr.std(ddof=1) / np.sqrt(len(arr)) if len(arr) > 1 else 0.0
    return f"{arr.mean():.3f} ± {half:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", default="120,250,500,1000", help="prompts fitted on")
    parser.add_argument("--repeats", type=int, default=20, help="random splits per N")
    parser.add_argument("--data", default="gsm8k,mt_bench")
    parser.add_argument(
        "--cascade", action="store_true", help="also: features of the weak model's answer"
    )
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    for name in args.data.split(","):
        prompts = load(name)
        bodies = [{"messages": [{"role": r, "content": c} for r, c in p.messages]} for p in prompts]
        texts = [prompt_text(body) for body in bodies]
        x = np.array([np.asarray(features(*text), dtype=float) for text in texts])
        weak = np.array([p.quality["weak"] for p in prompts])
        strong = np.array([p.quality["strong"] for p in prompts])
        gain = strong - weak
        n = len(prompts)
        length = np.array([float(sum(len(c) for _, c in p.messages)) for p in prompts])
        print(f"\n{name}: {n} prompts, {x.shape[1]} features")
        print(f"oracle (every answer known): {half_to_strong_pgr(gain, weak, strong):.3f}")
        print(
            f"the longer half to the strong model: {half_to_strong_pgr(length, weak, strong):.3f}"
        )
        tfidf = _tfidf([text for text, _ in texts])
        # The weak model's answer beside the prompt (its bias slot dropped): a cascade's view.
        views = [("gateway's", x)]
        if args.cascade:
            answers = np.array([features(p.answers["weak"])[1:] for p in prompts])
            views.append(("gateway's, prompt and weak answer", np.hstack([x, answers])))
        print("| fitted on N | features | ridge strength | PGR on the rest, half strong (95 %) |")
        print("|---:|---|---:|---|")
        for size in (int(s) for s in args.train.split(",")):
            if size >= n - 10:
                continue
            for label, seen in views:
                for lam in LAMBDAS:
                    results = []
                    for _ in range(args.repeats):
                        order = rng.permutation(n)
                        fit, rest = order[:size], order[size:]
                        w = ridge(seen[fit], gain[fit], lam)
                        results.append(half_to_strong_pgr(seen[rest] @ w, weak[rest], strong[rest]))
                    print(f"| {size} | {label} | {lam:g} | {_mean_ci(results)} |")
            for alpha in (0.3, 1.0, 3.0) if tfidf is not None else ():
                results = []
                for _ in range(args.repeats):
                    order = rng.permutation(n)
                    fit, rest = order[:size], order[size:]
                    fitted = _sk_ridge(alpha).fit(tfidf[fit], gain[fit])
                    score = fitted.predict(tfidf[rest])
                    results.append(half_to_strong_pgr(score, weak[rest], strong[rest]))
                print(f"| {size} | TF-IDF 32,768 | {alpha:g} | {_mean_ci(results)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
