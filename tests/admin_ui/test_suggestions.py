"""Improvement suggestions from crafted metric rows (the shape admin_ui.metrics produces):
each cites the model and its numbers and proposes a change; thin evidence suggests nothing."""

from __future__ import annotations

from typing import Any

import pytest

from admin_ui.suggestions import suggestions


def row(model: str, ctype: str = "text-to-text", **overrides: Any) -> dict[str, Any]:
    """A healthy, well-sampled model_metrics() row; overrides replace whole keys."""
    base: dict[str, Any] = {
        "model": model,
        "provider": "up",
        "conversation_type": ctype,
        "requests": 100,
        "successes": 100,
        "failures": 0,
        "client_errors": 0,
        "fallbacks": 0,
        "success_rate": 1.0,
        "recent_success_rate": 1.0,
        "latency_ms": {"mean": 90.0, "p50": 80.0, "p95": 100.0, "p99": 120.0, "count": 100},
        "ttft_ms": {"mean": None, "p50": None, "p95": None, "p99": None, "count": 0},
        "mean_prompt_tokens": 11.0,
        "mean_completion_tokens": 7.0,
        "cost": {"total": 0.1, "per_request": 0.001},
        "feedback": {},
        "auto_score": 1.0,
        "evaluated": 100,
        "flag_rates": {},
        "consecutive_failures": 0,
        "blacklisted": False,
        "blacklisted_until": None,
        "last_error": None,
        "last_error_class": None,
        "last_error_at": None,
        "last_success_at": 1.0,
        "priors": {"accuracy": 5.0, "creativity": 5.0, "speed": 5.0},
        "pricing": {"input_per_million": 1.0, "output_per_million": 2.0},
    }
    base.update(overrides)
    return base


