"""The tracker: per (model, conversation type) aggregates, blame, feedback and persistence."""

from __future__ import annotations

import orjson
import pytest

from gateway.core.types import Attempt
from gateway.routing.histogram import Histogram
from gateway.routing.tracker import RATING_AGING, Stats, Tracker

T0 = 1_700_000_000.0
TT = "text-to-text"


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def attempt(model: str = "alpha", **fields) -> Attempt:
    values = {
        "request_id": "req",
        "response_id": "resp",
        "attempt": 1,
        "model": model,
        "provider": "up",
        "conversation_type": TT,
        "route": None,
        "optimization": None,
        "ok": True,
        "timestamp": T0,
    }
    values.update(fields)
    return Attempt(**values)


def failure(model: str = "alpha", kind: str = "server_error", **fields) -> Attempt:
    return attempt(
        model,
        ok=False,
        counts_as_failure=True,
        error_class=kind,
        http_status=502,
        error_message=f"{kind} happened",
        **fields,
    )


def client_error(model: str = "alpha") -> Attempt:
    return attempt(
        model,
        ok=False,
        counts_as_failure=False,
        error_class="bad_request",
        http_status=400,
        error_message="bad input",
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tracker(clock: Clock) -> Tracker:
    return Tracker(clock=clock)


def fill(tracker: Tracker) -> None:
    """100 successes (latency 1..100 ms, TTFT a tenth of it) and 2 failures of alpha."""
    for i in range(1, 101):
        tracker.record(
            attempt(
                latency_ms=float(i),
                ttft_ms=i / 10,
                prompt_tokens=10,
                completion_tokens=i,
                cost=0.01,
            )
        )
        if i in (30, 60):
            tracker.record(failure())


def test_counts_rates_latency_tokens_and_cost(tracker: Tracker) -> None:
    fill(tracker)
    stats = tracker.stats("alpha", TT)
    assert stats is not None
    assert (stats.requests, stats.successes, stats.failures, stats.client_errors) == (
        102,
        100,
        2,
        0,
    )
    assert stats.success_rate == pytest.approx(100 / 102)
    assert 0.9 < stats.recent_success_rate < 1.0
    assert stats.latency.count == 100  # failures have no latency sample
    assert stats.latency.mean == pytest.approx(50.5)
    assert stats.latency.quantile(0.5) == pytest.approx(50, rel=0.06)
    assert stats.latency.quantile(0.99) == pytest.approx(99, rel=0.06)
    assert stats.ttft.quantile(0.5) == pytest.approx(5.0, rel=0.06)
    assert stats.latency_ewma is not None and 50 < stats.latency_ewma < 100  # leans recent
    assert stats.ttft_ewma == pytest.approx(stats.latency_ewma / 10)
    assert stats.mean_prompt_tokens == 10
    assert stats.mean_completion_tokens == pytest.approx(50.5)
    assert stats.prompt_ewma == pytest.approx(10)
    assert stats.completion_ewma is not None and 70 < stats.completion_ewma < 100  # recent
    assert stats.cost == pytest.approx(1.0)
    assert stats.last_error_class == "server_error"
    assert tracker.stats("alpha", "embedding") is None
    assert tracker.stats("beta", TT) is None


def test_stats_are_kept_per_conversation_type(tracker: Tracker) -> None:
    tracker.record(attempt(latency_ms=10))
    tracker.record(attempt(conversation_type="embedding", latency_ms=20))
    assert tracker.stats("alpha", TT).requests == 1
    assert tracker.stats("alpha", "embedding").latency.mean == 20


def test_client_errors_are_not_failures(tracker: Tracker) -> None:
    for _ in range(5):
        tracker.record(client_error())
    stats = tracker.stats("alpha", TT)
    assert (stats.requests, stats.failures, stats.client_errors) == (5, 0, 5)
    assert stats.success_rate is None
    assert stats.recent_success_rate is None


def test_every_change_bumps_the_version(tracker: Tracker) -> None:
    version = tracker.version
    for a in (failure(kind="timeout"), client_error(), attempt()):
        tracker.record(a)
    tracker.add_feedback("alpha", TT, {"accuracy": 4})
    tracker.add_auto_score("alpha", TT, 1.0)
    tracker.reset_recent("alpha")
    assert tracker.version == version + 6


def test_reset_recent_forgets_recent_failures_not_the_totals(tracker: Tracker) -> None:
    for _ in range(3):
        tracker.record(failure())
    tracker.record(attempt(conversation_type="embedding"))
    tracker.reset_recent("alpha")
    for ctype in (TT, "embedding"):
        stats = tracker.stats("alpha", ctype)
        assert stats.recent_success_rate is None  # no recent record: the prior applies
    assert tracker.stats("alpha", TT).failures == 3


def test_successful_attempts_remember_the_conversation(tracker: Tracker) -> None:
    tracker.record(attempt("alpha", conversation_id="c1"))
    tracker.record(failure("beta", conversation_id="c1"))
    assert tracker.last_model("c1") == "alpha"
    tracker.record(attempt("beta", conversation_id="c1"))
    assert tracker.last_model("c1") == "beta"
    assert tracker.last_model("other") is None


def test_remembered_conversations_are_bounded(clock: Clock) -> None:
    tracker = Tracker(clock=clock, conversations=10)
    for i in range(25):
        tracker.remember(f"c{i}", "alpha")
    assert tracker.last_model("c0") is None
    assert tracker.last_model("c14") is None
    assert tracker.last_model("c15") == "alpha"
    assert tracker.last_model("c24") == "alpha"


def test_feedback_accumulates_and_replacement_replaces(tracker: Tracker) -> None:
    tracker.add_feedback("alpha", TT, {"accuracy": 5, "overall": 4})
    tracker.add_feedback("alpha", TT, {"accuracy": 3})
    stats = tracker.stats("alpha", TT)
    assert stats.feedback_mean("accuracy") == 4
    assert stats.feedback["accuracy"][1] == 2
    # The first rater changes their mind: 5/4 becomes 1/2.
    tracker.add_feedback(
        "alpha", TT, {"accuracy": 1, "overall": 2}, previous={"accuracy": 5, "overall": 4}
    )
    assert stats.feedback["accuracy"] == [4.0, 2]
    assert stats.feedback_mean("accuracy") == 2
    assert stats.feedback["overall"] == [2.0, 1]
    assert stats.feedback_mean("creativity") is None


def tally(tracker: Tracker, model: str, key: str = "") -> list[float]:
    """The model's accuracy tally: [weight, sum, sum of squares, seq, prior left]."""
    return tracker.stats(model, TT).feedback_keys[key]["accuracy"]


def test_a_rating_that_fills_two_fields_is_one_observation(tracker: Tracker) -> None:
    """Issue 22: accuracy = overall = 5 counted as two ratings of 5."""
    tracker.add_feedback("alpha", TT, {"accuracy": 5, "overall": 3})
    tracker.add_feedback("alpha", TT, {"relevance": 1})
    weight, total, squares, _, _ = tally(tracker, "alpha")
    assert weight == 2  # two ratings, however many fields they fill
    assert total == pytest.approx(0.75 + 0.0)  # (5 + 3) / 2 on 0-1, and 1
    assert squares == pytest.approx(0.75**2)
    assert "creativity" not in tracker.stats("alpha", TT).feedback_keys[""]


def test_every_rating_counts_not_the_last_ten(tracker: Tracker) -> None:
    """_FEEDBACK_DECAY = 0.9 kept about the last ten ratings; ratings given in a row
    now all count, and only fade with attempts (RATING_AGING)."""
    for _ in range(20):
        tracker.add_feedback("alpha", TT, {"overall": 1})
    for _ in range(3):
        tracker.add_feedback("alpha", TT, {"overall": 5})
    weight, total, _, _, _ = tally(tracker, "alpha")
    assert weight == 23
    assert total / weight == pytest.approx(3 / 23)


def test_ratings_and_prior_fade_with_the_attempts_since(tracker: Tracker) -> None:
    for _ in range(20):
        tracker.add_feedback("alpha", TT, {"overall": 1})
    for _ in range(600):  # others serve
        tracker.record(attempt("beta"))
    tracker.add_feedback("alpha", TT, {"overall": 5})
    weight, total, _, seq, left = tally(tracker, "alpha")
    assert seq == 600
    assert weight == pytest.approx(20 * RATING_AGING**600 + 1)
    assert total == pytest.approx(1.0)  # the twenty ones are 0 on the 0-1 scale
    assert left == pytest.approx(RATING_AGING**600)
    assert tracker.stats("alpha", TT).feedback_mean("overall") == pytest.approx(25 / 21)


def test_served_recent_counts_requests_fading_with_the_attempts_since(
    tracker: Tracker,
) -> None:
    for _ in range(3):
        tracker.record(attempt("alpha"))
    assert tracker.stats("alpha", TT).served_recent == pytest.approx(1 + 0.995 + 0.995**2)
    for _ in range(140):
        tracker.record(attempt("beta"))
    tracker.record(attempt("alpha"))
    before = 1 + 0.995 + 0.995**2
    assert tracker.stats("alpha", TT).served_recent == pytest.approx(before * 0.995**141 + 1)
    assert tracker.stats("alpha", TT).requests == 4


def test_a_state_saved_before_served_recent_existed_counts_every_request(
    clock: Clock,
) -> None:
    old = Stats(requests=70, last_seq=90).to_dict()
    del old["served_recent"]
    assert Stats.from_dict(old, clock).served_recent == 70.0  # aged from last_seq on


def test_re_rating_a_faded_answer_keeps_the_tally_one_of_ratings(tracker: Tracker) -> None:
    """Taking a re-rated answer's earlier score out at full weight, after it had faded,
    left means outside the scale."""
    tracker.add_feedback("alpha", TT, {"overall": 1})
    for _ in range(600):
        tracker.record(attempt("beta"))
    tracker.add_feedback("alpha", TT, {"overall": 5})
    tracker.add_feedback("alpha", TT, {"overall": 5}, previous={"overall": 1})
    weight, total, squares, _, _ = tally(tracker, "alpha")
    assert 0 <= total <= weight
    assert 0 <= squares <= total
    assert tracker.stats("alpha", TT).feedback_mean("overall") == 5


def test_a_state_saved_before_the_quality_tallies_reads_its_means(clock: Clock) -> None:
    old = Stats(last_seq=40).to_dict()
    old["feedback"] = {"overall": [8.0, 2], "accuracy": [10.0, 2]}
    old["feedback_recent"] = {"overall": [8.0, 2.0, 40]}
    old["feedback_keys"] = {"": [{"overall": [8.0, 2]}, {"overall": [8.0, 2.0, 40]}]}
    restored = Stats.from_dict(old, clock)
    # two ratings, at the mean of the dimensions' means: (4 + 5) / 2 on 0-1
    mean = ((4 - 1) / 4 + (5 - 1) / 4) / 2
    assert restored.feedback_keys == {"": {"accuracy": [2.0, 2 * mean, 2 * mean**2, 40, 1.0]}}


def test_auto_scores_average(tracker: Tracker) -> None:
    tracker.add_auto_score("alpha", TT, 0.5)
    tracker.add_auto_score("alpha", TT, 1.0)
    assert tracker.stats("alpha", TT).auto_score == pytest.approx(0.75)


def published(tracker: Tracker, clock: Clock) -> dict[tuple[str, str], Stats]:
    """The tracker's own stats as a peer receives them: through JSON."""
    return {
        key: Stats.from_dict(orjson.loads(orjson.dumps(stats.to_dict())), clock)
        for key, stats in tracker.own().items()
    }


def test_a_peers_stats_count_in_the_view_as_they_were(clock: Clock, tracker: Tracker) -> None:
    fill(tracker)
    tracker.record(attempt("beta", conversation_type="embedding", latency_ms=7.0))
    for _ in range(3):
        tracker.record(failure("gamma"))
    tracker.add_feedback("alpha", TT, {"accuracy": 5})

    other = Tracker(clock=clock)
    version = other.version
    other.set_peers({key: [(stats, 1.0)] for key, stats in published(tracker, clock).items()})
    assert other.version > version
    before, after = tracker.stats("alpha", TT), other.stats("alpha", TT)
    assert after is not None
    for name in ("requests", "successes", "failures", "usage_count", "completion_tokens"):
        assert getattr(after, name) == getattr(before, name), name
    assert after.cost == pytest.approx(before.cost)
    assert after.latency_ewma == pytest.approx(before.latency_ewma)
    assert after.completion_ewma == pytest.approx(before.completion_ewma)
    assert after.recent_success_rate == pytest.approx(before.recent_success_rate)
    assert after.latency.count == 100
    for q in (0.5, 0.9, 0.99):
        assert after.latency.quantile(q) == pytest.approx(before.latency.quantile(q))
        assert after.ttft.quantile(q) == pytest.approx(before.ttft.quantile(q))
    assert after.feedback_mean("accuracy") == 5
    assert other.stats("beta", "embedding").latency.mean == 7.0
    assert other.stats("gamma", TT).failures == 3
    # The view keeps recording; what is published is only what this process saw.
    other.record(attempt(latency_ms=1000.0))
    assert other.stats("alpha", TT).latency.count == 101
    assert other.stats("alpha", TT).requests == before.requests + 1
    assert other.own()[("alpha", TT)].requests == 1
    assert set(other.own()) == {("alpha", TT)}


def test_counts_add_up_and_recent_figures_weigh_by_freshness(clock: Clock) -> None:
    mine, theirs = Tracker(clock=clock), Tracker(clock=clock)
    for _ in range(10):
        mine.record(attempt(latency_ms=100.0))
    for _ in range(30):
        theirs.record(failure())
    [(key, peer)] = published(theirs, clock).items()
    mine.set_peers({key: [(peer, 1.0)]})
    both = mine.stats("alpha", TT)
    assert (both.requests, both.successes, both.failures) == (40, 10, 30)
    fresh_rate = both.recent_success_rate
    mine.set_peers({key: [(peer, 0.01)]})  # a peer silent for long: its recent record fades
    faded = mine.stats("alpha", TT)
    assert (faded.requests, faded.failures) == (40, 30)  # its totals still count
    assert faded.recent_success_rate > 0.9 > fresh_rate
    mine.set_peers({})
    assert mine.stats("alpha", TT) is mine.own()[("alpha", TT)]  # no peers: the own object


def test_moving_averages_weigh_each_part_by_its_recent_activity(clock: Clock) -> None:
    mine, theirs = Tracker(clock=clock), Tracker(clock=clock)
    for _ in range(40):
        mine.record(attempt(latency_ms=100.0))
        theirs.record(attempt(latency_ms=300.0))
    [(key, peer)] = published(theirs, clock).items()
    mine.set_peers({key: [(peer, 1.0)]})
    assert mine.stats("alpha", TT).latency_ewma == pytest.approx(200.0, rel=0.01)
    mine.set_peers({key: [(peer, 1 / 3)]})
    assert mine.stats("alpha", TT).latency_ewma == pytest.approx(150.0, rel=0.01)


def test_a_state_saved_before_token_averages_existed_seeds_them_from_its_means(
    clock: Clock, tracker: Tracker
) -> None:
    for _ in range(10):
        tracker.record(attempt(prompt_tokens=100, completion_tokens=200))
    data = tracker.own()[("alpha", TT)].to_dict()
    del data["prompt_ewma"], data["completion_ewma"]
    stats = Stats.from_dict(orjson.loads(orjson.dumps(data)), clock)
    assert (stats.prompt_ewma, stats.completion_ewma) == (100, 200)


def test_memory_stays_bounded_over_100k_attempts(clock: Clock, tracker: Tracker) -> None:
    buckets = Histogram().buckets
    for i in range(100_000):
        clock.now = T0 + i * 0.5  # 50 000 s: the one-hour window rotates many times
        tracker.record(
            attempt(latency_ms=1.0 + (i * 7919) % 60_000, ttft_ms=0.5 + i % 977, cost=1e-6)
        )
    assert len(list(tracker.items())) == 1
    stats = tracker.stats("alpha", TT)
    assert stats.requests == 100_000
    for hist in (stats.latency, stats.ttft):
        data = hist.to_dict()
        assert len(data["windows"]) <= hist.slots
        for _, window in data["windows"]:
            assert len(window["buckets"]) <= buckets
        assert hist.count <= 100_000
        assert hist.snapshot().buckets == buckets
    # Only the last hour (7200 attempts at two a second, give or take a slot) is kept.
    assert stats.latency.count <= 7200 + 1200
    assert len(orjson.dumps(stats.to_dict())) < 2 * 6 * buckets * 20


def test_ratings_are_also_tallied_per_key_and_survive_a_save(
    tracker: Tracker, clock: Clock
) -> None:
    tracker.add_feedback("alpha", TT, {"overall": 5}, key="alice")
    tracker.add_feedback("alpha", TT, {"overall": 1}, key="bob")
    tracker.add_feedback("alpha", TT, {"overall": 3}, previous={"overall": 1}, key="bob")
    stats = tracker.stats("alpha", TT)
    assert stats.feedback["overall"] == [8.0, 2]  # all keys together, as before
    assert tally(tracker, "alpha", "alice")[:3] == [1.0, 1.0, 1.0]
    assert tally(tracker, "alpha", "bob")[:3] == pytest.approx([1.0, 0.5, 0.25])  # replaced
    restored = Stats.from_dict(orjson.loads(orjson.dumps(stats.to_dict())), clock)
    assert restored.feedback_keys == stats.feedback_keys


def test_a_state_saved_before_keys_holds_its_ratings_as_one_anonymous_key(clock: Clock) -> None:
    data = Stats(feedback={"overall": [12.0, 3]}).to_dict()
    del data["feedback_keys"]
    restored = Stats.from_dict(data, clock)
    assert restored.feedback_keys == {"": {"accuracy": [3.0, 2.25, 2.25 * 0.75, 0, 1.0]}}
