"""Per-prompt routing end to end: a real gateway process, a fake upstream over HTTP, the
official openai SDK and ratings posted to /v1/feedback. One model is rated well on maths
prompts and badly on prose, the other the other way round; after a few dozen ratings,
requests go to the right model by the kind of their prompt, on the replica that took
the ratings and on another replica of the same store."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream

KEY = {"authorization": "Bearer test-key"}
WORDS = ["river", "garden", "letter", "story", "friend", "morning", "autumn", "music"]


def maths(rng: random.Random) -> str:
    a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 9)
    return f"A shop sells {a} pens and {b} pencils in boxes of {c}. How many boxes?"


def prose(rng: random.Random) -> str:
    return f"Write a short poem about the {' '.join(rng.sample(WORDS, 3))}, gently."


def config(upstream: FakeUpstream, per_prompt: bool, store: str | None = None) -> dict[str, Any]:
    cfg = {
        "server": {"api_keys": ["test-key"]},
        "providers": [{"name": "up", "type": "openai", "base_url": upstream.url,
                       "api_key": "sk-upstream-secret-123456", "timeout": 5}],
        "models": [
            {"name": "writer", "provider": "up", "upstream_model": "writer-up"},
            {"name": "solver", "provider": "up", "upstream_model": "solver-up"},
        ],
        "routes": [{"name": "auto", "models": ["writer", "solver"], "per_prompt": per_prompt}],
        # No model-level draws: before any rating the route's order is its list's.
        "selection": {"exploration_rate": 0, "exploration_bonus": 0,
                      "score_refresh_seconds": 0, "seed": 1},
    }  # fmt: skip
    if store is not None:
        cfg["storage"] = {"url": store, "flush_interval": 0.2, "share_interval": 0.5}
    return cfg


@pytest.fixture
def start(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess]
) -> Callable[[bool], GatewayProcess]:
    return lambda per_prompt: start_gateway(config(upstream, per_prompt))


@pytest.fixture
def client_of() -> Iterator[Callable[[GatewayProcess], openai.OpenAI]]:
    clients: list[openai.OpenAI] = []

    def make(gw: GatewayProcess) -> openai.OpenAI:
        clients.append(openai.OpenAI(base_url=gw.url + "/v1", api_key="test-key", max_retries=0))
        return clients[-1]

    yield make
    for c in clients:
        c.close()


def ask(client: openai.OpenAI, prompt: str) -> tuple[str, str]:
    reply = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": prompt}]
    )
    return reply.id, reply.model


def rate(gw: GatewayProcess, response_id: str, accuracy: int) -> None:
    reply = httpx.post(
        gw.url + "/v1/feedback",
        json={"response_id": response_id, "accuracy": accuracy},
        headers=KEY,
        timeout=10,
    )
    assert reply.status_code == 200, reply.text


def train(gw: GatewayProcess, client: openai.OpenAI) -> None:
    """60 rated requests: solver right on maths, writer on prose."""
    rng = random.Random(3)
    for i in range(60):
        kind = "solver" if i % 2 else "writer"
        rid, model = ask(client, maths(rng) if kind == "solver" else prose(rng))
        rate(gw, rid, 5 if model == kind else 1)


def routed(client: openai.OpenAI) -> tuple[int, int]:
    """20 fresh prompts of each kind, alternating: how many of each went to the model
    rated well on their kind."""
    fresh = random.Random(4)
    to_solver = to_writer = 0
    for _ in range(20):
        to_solver += ask(client, maths(fresh))[1] == "solver"
        to_writer += ask(client, prose(fresh))[1] == "writer"
    return to_solver, to_writer


def test_requests_go_to_the_model_rated_well_on_their_kind_of_prompt(
    start: Callable[[bool], GatewayProcess],
    client_of: Callable[[GatewayProcess], openai.OpenAI],
) -> None:
    gw = start(True)
    client = client_of(gw)
    train(gw, client)
    to_solver, to_writer = routed(client)
    assert to_solver >= 18 and to_writer >= 18
    # The evidence, for the dashboard: 60 ratings between the two, and each model's
    # expectations spread apart over the prompts (it tells maths from prose).
    learners = httpx.get(gw.url + "/performance/prompts", timeout=10).json()["data"]
    assert {(r["route"], r["model"]) for r in learners} == {("auto", "writer"), ("auto", "solver")}
    assert sum(r["ratings"] for r in learners) == pytest.approx(60)
    assert all(r["expected_spread"] > 1.0 for r in learners)


def test_without_per_prompt_one_model_serves_every_kind(
    start: Callable[[bool], GatewayProcess],
    client_of: Callable[[GatewayProcess], openai.OpenAI],
) -> None:
    """The same traffic and ratings on a model-level route: each model is right half
    the time, so the route cannot be right on both kinds (what per_prompt adds)."""
    gw = start(False)
    client = client_of(gw)
    train(gw, client)
    to_solver, to_writer = routed(client)
    assert to_solver + to_writer <= 30


def test_another_replica_routes_on_what_the_first_learned(
    upstream: FakeUpstream,
    store_url: str,
    start_gateway: Callable[..., GatewayProcess],
    client_of: Callable[[GatewayProcess], openai.OpenAI],
) -> None:
    """What replica a learned reaches replica b through the store (the evidence is
    added to b's own, not copied over it): b routes by prompt kind too. Half of a's
    answers are rated through b, which has neither their features nor (payloads not
    logged) their prompts: b passes those ratings to a through the store."""
    a = start_gateway(config(upstream, True, store_url))
    b = start_gateway(config(upstream, True, store_url))
    on_b = client_of(b)
    assert ask(on_b, maths(random.Random(9)))[1] == "writer"  # b knows nothing yet
    on_a = client_of(a)
    rng = random.Random(3)
    for i in range(60):
        kind = "solver" if i % 2 else "writer"
        rid, model = ask(on_a, maths(rng) if kind == "solver" else prose(rng))
        rate(a if i % 4 < 2 else b, rid, 5 if model == kind else 1)
    deadline = time.monotonic() + 10
    while ask(on_b, maths(random.Random(9)))[1] != "solver":  # b's next pull
        assert time.monotonic() < deadline, "b never learned what a did"
        time.sleep(0.1)
    to_solver, to_writer = routed(on_b)
    assert to_solver >= 18 and to_writer >= 18

    # all 60 ratings taught the learners: those taken by b too, once each
    def learned() -> float:
        rows = httpx.get(b.url + "/performance/prompts", timeout=10).json()["data"]
        return sum(r["ratings"] for r in rows)

    deadline = time.monotonic() + 10
    while learned() != pytest.approx(60):
        assert time.monotonic() < deadline, f"learned from {learned()} ratings, not 60"
        time.sleep(0.1)