def only(found: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matching = [s for s in found if s["kind"] == kind]
    assert len(matching) == 1, found
    return matching[0]


def test_healthy_models_get_no_suggestion() -> None:
    assert suggestions([row("a"), row("b"), row("c")], {}) == []
    assert suggestions([], {}) == []


def test_every_suggestion_has_the_same_shape() -> None:
    rows = [row("a", flag_rates={"truncated": 0.5}), row("b")]
    [suggestion] = suggestions(rows, {})
    assert set(suggestion) == {
        "model",
        "conversation_type",
        "kind",
        "message",
        "evidence",
        "proposed_change",
    }
    assert suggestion["conversation_type"] == "text-to-text"
    assert "window" in suggestion["evidence"]


# ---- truncation -----------------------------------------------------------------------------


def test_truncation_cites_model_rate_and_counts_and_proposes_max_tokens() -> None:
    s = only(suggestions([row("gpt-x", evaluated=40, flag_rates={"truncated": 0.25})], {}),
             "truncation")  # fmt: skip
    assert s["model"] == "gpt-x"
    assert "gpt-x" in s["message"] and "25%" in s["message"] and "10 of 40" in s["message"]
    assert s["evidence"]["truncated"] == 10
    assert s["evidence"]["evaluated"] == 40
    assert s["evidence"]["rate"] == 0.25
    assert "max_tokens" in s["proposed_change"]


@pytest.mark.parametrize(
    ("evaluated", "rate"),
    [(19, 0.9), (100, 0.09), (20, 0.0)],
)
def test_no_truncation_suggestion_below_the_thresholds(evaluated: int, rate: float) -> None:
    rows = [row("a", evaluated=evaluated, flag_rates={"truncated": rate})]
    assert suggestions(rows, {}) == []


def test_truncation_at_the_thresholds_is_suggested() -> None:
    rows = [row("a", evaluated=20, flag_rates={"truncated": 0.10})]
    assert only(suggestions(rows, {}), "truncation")["evidence"]["truncated"] == 2


# ---- priors versus feedback ----------------------------------------------------------------


def test_prior_mismatch_cites_prior_and_feedback_and_proposes_a_new_prior() -> None:
    feedback = {"accuracy": {"mean": 2.0, "count": 6}, "overall": {"mean": 2.0, "count": 6}}
    rows = [row("a", priors={"accuracy": 8.0, "creativity": 5.0, "speed": 5.0},
                feedback=feedback)]  # fmt: skip
    s = only(suggestions(rows, {}), "prior_mismatch")
    assert s["model"] == "a"
    assert "8/10" in s["message"] and "2.00/5" in s["message"] and "12 ratings" in s["message"]
    assert s["evidence"]["prior"] == 8.0
    assert s["evidence"]["feedback_mean"] == 2.0
    assert s["evidence"]["ratings"] == 12
    assert "priors.accuracy" in s["proposed_change"] and "2.5" in s["proposed_change"]


def test_prior_mismatch_for_creativity_upwards() -> None:
    rows = [row("poet", priors={"accuracy": 5.0, "creativity": 2.0, "speed": 5.0},
                feedback={"creativity": {"mean": 5.0, "count": 10}})]  # fmt: skip
    s = only(suggestions(rows, {}), "prior_mismatch")
    assert "creativity" in s["message"] and "2/10" in s["message"]
    assert s["evidence"]["feedback_mean"] == 5.0
    assert "priors.creativity" in s["proposed_change"] and "10" in s["proposed_change"]


@pytest.mark.parametrize(
    "feedback",
    [
        {"accuracy": {"mean": 1.0, "count": 9}},  # too few ratings
        {"accuracy": {"mean": 3.0, "count": 50}},  # 0.5 observed vs 0.5 prior: agrees
        {"overall": {"mean": 3.9, "count": 50}},  # 0.725 vs 0.5: gap under 0.25
        {"helpfulness": {"mean": 1.0, "count": 50}},  # not a dimension priors model
    ],
)
def test_no_prior_mismatch_below_the_thresholds(feedback: dict[str, Any]) -> None:
    assert suggestions([row("a", feedback=feedback)], {}) == []


# ---- peers: slow and costly outliers ------------------------------------------------------


def latency(p95: float, count: int = 100) -> dict[str, Any]:
    return {"mean": p95 / 2, "p50": p95 / 2, "p95": p95, "p99": p95, "count": count}


def test_slow_outlier_cites_its_p95_against_the_peer_median() -> None:
    rows = [row("a", latency_ms=latency(100.0)), row("b", latency_ms=latency(120.0)),
            row("c", latency_ms=latency(500.0))]  # fmt: skip
    s = only(suggestions(rows, {}), "slow")
    assert s["model"] == "c"
    assert "500 ms" in s["message"] and "110 ms" in s["message"] and "4.5x" in s["message"]
    assert s["evidence"]["p95_ms"] == 500.0
    assert s["evidence"]["peer_median_p95_ms"] == 110.0
    assert s["evidence"]["samples"] == 100
    assert "priors.speed" in s["proposed_change"]


@pytest.mark.parametrize(
    "rows",
    [
        [row("a", latency_ms=latency(100.0)), row("c", latency_ms=latency(500.0, count=19))],
        [row("a", latency_ms=latency(100.0)), row("c", latency_ms=latency(199.0))],
        [row("c", latency_ms=latency(500.0))],  # no peer
        [row("a", latency_ms=latency(100.0)),  # peers are per conversation type
         row("c", "embedding", latency_ms=latency(500.0))],
    ],
)  # fmt: skip
def test_no_slow_suggestion_without_enough_evidence(rows: list[dict[str, Any]]) -> None:
    assert suggestions(rows, {}) == []


def cost(per_request: float) -> dict[str, float]:
    return {"total": per_request * 100, "per_request": per_request}


def test_costly_outlier_cites_its_cost_per_request() -> None:
    rows = [row("a", cost=cost(0.001)), row("b", cost=cost(0.0012)),
            row("pricey", cost=cost(0.01))]  # fmt: skip
    s = only(suggestions(rows, {}), "costly")
    assert s["model"] == "pricey"
    assert "$0.010000" in s["message"] and "$0.001100" in s["message"]
    assert s["evidence"]["cost_per_request"] == 0.01
    assert s["evidence"]["peer_median_cost_per_request"] == pytest.approx(0.0011)
    assert s["evidence"]["requests"] == 100
    assert "cost" in s["proposed_change"]


def test_no_costly_suggestion_with_few_requests_or_a_small_gap() -> None:
    few = [row("a", cost=cost(0.001)), row("b", successes=19, cost=cost(0.01))]
    close = [row("a", cost=cost(0.001)), row("b", cost=cost(0.0019))]
    assert suggestions(few, {}) == []
    assert suggestions(close, {}) == []


# ---- reliability ------------------------------------------------------------------------------


def test_unreliable_model_cites_failure_rate_and_last_error() -> None:
    flaky = row("flaky", successes=10, failures=15, last_error="up: 503 overloaded",
                last_error_class="server_error")  # fmt: skip
    s = only(suggestions([flaky], {}), "unreliable")
    assert s["model"] == "flaky"
    assert "60%" in s["message"] and "15 of 25" in s["message"]
    assert "503 overloaded" in s["message"]
    assert s["evidence"]["failures"] == 15
    assert s["evidence"]["attempts"] == 25
    assert s["evidence"]["failure_rate"] == 0.6
    assert s["evidence"]["blacklist_level"] == 0
    assert s["evidence"]["last_error_class"] == "server_error"
    assert "flaky" in s["proposed_change"] and "up" in s["proposed_change"]


def test_a_simulated_model_is_never_sent_to_check_an_api_key() -> None:
    flaky = row("flaky", successes=10, failures=15, last_error="mock: simulated 500")
    s = only(suggestions([flaky], {}, simulated=frozenset({"up"})), "unreliable")
    assert "API key" not in s["proposed_change"]
    assert "failure_rate" in s["proposed_change"] and "mock" in s["proposed_change"]


def test_repeated_blacklisting_is_unreliable_even_with_few_attempts() -> None:
    s = only(suggestions([row("a", successes=2, failures=6)], {"a": 2}), "unreliable")
    assert "blacklisted 2 times" in s["message"]
    assert s["evidence"]["blacklist_level"] == 2
    assert s["evidence"]["attempts"] == 8


@pytest.mark.parametrize(
    ("successes", "failures", "level"),
    [(5, 14, 0), (90, 10, 0), (2, 6, 1)],
)
def test_no_reliability_suggestion_below_the_thresholds(
    successes: int, failures: int, level: int
) -> None:
    rows = [row("a", successes=successes, failures=failures)]
    assert suggestions(rows, {"a": level}) == []
