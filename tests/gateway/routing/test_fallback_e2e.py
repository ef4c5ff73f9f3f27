"""Routes and fallback end to end. Each test gets its own gateway: failures change rankings."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import openai
import orjson
import pytest

from providers.factory import TRANSPORTS
from tests.conftest import upstream_config
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream

SECRET = "sk-upstream-secret-123456"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def gw(upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess]) -> GatewayProcess:
    return start_gateway(
        upstream_config(upstream, selection={"exploration_rate": 0, "exploration_bonus": 0})
    )


@pytest.fixture
def client(gw: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="test-key", max_retries=0) as c:
        yield c


def test_route_is_served_by_its_first_member(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=HI)
    reply = raw.parse()
    assert reply.model == "alpha"
    assert raw.headers["x-gatewise-model"] == "alpha"
    assert raw.headers["x-gatewise-attempts"] == "1"
    assert upstream.models_called() == ["alpha-up"]


def test_upstream_500_falls_back_to_the_next_member(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    upstream.behave("alpha-up", status=500)
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=HI)
    reply = raw.parse()
    assert reply.model == "beta"
    assert reply.choices[0].message.content == "Hello from the fake upstream."
    assert raw.headers["x-gatewise-model"] == "beta"
    assert raw.headers["x-gatewise-attempts"] == "2"
    assert upstream.models_called() == ["alpha-up", "beta-up"]


def test_streaming_request_falls_back_before_the_first_chunk(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    upstream.behave("alpha-up", status=500)
    chunks = list(client.chat.completions.create(model="auto", messages=HI, stream=True))
    assert {c.model for c in chunks} == {"beta"}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake upstream."
    assert upstream.models_called() == ["alpha-up", "beta-up"]


def test_every_member_failing_is_a_502_that_names_the_models(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    for name in ("alpha-up", "beta-up", "gamma-up"):
        upstream.behave(name, status=500)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="auto", messages=HI)
    error = caught.value
    assert error.status_code == 502
    for name in ("alpha", "beta", "gamma"):
        assert name in error.message
    assert error.code == "upstream_error"
    body = error.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert sorted(upstream.models_called()) == ["alpha-up", "beta-up", "gamma-up"]


def test_upstream_400_is_the_clients_fault_and_not_retried(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    upstream.behave(
        "alpha-up",
        status=400,
        body=orjson.dumps(
            {"error": {"message": "Unsupported value: 'logit_bias'", "type": "invalid_request"}}
        ),
    )
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="auto", messages=HI)
    assert caught.value.status_code == 400
    assert "logit_bias" in caught.value.message
    assert upstream.models_called() == ["alpha-up"]


def test_upstream_secret_echoed_in_an_error_never_reaches_logs_or_client(
    client: openai.OpenAI, gw: GatewayProcess, upstream: FakeUpstream
) -> None:
    echo = orjson.dumps(
        {"error": {"message": f"Invalid key {SECRET} (Bearer {SECRET})", "type": "server_error"}}
    )
    for name in ("alpha-up", "beta-up", "gamma-up"):
        upstream.behave(name, status=500, body=echo)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="auto", messages=HI)
    assert caught.value.status_code == 502
    assert SECRET not in caught.value.response.text
    assert "Traceback" not in caught.value.response.text
    assert len(upstream.seen) == 3
    assert all(s.headers["authorization"] == f"Bearer {SECRET}" for s in upstream.seen)
    logs = gw.logs()
    assert '"status":500' in logs  # the failed attempts were logged...
    assert SECRET not in logs  # ...without the key they echoed


def test_an_answer_over_max_response_bytes_falls_back_to_the_next_member(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess]
) -> None:
    config = upstream_config(upstream, selection={"exploration_rate": 0, "exploration_bonus": 0})
    config["providers"][0]["max_response_bytes"] = 2000
    gw = start_gateway(config)
    upstream.behave("alpha-up", content="a long answer " * 200)  # ~2.8 KB of content
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="test-key", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=HI)
    assert raw.parse().model == "beta"
    assert raw.headers["x-gatewise-attempts"] == "2"
    assert upstream.models_called() == ["alpha-up", "beta-up"]
    assert "upstream response larger than 2000 bytes" in gw.logs()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_body_that_does_not_decode_falls_back_whatever_the_transport(
    transport: str, upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess]
) -> None:
    """Issue 17.11: with the httpx transport a bad gzip body was a 500, no fallback."""
    config = upstream_config(upstream, selection={"exploration_rate": 0, "exploration_bonus": 0})
    config["providers"][0]["transport"] = transport
    gw = start_gateway(config)
    upstream.behave("alpha-up", body=b"not gzip at all", headers={"content-encoding": "gzip"})
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="test-key", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=HI)
    assert raw.parse().model == "beta"
    assert raw.headers["x-gatewise-attempts"] == "2"
    assert upstream.models_called() == ["alpha-up", "beta-up"]


def answered_past_alpha(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess], body: bytes
) -> GatewayProcess:
    """A gateway whose route's first member, alpha, answers with `body` as JSON: beta
    answers the client instead, once alpha was tried. The gateway, for its logs."""
    config = upstream_config(upstream, selection={"exploration_rate": 0, "exploration_bonus": 0})
    gw = start_gateway(config)
    upstream.behave("alpha-up", body=body, headers={"content-type": "application/json"})
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="test-key", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=HI)
    assert raw.parse().model == "beta"
    assert upstream.models_called() == ["alpha-up", "beta-up"]
    return gw


def test_an_answer_nested_deeper_than_can_be_passed_on_falls_back(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess]
) -> None:
    """orjson reads 1,024 levels and writes 254: such an answer was taken, then failed
    when written to the client (a 500), where the next model could answer."""
    deep = b'{"choices":' + b"[" * 300 + b"]" * 300 + b"}"
    gw = answered_past_alpha(upstream, start_gateway, deep)
    assert "nests JSON deeper than 254 levels" in gw.logs()
    assert "Traceback" not in gw.logs()


def test_an_answer_that_would_take_too_much_memory_parsed_falls_back_unparsed(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess]
) -> None:
    """12 MiB of tiny objects is within max_response_bytes (128 MiB) but ~300 MB parsed;
    128 MiB of them, 3 GB: one such answer could have the worker killed for memory."""
    answer = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "alpha-up",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        ],
    }
    tiny = b',"x":[' + b"{}," * (4 * 1024 * 1024) + b"{}]}"
    body = orjson.dumps(answer)[:-1] + tiny  # a valid answer, and 12 MiB more
    gw = answered_past_alpha(upstream, start_gateway, body)
    assert "memory once parsed" in gw.logs()  # past max_body_memory, by the estimate
    assert "Traceback" not in gw.logs()
