"""The quality tolerance end to end: a real gateway process, a fake upstream over HTTP,
ratings through POST /v1/feedback and the official openai SDK. With `cost`, the
x-gatewise-quality-tolerance header (or the route's quality_tolerance) serves the cheapest
model whose expected quality, learned from the ratings, is within that fraction of the
best; a bad header value is a 400 in the OpenAI shape."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream

HI = [{"role": "user", "content": "hi"}]
HEADER = "x-gatewise-quality-tolerance"


def config(upstream: FakeUpstream) -> dict[str, Any]:
    return {
        "server": {"api_keys": ["test-key"]},
        "providers": [{"name": "up", "type": "openai", "base_url": upstream.url, "timeout": 5}],
        "models": [
            {"name": "cheap", "provider": "up",
             "pricing": {"input_per_million": 0.5, "output_per_million": 0.5}},
            {"name": "dear", "provider": "up",
             "pricing": {"input_per_million": 10, "output_per_million": 30}},
        ],
        "routes": [
            {"name": "thrifty", "models": ["cheap", "dear"], "optimization": "cost"},
            {"name": "careful", "models": ["cheap", "dear"], "optimization": "cost",
             "quality_tolerance": 0.05},
        ],
        # No sampling: the expected qualities alone decide, so every answer is the same.
        "selection": {"exploration_rate": 0, "exploration_bonus": 0, "score_refresh_seconds": 0},
        "storage": {"url": "memory://"},
    }  # fmt: skip


@pytest.fixture
def gw(upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess]) -> GatewayProcess:
    return start_gateway(config(upstream))


@pytest.fixture
def client(gw: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="test-key", max_retries=0) as c:
        yield c


def served(client: openai.OpenAI, model: str, tolerance: str | None = None) -> tuple[str, str]:
    """(serving model, response id) of one chat completion."""
    headers = {HEADER: tolerance} if tolerance is not None else {}
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=HI, extra_headers=headers
    )
    return raw.headers["x-gatewise-model"], raw.headers["x-gatewise-response-id"]


def rate(gw: GatewayProcess, client: openai.OpenAI, model: str, value: int, n: int) -> None:
    for _ in range(n):
        _, response_id = served(client, model)
        reply = httpx.post(
            gw.url + "/v1/feedback",
            json={"response_id": response_id, "accuracy": value, "overall": value},
            headers={"authorization": "Bearer test-key"},
            timeout=10,
        )
        assert reply.status_code == 200, reply.text


def test_the_tolerance_picks_the_cheapest_model_within_reach_of_the_best(
    gw: GatewayProcess, client: openai.OpenAI
) -> None:
    rate(gw, client, "cheap", 3, 20)  # users find the cheap model's answers middling
    rate(gw, client, "dear", 5, 20)  # and the dear one's excellent
    assert served(client, "thrifty")[0] == "cheap"  # cost alone: ratings do not matter
    assert served(client, "thrifty", "0.5")[0] == "cheap"  # within half of the best
    assert served(client, "thrifty", "0.05")[0] == "dear"  # not within 5 %
    assert served(client, "thrifty", "0")[0] == "dear"  # only the best will do
    assert served(client, "careful")[0] == "dear"  # the route's quality_tolerance: 0.05
    assert served(client, "careful", "1")[0] == "cheap"  # the header overrides the route
    # Once the cheap model's answers are rated as good as the dear one's, it is within 5 %.
    rate(gw, client, "cheap", 5, 200)
    assert served(client, "careful")[0] == "cheap"


@pytest.mark.parametrize("value", ["abc", "1.5", "-0.1", "nan", ""])
def test_a_bad_tolerance_is_a_400_naming_the_header(client: openai.OpenAI, value: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        served(client, "thrifty", value)
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["param"] == HEADER
    assert "from 0 to 1" in error["message"]


def test_a_bad_tolerance_on_the_messages_api_is_an_anthropic_400(gw: GatewayProcess) -> None:
    reply = httpx.post(
        gw.url + "/v1/messages",
        json={"model": "thrifty", "max_tokens": 10, "messages": HI},
        headers={"x-api-key": "test-key", HEADER: "lots"},
        timeout=10,
    )
    assert reply.status_code == 400
    body = reply.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert HEADER in body["error"]["message"]
