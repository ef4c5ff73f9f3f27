"""What pairwise judgements say: win rates with Wilson intervals, and a Bradley-Terry
rating per model with intervals from its Fisher information.

Kept apart from where judgements are collected (`pairwise.py`) so that the benchmark
(`bench/comparisons.py`) fits the very same model the admin API reports.

The model: P(i beats j) = 1 / (1 + exp(θj - θi)). A tie counts as half a win for each
side. The strengths θ are fitted by maximum likelihood with a Gaussian prior
(`RIDGE`: θ ~ N(0, 1/RIDGE)), which keeps them finite when one model has won every
judgement and fixes their sum (the likelihood only sees differences) at zero; the
intervals come from the (pseudo-)inverse of the penalised log-likelihood's Hessian on
the strengths that sum to zero (the observed Fisher information). Ratings are shown on
the Elo scale: 1000 + θ · 400 / ln 10, so 100 points ≈ a 64 % chance to win.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "ELO",
    "RIDGE",
    "BradleyTerry",
    "Rating",
    "Tally",
    "bradley_terry",
    "wilson",
    "z_of",
]

# The prior's precision: θ ~ N(0, 1), i.e. a model one sd stronger than another wins 73 %
# of the time (≈ 170 Elo points). One verdict moves a rating by tens of points, not
# hundreds; a hundred verdicts on a pair outweigh the prior 25 to 1.
RIDGE = 1.0
ELO = 400 / math.log(10)  # θ to Elo points
_BASE = 1000.0

# numpy and scipy are imported where they are used, not with the module: scipy.stats
# alone adds about a second to the gateway's start, for a page nobody may open.


def z_of(confidence: float) -> float:
    """The two-sided standard normal quantile: 1.96 for 0.95."""
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(wins: float, n: float, confidence: float = 0.95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion `wins` / `n` (None when n is 0).
    A whole number of wins goes to scipy's own; half-wins (ties) use the same formula."""
    if n <= 0:
        return None
    if float(wins).is_integer() and float(n).is_integer():
        from scipy import stats

        ci = stats.binomtest(int(wins), int(n)).proportion_ci(confidence, method="wilson")
        return float(ci.low), float(ci.high)
    z = z_of(confidence)
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True, slots=True)
class Tally:
    """Judgements between two models: how often each won, and the ties."""

    a: str
    b: str
    a_wins: int
    b_wins: int
    ties: int

    @property
    def n(self) -> int:
        return self.a_wins + self.b_wins + self.ties


@dataclass(frozen=True, slots=True)
class Rating:
    model: str
    theta: float  # log-strength, the model's own scale
    se: float  # its standard error
    judgements: int  # judgements it took part in

    def elo(self, z: float = 0.0) -> float:
        return _BASE + (self.theta + z * self.se) * ELO


@dataclass(frozen=True, slots=True)
class BradleyTerry:
    """A fit: ratings best first, and the covariance of the strengths (in `models`'
    order) for intervals on differences."""

    models: tuple[str, ...]
    ratings: tuple[Rating, ...]
    cov: np.ndarray

    def difference(self, better: str, worse: str) -> tuple[float, float]:
        """θ(better) - θ(worse) and its standard error."""
        i, j = self.models.index(better), self.models.index(worse)
        theta = {r.model: r.theta for r in self.ratings}
        variance = self.cov[i, i] + self.cov[j, j] - 2 * self.cov[i, j]
        return theta[better] - theta[worse], math.sqrt(max(variance, 0.0))

    def separated(self, confidence: float = 0.95) -> bool:
        """Every model is ahead of the next one down by more than the two-sided
        `confidence` interval of their difference: the order is decided."""
        z = z_of(confidence)
        order = self.ratings
        for upper, lower in itertools.pairwise(order):
            diff, se = self.difference(upper.model, lower.model)
            if diff - z * se <= 0:
                return False
        return len(order) > 1


def bradley_terry(tallies: Sequence[Tally], ridge: float = RIDGE) -> BradleyTerry:
    """Fit strengths to the tallies (see the module's docstring)."""
    import numpy as np
    from scipy import optimize

    models = tuple(sorted({t.a for t in tallies} | {t.b for t in tallies}))
    index = {m: k for k, m in enumerate(models)}
    k = len(models)
    if k == 0:
        return BradleyTerry((), (), np.zeros((0, 0)))
    i = np.array([index[t.a] for t in tallies], dtype=np.intp)
    j = np.array([index[t.b] for t in tallies], dtype=np.intp)
    w_ij = np.array([t.a_wins + t.ties / 2 for t in tallies], dtype=float)
    w_ji = np.array([t.b_wins + t.ties / 2 for t in tallies], dtype=float)
    n = w_ij + w_ji

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        d = theta[i] - theta[j]
        # -log(sigmoid(d)) = log(1 + e^-d), computed stably
        nll = float(np.sum(w_ij * np.logaddexp(0.0, -d) + w_ji * np.logaddexp(0.0, d)))
        nll += ridge / 2 * float(theta @ theta)
        p = 1.0 / (1.0 + np.exp(-d))
        g_pair = n * p - w_ij  # d nll / d d
        grad = ridge * theta
        np.add.at(grad, i, g_pair)
        np.add.at(grad, j, -g_pair)
        return nll, grad

    def information(theta: np.ndarray) -> np.ndarray:
        """The data's Hessian of the negative log-likelihood (the Fisher information)."""
        p = 1.0 / (1.0 + np.exp(-(theta[i] - theta[j])))
        weight = n * p * (1 - p)
        out = np.zeros((k, k))
        np.add.at(out, (i, i), weight)
        np.add.at(out, (j, j), weight)
        np.add.at(out, (i, j), -weight)
        np.add.at(out, (j, i), -weight)
        return out

    prior = ridge * np.eye(k)
    # Newton's steps in a trust region on the exact gradient and Hessian: a few
    # iterations for a handful of models.
    fit = optimize.minimize(
        objective,
        np.zeros(k),
        jac=True,
        hess=lambda theta: information(theta) + prior,
        method="trust-exact",
    )
    theta = fit.x - fit.x.mean()  # the prior centres it; this only removes rounding
    # The likelihood sees differences only: intervals are for strengths that sum to zero,
    # so the prior counts on that subspace and the pseudo-inverse leaves the sum out.
    centred = ridge * (np.eye(k) - 1.0 / k)
    cov = np.linalg.pinv(information(theta) + centred, hermitian=True)
    counts = np.zeros(k)
    np.add.at(counts, i, n)
    np.add.at(counts, j, n)
    ratings = [
        Rating(models[m], float(theta[m]), math.sqrt(float(cov[m, m])), round(counts[m]))
        for m in range(k)
    ]
    ratings.sort(key=lambda r: (-r.theta, r.model))
    return BradleyTerry(models, tuple(ratings), cov)
