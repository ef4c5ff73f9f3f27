"""Statistics an experiment's results can be read by at any time ("peeking") without
their error rates growing: always-valid confidence sequences and sequential tests.

The difference of two arms' means, and each arm's mean, get Robbins' normal-mixture
confidence sequence (Howard, Ramdas, McAuliffe & Sekhon 2021, "Time-uniform,
nonparametric, nonasymptotic confidence sequences", eq. (14)). For a sum S_t whose
increments are (asymptotically) Gaussian with variance process V_t, the mixture over
the drift lambda ~ N(0, 1/rho) of exp(lambda S_t - lambda^2 V_t / 2) is a nonnegative
martingale; by Ville's inequality it exceeds 1/alpha at ANY time with probability at
most alpha, so

    |S_t| < sqrt((V_t + rho) * (2 log(1/alpha) + log((V_t + rho) / rho)))

holds for all t at once with probability 1 - alpha. For the difference of two arms'
means with n_A and n_B samples the canonical joint distribution of the estimates
(Jennison & Turnbull, ch. 3) makes the statistic a Brownian motion in the effective
sample size t = 1/(1/n_A + 1/n_B), whatever the arms' sample sizes at each look; in
units of the estimate's standard error the interval is

    diff +- se * sqrt((t + rho) * (2 log(1/alpha) + log((t + rho) / rho)) / t).

Variances are estimated (floored, and nothing is decided before `min_samples` per arm):
the sequence is then asymptotically valid (Waudby-Smith et al. 2023); bench/experiments.py
measures the false-winner rate under continuous monitoring. `rho` sets where the
sequence is tightest: `rho_for(t)` picks it for an expected effective sample size.

Guards ask a one-sided question of a rate, "is this arm's error rate above p0?", with
a Beta-mixture sequential probability ratio test (the mixture over p > p0 of the
likelihood ratio against p0, a supermartingale under every p <= p0), exact for
Bernoulli outcomes. Numerics: numpy and scipy (betaln, betaincc, minimize_scalar).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import ArrayLike, NDArray

# numpy and scipy are imported where they are used: a gateway without experiments never
# loads them (scipy adds about a second to the start), and the report's intervals are
# plain floats (`radius`).

__all__ = [
    "Interval",
    "Moments",
    "difference_interval",
    "log_rate_evidence",
    "mean_interval",
    "mixture_radius",
    "radius",
    "rate_exceeds",
    "rho_for",
]


def radius(t: float, alpha: float, rho: float) -> float:
    """The normal-mixture boundary for a standardized sum at intrinsic time `t`, divided
    by sqrt(t): the half-width of the confidence sequence in standard errors."""
    return math.sqrt((t + rho) * (2 * math.log(1 / alpha) + math.log((t + rho) / rho)) / t)


def mixture_radius(t: ArrayLike, alpha: float, rho: float) -> NDArray[np.float64]:
    """`radius` over an array of times (every prefix of a simulated run at once)."""
    import numpy as np

    t = np.asarray(t, dtype=np.float64)
    radius: NDArray[np.float64] = np.sqrt(
        (t + rho) * (2 * math.log(1 / alpha) + np.log((t + rho) / rho)) / t
    )
    return radius


def rho_for(t: float, alpha: float) -> float:
    """The mixture parameter that makes the sequence narrowest at intrinsic time `t`."""
    from scipy.optimize import minimize_scalar

    found = minimize_scalar(
        lambda r: radius(t, alpha, math.exp(r)),
        bounds=(math.log(t) - 8, math.log(t) + 8),
        method="bounded",
    )
    return math.exp(float(found.x))


@dataclass(slots=True)
class Moments:
    """Count, sum and sum of squares of one metric's observations: enough for a mean and
    a variance, and additive (processes' moments add up; a replaced rating is removed)."""

    n: float = 0.0
    total: float = 0.0
    squares: float = 0.0

    def add(self, value: float, weight: float = 1.0) -> None:
        self.n += weight
        self.total += weight * value
        self.squares += weight * value * value

    def merge(self, other: Moments) -> None:
        self.n += other.n
        self.total += other.total
        self.squares += other.squares

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n > 0 else None

    def variance(self, floor: float = 0.0) -> float:
        """The sample variance, at least `floor` (a few identical ratings must not make
        the interval zero wide)."""
        if self.n < 2:
            return floor
        spread = (self.squares - self.total * self.total / self.n) / (self.n - 1)
        return max(spread, floor)

    def to_list(self) -> list[float]:
        return [self.n, self.total, self.squares]

    @classmethod
    def from_list(cls, data: Any) -> Moments:
        n, total, squares = (float(x) for x in data)
        return cls(n, total, squares)


@dataclass(frozen=True, slots=True)
class Interval:
    estimate: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def mean_interval(m: Moments, alpha: float, rho: float, floor: float = 0.0) -> Interval | None:
    """An always-valid confidence sequence for one arm's mean (None: no data yet)."""
    if m.n < 2 or m.mean is None:
        return None
    se = math.sqrt(m.variance(floor) / m.n)
    half = se * radius(m.n, alpha, rho)
    return Interval(m.mean, m.mean - half, m.mean + half)


def difference_interval(
    control: Moments, arm: Moments, alpha: float, rho: float, floor: float = 0.0
) -> Interval | None:
    """An always-valid confidence sequence for mean(arm) - mean(control), `rho` in
    effective samples (None: either arm has fewer than two observations)."""
    if control.n < 2 or arm.n < 2 or control.mean is None or arm.mean is None:
        return None
    se = math.sqrt(control.variance(floor) / control.n + arm.variance(floor) / arm.n)
    t = 1.0 / (1.0 / control.n + 1.0 / arm.n)
    half = se * radius(t, alpha, rho)
    diff = arm.mean - control.mean
    return Interval(diff, diff - half, diff + half)


def log_rate_evidence(events: float, n: float, p0: float, a: float = 1.0, b: float = 1.0) -> float:
    """log of the Beta(a, b)-mixture likelihood ratio, over rates p > p0, of `events` in
    `n` Bernoulli trials against rate p0. Under any true rate <= p0 the ratio is a
    nonnegative supermartingale: it ever reaches 1/alpha with probability <= alpha."""
    from scipy.special import betaincc, betaln

    misses = n - events
    mixed = betaln(a + events, b + misses) + math.log(
        max(betaincc(a + events, b + misses, p0), 1e-300)
    )
    prior = betaln(a, b) + math.log(betaincc(a, b, p0))
    null = events * math.log(p0) + misses * math.log1p(-p0)
    return float(mixed - prior - null)


def rate_exceeds(events: float, n: float, p0: float, alpha: float) -> bool:
    """Whether the evidence that the rate is above p0 has reached 1/alpha. The mixture
    is Beta(1, b) with mean 2 p0: most power for rates a few times the limit, the harm
    a guard is for."""
    if n <= 0 or events <= p0 * n:
        return False
    b = max(1.0, (1 - 2 * p0) / (2 * p0))
    return bool(log_rate_evidence(events, n, p0, 1.0, b) >= math.log(1 / alpha))
