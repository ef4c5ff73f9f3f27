"""Misbehaving upstreams: odd JSON where lists, objects, strings and numbers belong, in
replies and in stream events, OpenAI's and Anthropic's, asked through both APIs. Whatever
an upstream sends, the client gets an answer or an error in its API's shape (never a
500) and the log holds no traceback. Sending such shapes found two failures: JSON nested
deeper than can be written again, and an Anthropic reply whose content was a number."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import upstream_config
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream

ODD = ["1e400", '"\\ud800"', "null", "true", "[]", "{}", '""', "-1", "1.5", '"x"', "[{}]"]
ODD += ["[" * 300 + "]" * 300]  # deeper than orjson writes (254)
HI = [{"role": "user", "content": "hi"}]
CHAT = {"model": "alpha", "messages": HI}
MESSAGES = {"model": "alpha", "max_tokens": 5, "messages": HI}
CLAUDE = {**MESSAGES, "model": "sonnet"}

_CHOICE = '{"index":0,"message":{"role":"assistant","content":"x"},"finish_reason":"stop"}'
REPLIES = [  # an OpenAI chat completion with one odd value
    '{"id":"c","object":"chat.completion","choices":%s}',
    '{"id":"c","object":"chat.completion","choices":[{"index":0,"message":%s}]}',
    '{"id":"c","object":"chat.completion","choices":[{"message":{"content":%s}}]}',
    '{"id":"c","object":"chat.completion","choices":[{"message":{"tool_calls":%s}}]}',
    '{"id":"c","object":"chat.completion","choices":[' + _CHOICE + '],"usage":%s}',
    '{"id":%s,"object":"chat.completion","model":%s,"choices":[' + _CHOICE + "]}",
]
_USAGE = '"usage":{"input_tokens":1,"output_tokens":1}'
MESSAGE_REPLIES = [  # an Anthropic Message with one odd value
    '{"id":"m","type":"message","role":"assistant","content":%s,' + _USAGE + "}",
    '{"id":"m","type":"message","role":"assistant","content":[%s],' + _USAGE + "}",
    '{"id":"m","type":"message","content":[{"type":"text","text":%s}],' + _USAGE + "}",
    '{"id":"m","type":"message","content":[{"type":"tool_use","input":%s}],' + _USAGE + "}",
    '{"id":"m","type":"message","content":[],"stop_reason":%s,"usage":%s}',
]
_CHUNK = (
    '{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hey"}}]}'
)
CHUNKS = [  # an OpenAI stream event with one odd value, after a good one
    '{"id":"c","object":"chat.completion.chunk","choices":%s}',
    '{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":%s}]}',
    '{"id":"c","object":"chat.completion.chunk","choices":[{"delta":{"content":%s}}]}',
    '{"id":"c","object":"chat.completion.chunk","choices":[{"delta":{"tool_calls":%s}}]}',
    '{"id":"c","object":"chat.completion.chunk","choices":[],"usage":%s}',
    "%s",
]


_START = (
    '{"type":"message_start","message":{"id":"m","type":"message","role":"assistant",'
    '"content":[],"usage":{"input_tokens":3,"output_tokens":0}}}'
)
_TEXT = '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}'
EVENTS = [  # an Anthropic stream with one odd value, as (event name, data) pairs
    [("message_start", '{"type":"message_start","message":%s}')],
    [("message_start", _START), ("content_block_start", _TEXT),
     ("content_block_delta", '{"type":"content_block_delta","index":0,"delta":%s}')],
    [("message_start", _START), ("content_block_start", _TEXT),
     ("content_block_delta",
      '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":%s}}')],
    [("message_start", _START),
     ("message_delta", '{"type":"message_delta","delta":{"stop_reason":%s},"usage":%s}')],
]  # fmt: skip


@pytest.fixture(scope="module")
def gw(up: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    # Never blacklisted: every odd answer must reach the client (a blacklisted model's
    # 503s would pass these tests without asking the upstream at all).
    selection = {"exploration_rate": 0, "exploration_bonus": 0, "blacklist_threshold": 10**6}
    config = upstream_config(up, selection=selection)
    config["server"]["api_keys"] = []  # open: these tests are about the upstream
    config["providers"].append(
        {"name": "claude", "type": "anthropic", "base_url": up.url.removesuffix("/v1")}
    )
    config["models"].append({"name": "sonnet", "provider": "claude", "upstream_model": "s-up"})
    for model in config["models"]:
        if model["name"] == "alpha":
            model["fallbacks"] = []  # each odd answer is the client's to see
    with GatewayProcess(config, tmp_path_factory.mktemp("odd-upstreams")) as process:
        yield process


def ask(
    gw: GatewayProcess, up: FakeUpstream, path: str, body: dict[str, Any], stream: bool = False
) -> None:
    """One request: an answer or an error in the shape of the API asked, never a 500."""
    asked = len(up.seen)
    with httpx.stream("POST", gw.url + path, json={**body, "stream": stream}, timeout=10) as r:
        raw = r.read()
    assert len(up.seen) == asked + 1  # the odd answer was the upstream's
    assert r.status_code < 500 or r.status_code in (502, 503, 504), raw[:300]
    if r.status_code >= 400:
        error = r.json()
        if path == "/v1/messages":
            assert error["type"] == "error" and error["error"]["type"], error
        else:
            assert error["error"]["message"], error


def replies(up: FakeUpstream, model: str, templates: list[str]) -> Iterator[None]:
    for template, odd in itertools.product(templates, ODD):
        up.behave(model, body=template.replace("%s", odd).encode())
        yield


def test_odd_replies_are_answered_or_refused_in_the_apis_shape(
    gw: GatewayProcess, up: FakeUpstream
) -> None:
    for _ in replies(up, "alpha-up", REPLIES):
        ask(gw, up, "/v1/chat/completions", CHAT)
        ask(gw, up, "/v1/messages", MESSAGES)
    for _ in replies(up, "s-up", MESSAGE_REPLIES):
        ask(gw, up, "/v1/messages", CLAUDE)
        ask(gw, up, "/v1/chat/completions", {**CHAT, "model": "sonnet"})
    assert "Traceback" not in gw.logs()


def test_odd_stream_events_end_the_stream_in_the_apis_shape(
    gw: GatewayProcess, up: FakeUpstream
) -> None:
    sse = {"content-type": "text/event-stream"}
    for template, odd in itertools.product(CHUNKS, ODD):
        event = template.replace("%s", odd)
        body = f"data: {_CHUNK}\n\ndata: {event}\n\ndata: [DONE]\n\n".encode()
        up.behave("alpha-up", body=body, headers=sse)
        ask(gw, up, "/v1/chat/completions", CHAT, stream=True)
        ask(gw, up, "/v1/messages", MESSAGES, stream=True)
        up.behave("alpha-up", body=f"data: {event}\n\ndata: [DONE]\n\n".encode(), headers=sse)
        ask(gw, up, "/v1/chat/completions", CHAT, stream=True)
    assert "Traceback" not in gw.logs()


def test_odd_anthropic_stream_events_end_the_stream_in_the_apis_shape(
    gw: GatewayProcess, up: FakeUpstream
) -> None:
    sse = {"content-type": "text/event-stream"}
    stop = ("message_stop", '{"type":"message_stop"}')
    for events, odd in itertools.product(EVENTS, ODD):
        sent = [(name, data.replace("%s", odd)) for name, data in events]
        body = "".join(f"event: {name}\ndata: {data}\n\n" for name, data in [*sent, stop])
        up.behave("s-up", body=body.encode(), headers=sse)
        ask(gw, up, "/v1/messages", CLAUDE, stream=True)
        ask(gw, up, "/v1/chat/completions", {**CHAT, "model": "sonnet"}, stream=True)
    assert "Traceback" not in gw.logs()
