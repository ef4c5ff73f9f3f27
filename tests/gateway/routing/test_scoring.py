"""The score formula: a model's own parts, and how they combine with its peers'."""

from __future__ import annotations

import math

import pytest

from gateway.core.config import ModelConfig
from gateway.routing.scoring import (
    AGING,
    EVIDENCE_CAP,
    PRIOR_SUCCESS,
    Own,
    aged,
    evidence,
    own,
    total,
)
from gateway.routing.tracker import Stats, Tracker

MODEL = ModelConfig.model_validate(
    {
        "name": "alpha",
        "provider": "up",
        "pricing": {"input_per_million": 2, "output_per_million": 4},
        "priors": {"accuracy": 8, "creativity": 4, "speed": 6},
    }
)


@pytest.mark.parametrize(
    ("optimization", "base"),
    [
        ("accuracy", 0.8),
        ("continuity", 0.8),
        ("creativity", 0.4),
        ("speed", 0.6),
        ("cost", (500 * 2 + 200 * 4) / 1e6),  # the assumed tokens at the listed prices
    ],
)
def test_without_stats_a_model_is_its_priors(optimization: str, base: float) -> None:
    parts = own(MODEL, None, optimization, False, 20.0)
    assert parts.base == pytest.approx(base)
    assert parts.weight == 0.0
    assert (parts.evidence, parts.last_seq, parts.requests) == (0.0, 0, 0)
    assert parts.success == PRIOR_SUCCESS


def test_speed_keeps_the_prior_share_apart_from_the_live_latency() -> None:
    stats = Stats(successes=20, requests=20, latency_ewma=300.0, ttft_ewma=30.0)
    parts = own(MODEL, stats, "speed", False, 20.0)
    assert parts.weight == pytest.approx(0.5)  # n / (n + prior_weight)
    assert parts.base == pytest.approx(0.5 * 0.6)
    assert parts.latency == 300.0
    assert own(MODEL, stats, "speed", True, 20.0).latency == 30.0  # streams: first token


def test_ratings_outweigh_the_prior_sooner_than_other_observations() -> None:
    """Ratings are sparse: five of them weigh as much as a prior of weight 20, where
    twenty latency samples would be needed (as above)."""
    tracker = Tracker()
    for _ in range(5):
        tracker.add_feedback("alpha", "text-to-text", {"accuracy": 5})
    parts = own(MODEL, tracker.stats("alpha", "text-to-text"), "accuracy", False, 20.0)
    assert parts.weight == pytest.approx(0.5)  # n / (n + prior_weight / 4)
    assert 0.8 < parts.base < 1.0  # between the prior and the ratings


@pytest.mark.parametrize("optimization", ["accuracy", "speed", "cost"])
def test_evidence_is_capped_so_a_busy_model_is_tried_again_in_bounded_time(
    optimization: str,
) -> None:
    """Aged from an all-time count, a model that had served 10,000 requests would wait
    ~1,300 attempts before the bonus tried it again; capped, it waits as long as one
    that served EVIDENCE_CAP."""
    busy = Stats(requests=10_000, successes=10_000, usage_count=10_000, served_recent=150.0)
    assert evidence(busy, optimization) == EVIDENCE_CAP
    few = Stats(requests=7, successes=7, usage_count=7, served_recent=7.0)
    assert evidence(few, optimization) == 7
    # aged evidence of the busy model drops below 10 within ~460 attempts
    assert aged(evidence(busy, optimization), last_seq=0, seq=460) < 10


def test_quality_evidence_is_what_the_model_served_lately() -> None:
    """Ratings are sparse, so quality's bonus looks at recent requests: a model that
    served 10,000 requests long ago and 3 lately is tried like one that served 3."""
    stats = Stats(requests=10_000, successes=10_000, usage_count=10_000, served_recent=3.0)
    assert evidence(stats, "accuracy") == 3.0
    assert evidence(stats, "creativity") == 3.0
    assert evidence(stats, "speed") == EVIDENCE_CAP  # every answer is a latency sample


def test_evidence_fades_while_others_serve() -> None:
    assert aged(100, last_seq=10, seq=10) == 100
    assert aged(100, last_seq=10, seq=150) == pytest.approx(100 * AGING**140)
    assert aged(100, last_seq=10, seq=150) == pytest.approx(50, rel=0.01)  # ~halved
    assert aged(0, last_seq=0, seq=10**9) == 0


def test_total_is_value_plus_bonus_times_success() -> None:
    parts = Own(0.7, 0.0, None, 4.0, 90, 0.9, 5)
    score, value, bonus = total(parts, "accuracy", None, 30.0, 100, 0.35)
    assert value == 0.7
    assert bonus == pytest.approx(0.35 * math.sqrt(math.log1p(30.0) / (1 + 4 * AGING**10)))
    assert score == pytest.approx((0.7 + bonus) * 0.9)


def test_cost_is_relative_to_the_reference_and_free_is_best() -> None:
    paid = Own(0.002, 0.0, None, 0.0, 0, 1.0, 0)
    free = Own(0.0, 0.0, None, 0.0, 0, 1.0, 0)
    assert total(paid, "cost", 0.002, 0.0, 0, 0.1)[1] == pytest.approx(0.5)
    assert total(free, "cost", 0.002, 0.0, 0, 0.1)[1] == 1.0


def _rated(ratings: dict[str, list[int]]) -> Stats:
    """A model's stats with `ratings` (accuracy, 1-5) given by each named key."""
    tracker = Tracker()
    for key, values in ratings.items():
        for value in values:
            tracker.add_feedback("alpha", "text-to-text", {"accuracy": value}, key=key)
    return tracker.stats("alpha", "text-to-text")


def test_one_key_rating_often_weighs_as_much_as_a_typical_key_not_more() -> None:
    """Five keys prefer A to B; one key posts 30 opposite ratings of each."""
    a = {f"team-{i}": [5, 5, 4] for i in range(5)} | {"spammer": [1] * 30}
    b = {f"team-{i}": [2, 2, 3] for i in range(5)} | {"spammer": [5] * 30}
    score = {name: own(MODEL, _rated(r), "accuracy", False, 20.0).base for name, r in
             (("a", a), ("b", b))}  # fmt: skip
    assert score["a"] > score["b"]
    # The spammer's 30 ratings count as much as the typical key's three.
    typical = {**a, "spammer": [1] * 3}
    assert score["a"] == pytest.approx(own(MODEL, _rated(typical), "accuracy", False, 20.0).base)
    # Pooled as one key (no balance), the same ratings would have flipped the choice.
    pooled = {
        name: own(MODEL, _rated({"": [v for vs in r.values() for v in vs]}), "accuracy",
                  False, 20.0).base
        for name, r in (("a", a), ("b", b))
    }  # fmt: skip
    assert pooled["b"] > pooled["a"]


def test_a_single_key_is_scored_as_before_keys_existed() -> None:
    one_key = own(MODEL, _rated({"team": [5, 4, 5, 3]}), "accuracy", False, 20.0)
    anonymous = own(MODEL, _rated({"": [5, 4, 5, 3]}), "accuracy", False, 20.0)
    assert one_key == anonymous
