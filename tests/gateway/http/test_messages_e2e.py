"""Anthropic's Messages API end to end: the official `anthropic` SDK -> a real gateway ->
an OpenAI-compatible fake upstream (translated) or an Anthropic one (passed through).

One gateway process and one fake upstream (which speaks both protocols) serve the
module: "alpha" lives behind the OpenAI-compatible provider, "sonnet" behind the
Anthropic one.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from tests.conftest import upstream_config
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream

KEY, OTHER, LIMITED = "test-key", "sk-other-0002", "sk-limited-0003"
ANTHROPIC_SECRET = "sk-ant-upstream-secret-123456"
HI: list[Any] = [{"role": "user", "content": "hi"}]
UPSTREAM = {"alpha": "alpha-up", "sonnet": "sonnet-up"}
BOTH = pytest.mark.parametrize("model", ["alpha", "sonnet"], ids=["translated", "native"])
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}

SONNET_PRICES = {
    "input_per_million": 3.0,
    "output_per_million": 15.0,
    "cached_input_per_million": 0.3,
    "cache_write_per_million": 3.75,
}

pytestmark = pytest.mark.usefixtures("fresh")


@pytest.fixture(scope="module")
def gw(up: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = upstream_config(up, selection={"exploration_rate": 0, "exploration_bonus": 0})
    config["server"]["max_body_bytes"] = 65536
    for model in config["models"]:
        if model["name"] == "alpha":  # a named model falls back to its fallbacks only
            model["fallbacks"] = ["beta", "gamma"]
    config["server"]["api_keys"] = [
        {"name": "main", "key": KEY},
        {"name": "other", "key": OTHER},
        {
            "name": "limited",
            "key": LIMITED,
            "models": ["alpha"],
            "rate_limit": {"requests_per_minute": 1},
        },
    ]
    config["providers"].append(
        {
            "name": "claude",
            "type": "anthropic",
            "base_url": up.url.removesuffix("/v1"),
            "api_key": ANTHROPIC_SECRET,
            "timeout": 5,
        }
    )
    config["models"].append(
        {
            "name": "sonnet",
            "provider": "claude",
            "upstream_model": "sonnet-up",
            "pricing": SONNET_PRICES,
        }
    )
    workdir = tmp_path_factory.mktemp("messages-e2e")
    config["storage"] = {"url": f"sqlite:///{workdir / 'gatewise.db'}", "flush_interval": 0.1}
    with GatewayProcess(config, workdir) as process:
        yield process


@pytest.fixture
def claude(gw: GatewayProcess) -> Iterator[anthropic.Anthropic]:
    """The official SDK pointed at the gateway as ANTHROPIC_BASE_URL would point it."""
    with anthropic.Anthropic(base_url=gw.url, api_key=KEY, max_retries=0) as client:
        yield client


def assert_anthropic_error(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and set(body) == {"type", "error"}
    assert body["error"]["type"] == kind
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert ANTHROPIC_SECRET not in response.text and "Traceback" not in response.text
    return str(body["error"]["message"])


def post(
    gw: GatewayProcess, body: dict[str, Any], key: str = KEY, **headers: str
) -> httpx.Response:
    return httpx.post(
        gw.url + "/v1/messages", json=body, headers={"x-api-key": key, **headers}, timeout=10
    )


def event_names(raw: bytes) -> list[str]:
    return [line[7:].decode() for line in raw.split(b"\n") if line.startswith(b"event: ")]


# -- plain --------------------------------------------------------------------------------


def test_a_message_through_an_openai_compatible_upstream(
    claude: anthropic.Anthropic, up: FakeUpstream
) -> None:
    raw = claude.messages.with_raw_response.create(
        model="alpha",
        max_tokens=50,
        system="Be brief.",
        messages=HI,
        stop_sequences=["END"],
        extra_headers={"anthropic-beta": "some-beta"},  # not for an OpenAI upstream
    )
    message = raw.parse()
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "Hello from the fake upstream."  # type: ignore[union-attr]
    assert message.model == "alpha" and message.role == "assistant"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 7)
    assert re.fullmatch(r"msg_[0-9a-f]{43}", message.id), message.id
    assert raw.headers["x-gatewise-response-id"] == message.id
    assert raw.headers["x-gatewise-model"] == "alpha"
    [seen] = up.calls("/chat/completions")
    assert seen.body["model"] == "alpha-up"
    assert seen.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    assert seen.body["stop"] == ["END"] and seen.body["max_tokens"] == 50
    assert "anthropic-beta" not in seen.headers
    assert KEY not in " ".join(seen.headers.values())


def test_a_message_to_anthropic_passes_through_with_cache_control(
    claude: anthropic.Anthropic, up: FakeUpstream
) -> None:
    system: Any = [
        {"type": "text", "text": "A long shared context.", "cache_control": {"type": "ephemeral"}}
    ]
    image = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
    messages: Any = [
        {
            "role": "user",
            "content": [
                {"type": "image", "source": image},
                {"type": "text", "text": "What is it?", "cache_control": {"type": "ephemeral"}},
            ],
        }
    ]
    message = claude.messages.create(
        model="sonnet",
        max_tokens=64,
        system=system,
        messages=messages,
        extra_body={"top_k": 5},
        extra_headers={"anthropic-beta": "extended-cache-ttl-2025-04-11"},
    )
    assert message.content[0].text == "Hello from the fake upstream."  # type: ignore[union-attr]
    assert message.model == "sonnet" and message.id.startswith("msg_")
    assert "up" not in message.id
    [seen] = up.calls("/messages")
    assert seen.body == {
        "model": "sonnet-up",
        "max_tokens": 64,
        "system": system,
        "messages": messages,
        "top_k": 5,
    }
    assert seen.headers["x-api-key"] == ANTHROPIC_SECRET
    assert seen.headers["anthropic-version"]
    assert seen.headers["anthropic-beta"] == "extended-cache-ttl-2025-04-11"
    assert message.usage.cache_read_input_tokens == 1000
    assert message.usage.cache_creation_input_tokens == 200


def test_cached_input_tokens_are_priced_as_such(
    gw: GatewayProcess, claude: anthropic.Anthropic
) -> None:
    system: Any = [{"type": "text", "text": "Context.", "cache_control": {"type": "ephemeral"}}]
    raw = claude.messages.with_raw_response.create(
        model="sonnet", max_tokens=8, system=system, messages=HI
    )
    request_id = raw.headers["x-request-id"]
    expected = (11 * 3.0 + 7 * 15.0 + 1000 * 0.3 + 200 * 3.75) / 1_000_000
    deadline = time.monotonic() + 10
    while True:
        with sqlite3.connect(gw.config_path.parent / "gatewise.db") as db:
            row = db.execute(
                "SELECT prompt_tokens, cost FROM attempts WHERE request_id = ?", (request_id,)
            ).fetchone()
        if row is not None or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert row is not None
    assert row[0] == 1211
    assert row[1] == pytest.approx(expected)


def test_an_image_reaches_an_openai_compatible_upstream_as_a_data_url(
    claude: anthropic.Anthropic, up: FakeUpstream
) -> None:
    image = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
    content: Any = [{"type": "image", "source": image}, {"type": "text", "text": "What?"}]
    claude.messages.create(
        model="alpha", max_tokens=8, messages=[{"role": "user", "content": content}]
    )
    [seen] = up.calls("/chat/completions")
    assert seen.body["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "text", "text": "What?"},
    ]


def test_bearer_auth_works_as_well_as_x_api_key(gw: GatewayProcess) -> None:
    body = {"model": "alpha", "max_tokens": 8, "messages": HI}
    r = httpx.post(gw.url + "/v1/messages", json=body, headers={"authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and r.json()["type"] == "message"


# -- streams ------------------------------------------------------------------------------


@BOTH
def test_a_streamed_message(claude: anthropic.Anthropic, up: FakeUpstream, model: str) -> None:
    up.behave(UPSTREAM[model], content="one two three")
    with claude.messages.stream(model=model, max_tokens=20, messages=HI) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "one two three"
    assert final.model == model and final.id.startswith("msg_")
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (9, 3)
    if model == "alpha":
        [seen] = up.calls("/chat/completions")
        assert seen.body["stream_options"] == {"include_usage": True}  # asked for pricing


@BOTH
def test_the_stream_is_anthropics_event_sequence_under_the_gateways_id(
    gw: GatewayProcess, up: FakeUpstream, model: str
) -> None:
    up.behave(UPSTREAM[model], content="one two")
    r = post(gw, {"model": model, "max_tokens": 9, "messages": HI, "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    names = [n for n in event_names(r.content) if n != "ping"]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert b"[DONE]" not in r.content
    first = orjson.loads(r.content.split(b"\n")[1].removeprefix(b"data: "))
    assert first["message"]["id"] == r.headers["x-gatewise-response-id"]
    assert first["message"]["model"] == model


def test_a_stream_that_breaks_ends_with_an_error_event(
    gw: GatewayProcess, up: FakeUpstream
) -> None:
    up.behave("alpha-up", content="one two three", fail_after_chunks=1, pause_after_first=0.2)
    r = post(gw, {"model": "alpha", "max_tokens": 9, "messages": HI, "stream": True})
    assert r.status_code == 200
    names = event_names(r.content)
    assert names[0] == "message_start" and names[-1] == "error"
    error = orjson.loads(r.content.rstrip().rsplit(b"\n", 1)[1].removeprefix(b"data: "))
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    assert b"[DONE]" not in r.content


# -- tools --------------------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
def test_a_tool_round_trip(
    claude: anthropic.Anthropic, up: FakeUpstream, model: str, streamed: bool
) -> None:
    up.behave(UPSTREAM[model], tool_call=("get_weather", {"city": "Paris"}), times=1)
    ask: Any = [{"role": "user", "content": "Weather in Paris?"}]
    tools: Any = [WEATHER]
    if streamed:
        with claude.messages.stream(model=model, max_tokens=50, messages=ask, tools=tools) as s:
            first = s.get_final_message()
    else:
        first = claude.messages.create(model=model, max_tokens=50, messages=ask, tools=tools)
    assert first.stop_reason == "tool_use"
    [use] = first.content
    assert use.type == "tool_use" and use.name == "get_weather"
    assert use.input == {"city": "Paris"}

    result: Any = {"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 21 C"}
    conversation: Any = [
        *ask,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [result]},
    ]
    second = claude.messages.create(model=model, max_tokens=50, messages=conversation, tools=tools)
    assert second.content[0].text == "Hello from the fake upstream."  # type: ignore[union-attr]
    assert second.stop_reason == "end_turn"

    last = up.seen[-1].body
    if model == "alpha":
        assert last["tools"][0]["function"]["name"] == "get_weather"
        assert last["messages"][1]["tool_calls"][0]["id"] == use.id
        assert last["messages"][2] == {
            "role": "tool",
            "tool_call_id": use.id,
            "content": "Sunny, 21 C",
        }
    else:
        assert last["messages"] == conversation and last["tools"] == tools


# -- count_tokens -------------------------------------------------------------------------


def test_count_tokens_asks_anthropic(claude: anthropic.Anthropic, up: FakeUpstream) -> None:
    counted = claude.messages.count_tokens(
        model="sonnet",
        messages=HI,
        system="Be brief.",
        extra_headers={"anthropic-beta": "token-counting-2024-11-01"},
    )
    assert counted.input_tokens == 42
    [seen] = up.calls("/messages/count_tokens")
    assert seen.headers["anthropic-beta"] == "token-counting-2024-11-01"
    assert seen.body == {"model": "sonnet-up", "messages": HI, "system": "Be brief."}


def test_count_tokens_estimates_for_other_upstreams(
    claude: anthropic.Anthropic, up: FakeUpstream
) -> None:
    short = claude.messages.count_tokens(model="alpha", messages=HI)
    long = claude.messages.count_tokens(
        model="alpha", messages=[{"role": "user", "content": "word " * 400}]
    )
    assert 0 < short.input_tokens < long.input_tokens
    assert 300 < long.input_tokens < 800
    assert up.seen == []


# -- feedback -----------------------------------------------------------------------------


def test_a_message_id_is_rateable_by_the_key_that_got_it(
    gw: GatewayProcess, claude: anthropic.Anthropic
) -> None:
    message = claude.messages.create(model="alpha", max_tokens=8, messages=HI)

    def rate(key: str) -> httpx.Response:
        return httpx.post(
            gw.url + "/v1/feedback",
            json={"response_id": message.id, "overall": 5},
            headers={"authorization": f"Bearer {key}"},
        )

    assert rate(OTHER).status_code == 404
    rated = rate(KEY)
    assert rated.status_code == 200, rated.text
    assert rated.json()["model"] == "alpha"


def test_a_streamed_message_id_is_rateable(gw: GatewayProcess, claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(model="sonnet", max_tokens=8, messages=HI) as stream:
        message_id = stream.get_final_message().id
    rated = httpx.post(
        gw.url + "/v1/feedback",
        json={"response_id": message_id, "overall": 4},
        headers={"authorization": f"Bearer {KEY}"},
    )
    assert rated.status_code == 200, rated.text
    assert rated.json()["model"] == "sonnet"


# -- errors, in Anthropic's shape ---------------------------------------------------------


def test_an_unknown_model_is_not_found(claude: anthropic.Anthropic, up: FakeUpstream) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        claude.messages.create(model="no-such-model", max_tokens=8, messages=HI)
    message = assert_anthropic_error(caught.value.response, 404, "not_found_error")
    assert "no-such-model" in message
    assert up.seen == []


def test_a_wrong_or_missing_key_is_an_authentication_error(gw: GatewayProcess) -> None:
    with (
        anthropic.Anthropic(base_url=gw.url, api_key="wrong-key", max_retries=0) as bad,
        pytest.raises(anthropic.AuthenticationError) as caught,
    ):
        bad.messages.create(model="alpha", max_tokens=8, messages=HI)
    assert_anthropic_error(caught.value.response, 401, "authentication_error")
    assert "wrong-key" not in caught.value.response.text
    missing = httpx.post(gw.url + "/v1/messages", json={"model": "alpha"})
    assert_anthropic_error(missing, 401, "authentication_error")
    counting = httpx.post(gw.url + "/v1/messages/count_tokens", json={"model": "alpha"})
    assert_anthropic_error(counting, 401, "authentication_error")


def test_a_bad_body_is_an_invalid_request(gw: GatewayProcess, up: FakeUpstream) -> None:
    no_max = post(gw, {"model": "alpha", "messages": HI})
    assert "max_tokens" in assert_anthropic_error(no_max, 400, "invalid_request_error")
    not_json = httpx.post(
        gw.url + "/v1/messages", content=b"{nope", headers={"x-api-key": KEY}, timeout=10
    )
    assert_anthropic_error(not_json, 400, "invalid_request_error")
    bad_role = post(gw, {"model": "alpha", "max_tokens": 5, "messages": [{"role": "system"}]})
    assert_anthropic_error(bad_role, 400, "invalid_request_error")
    assert up.seen == []


@pytest.mark.parametrize("model", ["sonnet", "alpha"])  # passed through; translated
@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
def test_json_nested_too_deep_to_pass_on_is_an_invalid_request(
    gw: GatewayProcess, up: FakeUpstream, model: str, path: str
) -> None:
    """orjson reads 1,024 levels and writes 254: such a body was a 500 and a traceback."""
    deep = "[" * 300 + "]" * 300
    block = '{"type":"tool_use","id":"t1","name":"f","input":{"q":' + deep + "}}"
    messages = '[{"role":"user","content":"hi"},{"role":"assistant","content":[' + block + "]}"
    body = '{"model":"' + model + '","max_tokens":5,"messages":' + messages + "]}"
    reply = httpx.post(gw.url + path, content=body, headers={"x-api-key": KEY}, timeout=10)
    if path.endswith("count_tokens") and model == "alpha":  # estimated, nothing passed on
        assert reply.status_code == 200 and reply.json()["input_tokens"] >= 1
    else:
        message = assert_anthropic_error(reply, 400, "invalid_request_error")
        assert "deeper than 254 levels" in message
    assert up.seen == []
    assert "Traceback" not in gw.logs()


def test_a_wrong_method_or_path_is_in_anthropics_shape(gw: GatewayProcess) -> None:
    key = {"x-api-key": KEY}
    assert_anthropic_error(
        httpx.get(gw.url + "/v1/messages", headers=key), 405, "invalid_request_error"
    )
    missing = httpx.post(gw.url + "/v1/messages/batches", headers=key, json={})
    assert_anthropic_error(missing, 404, "not_found_error")


def test_a_model_outside_the_keys_scope_is_a_permission_error(gw: GatewayProcess) -> None:
    r = post(gw, {"model": "sonnet", "max_tokens": 5, "messages": HI}, key=LIMITED)
    assert_anthropic_error(r, 403, "permission_error")


def test_past_the_keys_rate_limit_is_a_rate_limit_error(gw: GatewayProcess) -> None:
    body = {"model": "alpha", "max_tokens": 5, "messages": HI}
    statuses = [post(gw, body, key=LIMITED) for _ in range(3)]
    assert statuses[0].status_code == 200
    assert_anthropic_error(statuses[-1], 429, "rate_limit_error")
    assert statuses[-1].headers["retry-after"]


def test_an_upstream_rejection_is_an_invalid_request(
    claude: anthropic.Anthropic, up: FakeUpstream
) -> None:
    up.behave("sonnet-up", status=400, body=b'{"type":"error","error":{"type":"x","message":"no"}}')
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(model="sonnet", max_tokens=5, messages=HI)
    assert_anthropic_error(caught.value.response, 400, "invalid_request_error")


def test_a_failing_model_falls_back_to_its_fallbacks(
    claude: anthropic.Anthropic, up: FakeUpstream
) -> None:
    up.behave("alpha-up", status=500)
    raw = claude.messages.with_raw_response.create(model="alpha", max_tokens=5, messages=HI)
    assert raw.headers["x-gatewise-model"] == "beta"
    assert raw.headers["x-gatewise-attempts"] == "2"
    assert raw.parse().model == "beta"


def test_failing_upstreams_are_an_api_error(claude: anthropic.Anthropic, up: FakeUpstream) -> None:
    for model in ("alpha-up", "beta-up", "gamma-up"):
        up.behave(model, status=500)
    with pytest.raises(anthropic.InternalServerError) as caught:
        claude.messages.create(model="alpha", max_tokens=5, messages=HI)
    assert_anthropic_error(caught.value.response, 502, "api_error")


def test_rate_limited_upstreams_are_overloaded(
    claude: anthropic.Anthropic, up: FakeUpstream
) -> None:
    up.behave("sonnet-up", status=429, headers={"retry-after": "1"})
    with pytest.raises(anthropic.APIStatusError) as caught:
        claude.messages.create(model="sonnet", max_tokens=5, messages=HI)
    assert_anthropic_error(caught.value.response, 503, "overloaded_error")


def test_a_tool_only_anthropic_serves_is_refused_by_a_translated_route(
    gw: GatewayProcess, up: FakeUpstream
) -> None:
    tools = [{"type": "web_search_20250305", "name": "web_search", "max_uses": 1}]
    r = post(gw, {"model": "alpha", "max_tokens": 5, "messages": HI, "tools": tools})
    assert "Anthropic only" in assert_anthropic_error(r, 400, "invalid_request_error")
    assert up.seen == []
