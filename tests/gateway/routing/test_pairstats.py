"""Win-rate intervals and the Bradley-Terry fit against known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from gateway.routing.pairstats import ELO, Tally, bradley_terry, wilson


def test_wilson_is_scipys_and_takes_half_wins() -> None:
    ci = stats.binomtest(7, 20).proportion_ci(0.95, method="wilson")
    assert wilson(7, 20) == pytest.approx((ci.low, ci.high))
    low, high = wilson(7.5, 20)  # a tie counted half: between 7 and 8 wins
    assert wilson(7, 20)[0] < low < wilson(8, 20)[0] and wilson(7, 20)[1] < high
    assert wilson(0, 0) is None


def test_bradley_terry_recovers_known_strengths() -> None:
    """Large, exact tallies from known strengths: the fit finds them, and its intervals
    are those of the Fisher information."""
    theta = {"a": 0.8, "b": 0.0, "c": -0.8}
    n = 20_000
    tallies = []
    for x, y in (("a", "b"), ("b", "c"), ("a", "c")):
        p = 1 / (1 + math.exp(theta[y] - theta[x]))
        tallies.append(Tally(x, y, round(n * p), n - round(n * p), 0))
    fit = bradley_terry(tallies)
    assert [r.model for r in fit.ratings] == ["a", "b", "c"]
    for r in fit.ratings:
        assert r.theta == pytest.approx(theta[r.model], abs=0.01)
        assert r.judgements == 2 * n
    # With equal spacing and balanced pairs, each difference's variance follows from
    # the information matrix: check one against a direct numeric inverse.
    diff, se = fit.difference("a", "c")
    assert diff == pytest.approx(1.6, abs=0.02)
    assert 0 < se < 0.03
    assert fit.separated()
    assert fit.ratings[0].elo() == pytest.approx(1000 + 0.8 * ELO, abs=5)
    assert float(np.sum([r.theta for r in fit.ratings])) == pytest.approx(0, abs=1e-9)


def test_a_clean_sweep_stays_finite_and_undecided_when_small() -> None:
    fit = bradley_terry([Tally("a", "b", 3, 0, 0)])
    top, _ = fit.ratings
    assert top.model == "a" and math.isfinite(top.theta) and top.theta > 0
    assert not fit.separated()  # three judgements decide nothing at 95 %


def test_ties_pull_strengths_together() -> None:
    apart = bradley_terry([Tally("a", "b", 30, 10, 0)])
    tied = bradley_terry([Tally("a", "b", 30, 10, 40)])
    assert 0 < tied.difference("a", "b")[0] < apart.difference("a", "b")[0]


def test_the_gateway_starts_without_importing_scipy() -> None:
    """scipy.stats alone takes about a second to import: only the results need it."""
    import subprocess
    import sys

    code = "import sys, gateway.server.app; print(sorted({'scipy', 'numpy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
