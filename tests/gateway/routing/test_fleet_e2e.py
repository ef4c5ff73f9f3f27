"""One brain for the fleet, with real processes: two gateways on one store (replicas), and
`--workers 2`, on a shared SQLite file and on PostgreSQL. Benches travel within 2 s,
ratings reach the replica that answered, and the counts every process reports are the
fleet's, exactly."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gateway.server.workers import reuse_port_supported
from tests.conftest import upstream_config
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream

AUTH = {"authorization": "Bearer test-key"}
HI = [{"role": "user", "content": "hi"}]
TEXT = "text-to-text"


def config(upstream: FakeUpstream, url: str) -> dict[str, Any]:
    cfg = upstream_config(upstream, selection={"exploration_rate": 0, "exploration_bonus": 0})
    cfg["storage"] = {"url": url, "flush_interval": 0.2}
    cfg["models"][0]["fallbacks"] = ["beta", "gamma"]  # alpha, benched, is served by them
    return cfg


def chat(gw: GatewayProcess, model: str = "alpha") -> httpx.Response:
    body = {"model": model, "messages": HI}
    # A new connection each time: with --workers, either worker may take it.
    resp = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp


def benched(gw: GatewayProcess) -> set[str]:
    rows = httpx.get(gw.url + "/performance/blacklisted", timeout=10).json()["data"]
    return {row["model"] for row in rows}


def requests_of(gw: GatewayProcess, model: str) -> int:
    rows = httpx.get(gw.url + "/performance", params={"limit": 1000}, timeout=10).json()["data"]
    return sum(
        r["requests"] for r in rows if r["model"] == model and r["conversation_type"] == TEXT
    )


def within(seconds: float, check: Callable[[], bool]) -> float:
    """How long `check` took to hold; fails past `seconds`."""
    began = time.monotonic()
    while not check():
        elapsed = time.monotonic() - began
        assert elapsed < seconds, f"not within {seconds} s"
        time.sleep(0.02)
    return time.monotonic() - began


@pytest.fixture
def replicas(
    upstream: FakeUpstream, store_url: str, start_gateway: Callable[..., GatewayProcess]
) -> tuple[GatewayProcess, GatewayProcess]:
    return start_gateway(config(upstream, store_url)), start_gateway(config(upstream, store_url))


def test_failures_through_one_replica_bench_the_model_on_the_other(
    replicas: tuple[GatewayProcess, GatewayProcess], upstream: FakeUpstream
) -> None:
    a, b = replicas
    upstream.behave("alpha-up", status=500)
    for _ in range(3):  # named, alpha is tried first; beta answers
        assert chat(a).headers["x-gatewise-model"] == "beta"
    assert "alpha" in benched(a)
    within(2.0, lambda: "alpha" in benched(b))
    upstream.seen.clear()
    resp = chat(b)
    assert (resp.headers["x-gatewise-model"], resp.headers["x-gatewise-attempts"]) == ("beta", "1")
    assert upstream.models_called() == ["beta-up"]  # b never tries the benched model

    # Let back through b: back on a too.
    upstream.behaviours.clear()
    assert httpx.delete(b.url + "/performance/blacklisted/alpha", timeout=10).status_code == 200
    within(2.0, lambda: not benched(a))
    assert chat(a).headers["x-gatewise-model"] == "alpha"


def test_a_rating_posted_to_one_replica_moves_rankings_on_the_other(
    replicas: tuple[GatewayProcess, GatewayProcess],
) -> None:
    a, b = replicas
    answered = chat(a, "gamma").json()["id"]
    rating = {"response_id": answered, "overall": 1, "accuracy": 1}
    rated = httpx.post(b.url + "/v1/feedback", json=rating, headers=AUTH, timeout=10)
    assert rated.status_code == 200, rated.text
    assert rated.json()["model"] == "gamma"

    def seen_on_a() -> bool:
        ranks = httpx.get(
            a.url + "/performance/rankings", params={"optimization": "accuracy"}, timeout=10
        ).json()["rankings"]["accuracy"]
        gamma = next(r for r in ranks if r["model"] == "gamma")
        return bool(gamma["parts"]["evidence"])

    within(5.0, seen_on_a)


def test_every_replica_reports_the_fleets_exact_counts(
    replicas: tuple[GatewayProcess, GatewayProcess],
) -> None:
    a, b = replicas
    for i in range(17):
        chat(a if i % 3 else b, "beta")
    within(5.0, lambda: requests_of(a, "beta") == requests_of(b, "beta") == 17)


@pytest.mark.skipif(not reuse_port_supported(), reason="Linux SO_REUSEPORT")
def test_two_workers_count_as_one_and_a_let_back_reaches_both(
    upstream: FakeUpstream, store_url: str, start_gateway: Callable[..., GatewayProcess]
) -> None:
    gw = start_gateway(config(upstream, store_url), args=["--workers", "2"])
    for _ in range(40):  # new connections: spread over both workers
        chat(gw, "beta")
    # Whichever worker answers, it reports the fleet's number.
    within(5.0, lambda: all(requests_of(gw, "beta") == 40 for _ in range(6)))

    upstream.behave("alpha-up", status=500)
    for _ in range(9):  # enough for a streak of three on at least one worker
        chat(gw)
    within(2.0, lambda: all("alpha" in benched(gw) for _ in range(6)))
    upstream.behaviours.clear()
    assert httpx.delete(gw.url + "/performance/blacklisted/alpha", timeout=10).status_code == 200
    within(2.0, lambda: all(not benched(gw) for _ in range(6)))
