"""The quality posterior (scoring.belief, scoring.level): estimates whose confidence
matches the evidence they rest on (issue 22)."""

from __future__ import annotations

import math
import random

import pytest

from gateway.routing.scoring import NORMALS, VARIANCE_PRIOR, Posterior, belief, level
from gateway.routing.tracker import RATING_AGING


def rated(
    values: list[float], prior: float = 0.5, strength: float = 5.0, seq: int = 0
) -> Posterior:
    """A posterior resting on `values` (0-1 ratings), all given at attempt `seq`."""
    return Posterior(prior, strength, float(len(values)), sum(values),
                     sum(v * v for v in values), seq)  # fmt: skip


def test_without_ratings_it_is_the_prior_give_or_take_a_rating_anywhere_on_the_scale() -> None:
    mean, spread = belief(rated([], prior=0.7), 0)
    assert mean == pytest.approx(0.7)
    assert spread == pytest.approx(math.sqrt(VARIANCE_PRIOR / 5))  # as if 5 such ratings


@pytest.mark.parametrize("n", [25, 100, 400])
def test_the_standard_error_is_what_the_ratings_support(n: int) -> None:
    """0/1 ratings right 80 % of the time: the standard error of their mean, not that of
    the last ten (issue 22) nor of the count of fields they filled."""
    luck = random.Random(n)
    values = [1.0 if luck.random() < 0.8 else 0.0 for _ in range(n)]
    mean, spread = belief(rated(values), 0)
    p = sum(values) / n
    assert mean == pytest.approx(p, abs=0.1 * 25 / n + 0.01)
    assert spread == pytest.approx(math.sqrt(p * (1 - p) / n), rel=0.2)


def test_a_few_ratings_that_agree_do_not_pass_for_certainty() -> None:
    """Two wrong answers of a model that is right most of the time: no spread among the
    ratings, but two ratings cannot rule out much."""
    mean, spread = belief(rated([0.0, 0.0]), 0)
    assert mean < 0.5
    assert spread > 0.09
    assert belief(rated([0.0] * 40), 0)[1] < spread / 2  # forty of them can


def test_judge_scores_that_agree_are_narrower_than_right_or_wrong() -> None:
    mostly_fours = [0.75] * 18 + [0.5, 1.0]
    coin = [1.0, 0.0] * 10
    assert belief(rated(mostly_fours), 0)[1] < belief(rated(coin), 0)[1] / 2


def test_a_model_not_rated_for_a_while_keeps_its_mean_and_grows_uncertain() -> None:
    post = rated([1.0] * 8 + [0.0] * 2, seq=100)
    mean, spread = belief(post, 100)
    later_mean, later_spread = belief(post, 100 + 1000)  # a thousand attempts elsewhere
    assert later_mean == pytest.approx(mean, abs=0.02)  # not back to the prior (0.5)
    assert later_spread > 1.5 * spread
    assert belief(post, 10**6)[1] == pytest.approx(math.sqrt(VARIANCE_PRIOR))  # at most
    assert pytest.approx(math.exp(-1), rel=0.01) == RATING_AGING**1000  # a 1,000-attempt memory


def test_an_unrated_model_is_judged_against_where_the_rated_ones_stand() -> None:
    """Priors of 5/10 say nothing of whether answers get 2s or 5s: a model without
    ratings next to one rated 0.9 is centred near 0.9, not at 0.5."""
    best = rated([1.0] * 90 + [0.0] * 10)
    new = rated([])
    shift = level([best, new], 0)
    assert shift == pytest.approx((5 * 0.5 + 5 * 0.5 + 90) / 110 - 0.5)
    assert belief(new, 0, shift)[0] == pytest.approx(0.5 + shift)
    # Priors keep their differences: a model configured 0.2 better sits 0.2 higher.
    assert level([rated([], prior=0.7), rated([], prior=0.5)], 0) == pytest.approx(0.0)


def test_the_normal_draws_are_scipys_standard_normal() -> None:
    """Selection draws from a table of quantiles instead of random.gauss (for speed):
    its draws must pass for the standard normal, and each model must win a Thompson
    draw as often as the normal distribution says it may be the best."""
    from scipy import stats

    rng = random.Random(7)
    draws = [NORMALS[int(rng.random() * len(NORMALS))] for _ in range(50_000)]
    assert stats.kstest(draws, "norm").pvalue > 0.01
    assert stats.kstest([rng.gauss(0.0, 2.0) for _ in range(50_000)], "norm").pvalue < 1e-6
    # Two models, 0.80 +- 0.05 and 0.75 +- 0.05: P(first is better) = Phi(0.05 / 0.0707).
    wins = sum(
        0.80 + 0.05 * NORMALS[int(rng.random() * len(NORMALS))]
        > 0.75 + 0.05 * NORMALS[int(rng.random() * len(NORMALS))]
        for _ in range(40_000)
    )
    assert wins / 40_000 == pytest.approx(stats.norm.cdf(0.05 / math.sqrt(0.005)), abs=0.01)
