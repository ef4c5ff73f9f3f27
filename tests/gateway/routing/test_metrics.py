"""RoutingMetrics: what one attempt adds, by how it and its request ended."""

from __future__ import annotations

from gateway.routing.metrics import LATENCY_BUCKETS, RoutingMetrics
from providers.errors import ClientGone, UpstreamServerError
from tests.gateway.routing.test_recorder import Chain


def test_an_answer_counts_its_request_attempt_tokens_cost_and_times() -> None:
    chain = Chain()
    outcome = chain.outcome()
    outcome.job.owner = "team-a"
    outcome.timings = type(outcome.timings)(20.0, 5.0, 0.2)
    metrics = RoutingMetrics()
    metrics.observe(outcome)
    metrics.observe(outcome)
    snap = metrics.snapshot()
    assert snap["requests"] == {("auto", "m", "chat.completions", "success"): [2.0]}
    assert snap["attempts"] == {("auto", "m", "p", "chat.completions", "success"): [2.0]}
    assert snap["tokens"] == {("m", "team-a", "input"): [2000.0], ("m", "team-a", "output"): [20.0]}
    assert snap["cost"] == {("m", "team-a"): [0.002]}
    latency = snap["upstream_latency"][("m", "p")]
    assert latency[LATENCY_BUCKETS.index(0.025)] == 2  # 20 ms: the 25 ms bucket
    assert latency[-1] == 0.04
    assert sum(snap["ttft"][("m",)][:-1]) == 2
    assert sum(snap["overhead"][("chat.completions",)][:-1]) == 2


def test_failures_fallbacks_and_a_client_that_left() -> None:
    chain = Chain()
    metrics = RoutingMetrics()
    metrics.observe(chain.outcome("m", UpstreamServerError("down", status=500), answered=False))
    metrics.observe(chain.outcome("n", number=2))  # the fallback answered
    metrics.observe(chain.outcome("m", ClientGone("left", status=499), answered=False))
    failed = chain.outcome("m", UpstreamServerError("down", status=500), answered=False)
    metrics.unanswered(failed.job, "server_error")  # no model answered
    snap = metrics.snapshot()
    assert snap["attempts"] == {
        ("auto", "m", "p", "chat.completions", "server_error"): [1.0],
        ("auto", "n", "p", "chat.completions", "success"): [1.0],
        ("auto", "m", "p", "chat.completions", "client_gone"): [1.0],
    }
    assert snap["requests"] == {
        ("auto", "n", "chat.completions", "fallback"): [1.0],
        ("auto", "", "chat.completions", "client_gone"): [1.0],
        ("auto", "", "chat.completions", "server_error"): [1.0],
    }
    assert "m" not in {key[0] for key in snap["tokens"]}  # a failure used none
