"""The sequential statistics experiments decide by: intervals that cover the truth at
every look, narrow as data comes, and guards that trip on harm but not on noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gateway.routing.sequential import (
    Moments,
    difference_interval,
    log_rate_evidence,
    mean_interval,
    mixture_radius,
    rate_exceeds,
    rho_for,
)


def moments(values: list[float] | np.ndarray) -> Moments:
    m = Moments()
    for v in values:
        m.add(float(v))
    return m


def test_moments_add_merge_and_remove_a_replaced_value() -> None:
    m = moments([1, 2, 3, 4])
    assert m.mean == 2.5 and m.variance() == pytest.approx(np.var([1, 2, 3, 4], ddof=1))
    m.add(4, -1.0)  # a re-rating takes its earlier score out
    m.add(5)
    assert m.n == 4 and m.mean == pytest.approx(np.mean([1, 2, 3, 5]))
    other = moments([10])
    other.merge(m)
    assert other.n == 5 and other.total == 21
    assert Moments.from_list(other.to_list()) == other
    assert moments([3, 3, 3]).variance(floor=0.25) == 0.25  # identical ratings: not zero wide


def test_the_boundary_is_wider_than_a_fixed_sample_one_and_grows_slowly() -> None:
    rho = rho_for(75, 0.05)
    at = mixture_radius(np.array([10, 75, 1_000, 100_000]), 0.05, rho)
    assert all(r > 1.96 for r in at)  # peeking costs width
    assert at[1] == pytest.approx(min(mixture_radius(np.arange(5, 5000), 0.05, rho)), rel=0.02)
    assert at[3] < 6  # grows like sqrt(log t), not without bound quickly


def test_rho_for_makes_the_sequence_narrowest_where_asked() -> None:
    for t in (20.0, 75.0, 500.0):
        rho = rho_for(t, 0.05)
        here = float(mixture_radius(t, 0.05, rho))
        assert here <= float(mixture_radius(t, 0.05, rho * 2))
        assert here <= float(mixture_radius(t, 0.05, rho / 2))


def test_a_difference_interval_finds_a_real_lift_and_covers_the_truth() -> None:
    rng = np.random.default_rng(7)
    a = moments(rng.normal(3.5, 0.6, 400))
    b = moments(rng.normal(3.8, 0.6, 400))
    rho = rho_for(75, 0.05)
    diff = difference_interval(a, b, 0.05, rho)
    assert diff is not None
    assert diff.low < 0.3 < diff.high  # covers the true lift
    assert diff.low > 0 and diff.excludes_zero()  # and says B is better
    mean = mean_interval(a, 0.05, rho_for(150, 0.05))
    assert mean is not None and mean.low < 3.5 < mean.high
    assert difference_interval(moments([1.0]), b, 0.05, rho) is None  # too little data


def test_monitored_after_every_observation_identical_arms_rarely_differ() -> None:
    """Continuous monitoring of 200 A/A runs: the interval excludes zero at some look in
    at most a few of them (the bench measures the rate over many more)."""
    rng = np.random.default_rng(11)
    rho = rho_for(75, 0.05)
    false = 0
    for _ in range(200):
        a = rng.normal(3.5, 0.6, 300)
        b = rng.normal(3.5, 0.6, 300)
        n = np.arange(1, 301, dtype=float)
        ma, mb = np.cumsum(a) / n, np.cumsum(b) / n
        va = (np.cumsum(a * a) - n * ma * ma) / np.maximum(n - 1, 1)
        vb = (np.cumsum(b * b) - n * mb * mb) / np.maximum(n - 1, 1)
        se = np.sqrt((np.maximum(va, 0.25) + np.maximum(vb, 0.25)) / n)
        half = se * mixture_radius(n / 2, 0.05, rho)
        looks = slice(29, None)  # min_samples
        false += bool(np.any(np.abs(mb - ma)[looks] > half[looks]))
    assert false <= 10  # 5 % of 200


def test_the_rate_guard_trips_on_harm_not_on_noise() -> None:
    assert rate_exceeds(20, 20, 0.05, 0.01)  # every attempt failed
    assert rate_exceeds(8, 40, 0.05, 0.01)  # 20 % against a 5 % limit
    assert not rate_exceeds(2, 20, 0.05, 0.01)  # 10 %, but only 20 tries
    assert not rate_exceeds(0, 1000, 0.05, 0.01)
    # The evidence is a likelihood ratio: more failures, more evidence.
    assert log_rate_evidence(6, 40, 0.05) < log_rate_evidence(8, 40, 0.05)


def test_the_rate_guard_is_valid_at_the_limit_under_continuous_monitoring() -> None:
    rng = np.random.default_rng(3)
    tripped = 0
    for _ in range(300):
        failures = np.cumsum(rng.random(400) < 0.05)
        tripped += any(
            rate_exceeds(float(failures[n - 1]), n, 0.05, 0.01) for n in range(20, 401, 5)
        )
    assert tripped <= 3 * 3  # alpha 1 % of 300, with room for chance
    assert math.isfinite(log_rate_evidence(0, 10, 0.05))
