"""Anthropic's Messages API inbound: translated for chat upstreams, passed through to
Anthropic ones (providers/anthropic_inbound.py, and AnthropicProvider's native path)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import respx

from providers.anthropic_inbound import (
    MessageEvents,
    message_usage,
    messages_via_chat,
    to_chat,
    to_message,
)
from providers.base import Call, Chunk, ChunkStream, Endpoint, Provider, Reply, Usage
from providers.errors import BadRequest
from tests.providers.anthropic_helpers import MODEL, TEXT_REPLY, URL, make_provider, sent

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
PNG = {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}


# -- request: Messages body -> chat body --------------------------------------------------


def test_a_messages_body_becomes_a_chat_body() -> None:
    body = {
        "model": "claude",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image", "source": PNG},
                ],
            }
        ],
        "stop_sequences": ["END"],
        "temperature": 0.2,
        "metadata": {"user_id": "u-1"},
    }
    original = orjson.dumps(body)
    chat = to_chat(body)
    assert orjson.dumps(body) == original  # untouched
    assert chat == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                ],
            },
        ],
        "max_tokens": 100,
        "stop": ["END"],
        "temperature": 0.2,
        "user": "u-1",
    }


def test_a_tool_round_trip_becomes_tool_calls_then_tool_messages() -> None:
    body = {
        "max_tokens": 10,
        "tools": [WEATHER],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "text", "text": "Let me look."},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"},
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ],
    }
    chat = to_chat(body)
    assert chat["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny"},
        {"role": "user", "content": "And tomorrow?"},
    ]
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER["input_schema"],
                "description": "The weather in a city",
            },
        }
    ]
    assert chat["tool_choice"] == "required"
    assert chat["parallel_tool_calls"] is False


def test_a_named_tool_choice_and_an_error_result() -> None:
    body = {
        "tools": [WEATHER],
        "tool_choice": {"type": "tool", "name": "get_weather"},
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t",
                        "is_error": True,
                        "content": [{"type": "text", "text": "no such city"}],
                    }
                ],
            }
        ],
    }
    chat = to_chat(body)
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert chat["messages"] == [
        {"role": "tool", "tool_call_id": "t", "content": "Error: no such city"}
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
        {"messages": [{"role": "system", "content": "x"}]},
        {"messages": [], "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
        {"messages": [], "tool_choice": {"type": "sometimes"}},
        {"messages": [], "tool_choice": {"type": ["auto"]}},  # unhashable: was a 500
        {"messages": [], "tool_choice": {"type": {"auto": 1}}},
    ],
)
def test_what_a_chat_upstream_cannot_take_is_a_bad_request(body: dict[str, Any]) -> None:
    with pytest.raises(BadRequest):
        to_chat(body)


# -- answer: chat completion -> Message ---------------------------------------------------


def test_a_chat_completion_becomes_a_message() -> None:
    completion = {
        "id": "chatcmpl-1",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                        }
                    ],
                },
            }
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
    }
    message = to_message(completion, "up-model")
    assert message == {
        "id": "chatcmpl-1",
        "type": "message",
        "role": "assistant",
        "model": "up-model",
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 20, "output_tokens": 5},
    }
    assert to_message({"object": "list"}, "m") is None


@pytest.mark.parametrize(
    ("finish", "stop"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
    ],
)
def test_finish_reasons_become_stop_reasons(finish: str | None, stop: str) -> None:
    completion = {"choices": [{"finish_reason": finish, "message": {"content": "x"}}]}
    message = to_message(completion, "m")
    assert message is not None and message["stop_reason"] == stop


def test_odd_tool_calls_from_a_chat_upstream_are_none_not_a_failure() -> None:
    """A chat upstream's tool_calls that were not a list made a 500 (found by the odd
    upstreams of tests/gateway/http/test_odd_upstreams_e2e.py)."""
    for odd in (True, 1.5, "x", {"a": 1}):
        completion = {"choices": [{"message": {"content": "x", "tool_calls": odd}}]}
        message = to_message(completion, "m")
        assert message is not None and message["content"] == [{"type": "text", "text": "x"}]


def test_anthropic_usage_counts_cached_tokens_in_the_prompt_and_apart() -> None:
    usage = message_usage(
        {
            "input_tokens": 10,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 200,
            "output_tokens": 7,
        }
    )
    assert usage == Usage(1210, 7, cached_tokens=1000, cache_write_tokens=200)
    assert message_usage(None) is None


class _Chat(Provider):
    """A chat upstream that answers from a script, and remembers what it was sent."""

    endpoints = frozenset({Endpoint.CHAT})

    def __init__(self, reply: dict[str, Any]) -> None:
        super().__init__("chatty")
        self.reply = reply
        self.calls: list[Call] = []

    async def send(self, call: Call) -> Reply:
        self.calls.append(call)
        return Reply(self.reply, Usage.from_openai(self.reply.get("usage")))


class _Script(ChunkStream):
    def __init__(self, batches: list[list[Chunk]]) -> None:
        self._batches = batches
        self.closed = False

    async def batches(self) -> AsyncIterator[list[Chunk]]:
        for batch in self._batches:
            yield batch
        self.usage = Usage(30, 4)
        self.finish_reason = "tool_calls"
        self.complete = True

    async def aclose(self) -> None:
        self.closed = True


async def test_a_messages_call_is_served_through_chat_completions() -> None:
    completion = {
        "id": "x",
        "choices": [{"finish_reason": "stop", "message": {"content": "Hi!"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
    }
    chat = _Chat(completion)
    body = {"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    reply = await messages_via_chat(chat, Call(Endpoint.MESSAGES, body, "up-model"))
    assert [c.endpoint for c in chat.calls] == [Endpoint.CHAT]
    assert chat.calls[0].body["messages"] == [{"role": "user", "content": "hi"}]
    assert reply.body["content"] == [{"type": "text", "text": "Hi!"}]
    assert reply.usage == Usage(3, 2)
    counted = await messages_via_chat(chat, Call(Endpoint.COUNT_TOKENS, body, "up-model"))
    assert counted.body == {"input_tokens": 1}  # "hi": four characters a token, at least one
    assert len(chat.calls) == 1  # an estimate: the upstream is not asked
    tools = [{"name": "lookup", "input_schema": {"type": "object"}}]
    with_tools = await messages_via_chat(
        chat, Call(Endpoint.COUNT_TOKENS, {**body, "tools": tools}, "up-model")
    )
    assert with_tools.body["input_tokens"] == -(-(2 + len(orjson.dumps(tools))) // 4)


def _chunk(delta: dict[str, Any], finish: str | None = None) -> Chunk:
    return (None, {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


async def test_a_chat_stream_becomes_anthropics_event_sequence() -> None:
    call = {"index": 0, "id": "call_1", "type": "function"}
    batches = [
        [_chunk({"role": "assistant", "content": ""}), _chunk({"content": "Look"})],
        [_chunk({"content": "ing."})],
        [_chunk({"tool_calls": [{**call, "function": {"name": "get_weather", "arguments": ""}}]})],
        [_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city"'}}]})],
        [_chunk({"tool_calls": [{"index": 0, "function": {"arguments": ':"Oslo"}'}}]})],
        [_chunk({}, "tool_calls")],
    ]
    events = MessageEvents(_Script(batches), "up-model")
    out = [chunk async for chunk in events]
    names = [name for name, _ in out]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in out)
    assert out[1][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert out[5][1]["content_block"] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "get_weather",
        "input": {},
    }
    partial = "".join(
        d["delta"]["partial_json"] for n, d in out if d.get("index") == 1 and n.endswith("delta")
    )
    assert orjson.loads(partial) == {"city": "Oslo"}
    assert out[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"input_tokens": 30, "output_tokens": 4},
    }
    assert events.complete and events.usage == Usage(30, 4)


async def test_odd_tool_calls_in_a_chat_stream_are_none_not_a_failure() -> None:
    batches = [[_chunk({"content": "x", "tool_calls": True})], [_chunk({}, "stop")]]
    events = MessageEvents(_Script(batches), "up-model")
    names = [name async for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "content_block_delta"]
    assert names[-1] == "message_stop"


# -- native: an Anthropic upstream gets the client's body ---------------------------------


@respx.mock
async def test_an_anthropic_upstream_gets_the_body_as_it_came() -> None:
    reply = {
        **TEXT_REPLY,
        "usage": {"input_tokens": 5, "cache_read_input_tokens": 900, "output_tokens": 3},
    }
    route = respx.post(URL).mock(return_value=httpx.Response(200, json=reply))
    body = {
        "model": "claude",
        "max_tokens": 50,
        "system": [{"type": "text", "text": "Long.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "hi"}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    provider = make_provider()
    try:
        answer = await provider.send(Call(Endpoint.MESSAGES, body, MODEL))
    finally:
        await provider.aclose()
    assert sent(route) == {**body, "model": MODEL}
    assert answer.body == reply
    assert answer.usage == Usage(905, 3, cached_tokens=900)


@respx.mock
async def test_an_anthropic_stream_passes_through_with_its_usage() -> None:
    events = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "content": [],
                "usage": {
                    "input_tokens": 4,
                    "cache_creation_input_tokens": 100,
                    "output_tokens": 1,
                },
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Yo"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 9},
        },
        {"type": "message_stop"},
    ]
    raw = b"".join(
        b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events
    )
    route = respx.post(URL).mock(return_value=httpx.Response(200, content=raw))
    body = {"model": "claude", "max_tokens": 5, "stream": True, "messages": []}
    provider = make_provider()
    try:
        stream = await provider.stream(Call(Endpoint.MESSAGES, body, MODEL, stream=True))
        out = [chunk async for chunk in stream]
        await stream.aclose()
    finally:
        await provider.aclose()
    assert sent(route)["stream"] is True
    assert out == [(e["type"], e) for e in events]
    assert stream.complete
    assert stream.usage == Usage(104, 9, cache_write_tokens=100)
    assert stream.finish_reason == "stop"


@respx.mock
async def test_count_tokens_goes_to_anthropics_counter() -> None:
    route = respx.post(URL + "/count_tokens").mock(
        return_value=httpx.Response(200, json={"input_tokens": 42})
    )
    provider = make_provider()
    try:
        body = {"model": "claude", "messages": [{"role": "user", "content": "hi"}]}
        reply = await provider.send(Call(Endpoint.COUNT_TOKENS, body, MODEL))
    finally:
        await provider.aclose()
    assert reply.body == {"input_tokens": 42}
    assert sent(route)["model"] == MODEL
