"""AnthropicProvider: OpenAI chat bodies in, Anthropic Messages on the wire, OpenAI out."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import respx

from gateway.types import Endpoint
from providers.anthropic import AnthropicProvider
from providers.base import Call, ProviderError, Usage
from providers.transport import HttpxTransport

BASE = "https://api.anthropic.com"
URL = f"{BASE}/v1/messages"
KEY = "sk-ant-api03-SECRETSECRETSECRET"
MODEL = "claude-sonnet-4-5-20250929"

TEXT_REPLY = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": MODEL,
    "content": [{"type": "text", "text": "Hello! How can I help you today?"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 12,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 10,
    },
}

TOOL_REPLY = {
    "id": "msg_01Aq9w938a90dw8q",
    "type": "message",
    "role": "assistant",
    "model": MODEL,
    "content": [
        {
            "type": "tool_use",
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "get_weather",
            "input": {"location": "San Francisco, CA", "unit": "celsius"},
        }
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 100,
        "cache_creation_input_tokens": 20,
        "cache_read_input_tokens": 30,
        "output_tokens": 40,
    },
}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(
        b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events
    )


MESSAGE_START = {
    "type": "message_start",
    "message": {
        "id": "msg_014p7gG3wDgGV9EUtLvnow3U",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 472, "cache_read_input_tokens": 8, "output_tokens": 2},
    },
}
TEXT_STREAM = sse(
    MESSAGE_START,
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo!"}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 15},
    },
    {"type": "message_stop"},
)
TOOL_STREAM = sse(
    MESSAGE_START,
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Ok."}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "content_block_start",
        "index": 1,
        "content_block": {
            "type": "tool_use",
            "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "name": "get_weather",
            "input": {},
        },
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": ""},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": '{"location": "San Fra'},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": 'ncisco, CA"}'},
    },
    {"type": "content_block_stop", "index": 1},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 89},
    },
    {"type": "message_stop"},
)


@pytest.fixture
async def provider() -> AsyncIterator[AnthropicProvider]:
    p = AnthropicProvider(
        "claude", BASE + "/", HttpxTransport(), api_key=KEY, headers={"x-extra": "1"}
    )
    yield p
    await p.aclose()


def chat(body: dict[str, Any], stream: bool = False) -> Call:
    return Call(Endpoint.CHAT, body, upstream_model=MODEL, stream=stream)


def sent(route: respx.Route) -> dict[str, Any]:
    return orjson.loads(route.calls.last.request.content)


async def translate(provider: AnthropicProvider, body: dict[str, Any]) -> dict[str, Any]:
    with respx.mock:
        route = respx.post(URL).mock(return_value=httpx.Response(200, json=TEXT_REPLY))
        await provider.send(chat(body))
    return sent(route)


# --- request translation ----------------------------------------------------------------


async def test_request_headers_url_model_and_defaults(provider):
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}
    original = copy.deepcopy(body)
    with respx.mock:
        route = respx.post(URL).mock(return_value=httpx.Response(200, json=TEXT_REPLY))
        await provider.send(chat(body))
    request = route.calls.last.request
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-extra"] == "1"
    assert "authorization" not in request.headers
    assert sent(route) == {
        "model": MODEL,
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
    }
    assert body == original


async def test_custom_version_header():
    p = AnthropicProvider("c", BASE, HttpxTransport(), api_key=KEY, version="2024-01-01")
    try:
        with respx.mock:
            route = respx.post(URL).mock(return_value=httpx.Response(200, json=TEXT_REPLY))
            await p.send(chat({"messages": [{"role": "user", "content": "x"}]}))
        assert route.calls.last.request.headers["anthropic-version"] == "2024-01-01"
    finally:
        await p.aclose()


async def test_system_developer_and_role_merging(provider):
    out = await translate(
        provider,
        {
            "messages": [
                {"role": "system", "content": "Be terse."},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
                {"role": "user", "content": "One"},
                {"role": "user", "content": [{"type": "text", "text": "Two"}]},
                {"role": "assistant", "content": "Un, deux"},
                {"role": "assistant", "content": "..."},
                {"role": "user", "content": "Three"},
            ]
        },
    )
    assert out["system"] == "Be terse.\n\nAnswer in French."
    assert out["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "One"}, {"type": "text", "text": "Two"}],
        },
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Un, deux"}, {"type": "text", "text": "..."}],
        },
        {"role": "user", "content": [{"type": "text", "text": "Three"}]},
    ]


async def test_images_data_url_and_http_url(provider):
    out = await translate(
        provider,
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Compare"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                        },
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"},
                        },
                    ],
                }
            ]
        },
    )
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "Compare"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


async def test_tools_and_tool_call_round_trip(provider):
    out = await translate(
        provider,
        {
            "messages": [
                {"role": "user", "content": "Weather in SF and NYC?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "toolu_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"location": "SF"}'},
                        },
                        {
                            "id": "toolu_2",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"location": "NYC"}'},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "toolu_1", "content": "15C"},
                {"role": "tool", "tool_call_id": "toolu_2", "content": "20C"},
            ],
            "tools": [WEATHER_TOOL, {"type": "function", "function": {"name": "now"}}],
        },
    )
    assert out["tools"] == [
        {
            "name": "get_weather",
            "description": "Get the current weather in a given location",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        },
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in out
    assert out["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"location": "SF"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_2",
                    "name": "get_weather",
                    "input": {"location": "NYC"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "15C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "20C"},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        ("auto", False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ],
)
async def test_tool_choice_variants(provider, choice, parallel, expected):
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [WEATHER_TOOL],
    }
    if choice is not None:
        body["tool_choice"] = choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    assert (await translate(provider, body))["tool_choice"] == expected


async def test_sampling_stop_user_and_max_tokens(provider):
    out = await translate(
        provider,
        {
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 50,
            "temperature": 0.3,
            "top_p": 0.9,
            "stop": "END",
            "user": "user-42",
            "stream": False,
        },
    )
    assert out["max_tokens"] == 50
    assert out["temperature"] == 0.3
    assert out["top_p"] == 0.9
    assert out["stop_sequences"] == ["END"]
    assert out["metadata"] == {"user_id": "user-42"}
    assert "stream" not in out

    out = await translate(
        provider,
        {
            "messages": [{"role": "user", "content": "hi"}],
            "max_completion_tokens": 77,
            "stop": ["a", "b"],
            "temperature": 1.7,
        },
    )
    assert out["max_tokens"] == 77
    assert out["stop_sequences"] == ["a", "b"]
    assert out["temperature"] == 1  # clamped to Anthropic's range


async def test_invalid_tool_arguments_is_bad_request(provider):
    body = {
        "messages": [
            {"role": "user", "content": "x"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
                ],
            },
        ]
    }
    with respx.mock:
        route = respx.post(URL).mock(return_value=httpx.Response(200, json=TEXT_REPLY))
        with pytest.raises(ProviderError) as info:
            await provider.send(chat(body))
    assert info.value.kind == "bad_request"
    assert not route.called


@pytest.mark.parametrize(
    "url", ["ftp://example.com/cat.png", "data:image/png,notbase64", "data:;base64,AAAA"]
)
async def test_bad_image_urls_are_bad_requests(provider, url):
    body = {
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}
        ]
    }
    with pytest.raises(ProviderError) as info:
        await provider.send(chat(body))
    assert info.value.kind == "bad_request"


# --- response translation ---------------------------------------------------------------


async def test_text_response(provider):
    with respx.mock:
        respx.post(URL).mock(return_value=httpx.Response(200, json=TEXT_REPLY))
        reply = await provider.send(chat({"messages": [{"role": "user", "content": "Hi"}]}))
    body = reply.body
    assert body["id"] == TEXT_REPLY["id"]
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["model"] == MODEL
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert body["usage"] == {"prompt_tokens": 12, "completion_tokens": 10, "total_tokens": 22}
    assert reply.usage == Usage(12, 10)


async def test_tool_use_response_counts_cached_tokens(provider):
    with respx.mock:
        respx.post(URL).mock(return_value=httpx.Response(200, json=TOOL_REPLY))
        reply = await provider.send(chat({"messages": [{"role": "user", "content": "Weather?"}]}))
    choice = reply.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["id"] == "toolu_01A09q90qw90lq917835lq9"
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {
        "location": "San Francisco, CA",
        "unit": "celsius",
    }
    assert reply.body["usage"] == {
        "prompt_tokens": 150,
        "completion_tokens": 40,
        "total_tokens": 190,
    }
    assert reply.usage == Usage(150, 40)


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("something_new", "stop"),
    ],
)
async def test_finish_reasons(provider, stop, finish):
    with respx.mock:
        respx.post(URL).mock(
            return_value=httpx.Response(200, json={**TEXT_REPLY, "stop_reason": stop})
        )
        reply = await provider.send(chat({"messages": [{"role": "user", "content": "Hi"}]}))
    assert reply.body["choices"][0]["finish_reason"] == finish


# --- errors -----------------------------------------------------------------------------


def error_body(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind"),
    [
        (400, error_body("invalid_request_error", "messages: field required"), {}, "bad_request"),
        (
            400,
            error_body(
                "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"
            ),
            {},
            "context_length",
        ),
        (401, error_body("authentication_error", f"invalid x-api-key {KEY}"), {}, "auth"),
        (
            429,
            error_body("rate_limit_error", "Number of request tokens has exceeded"),
            {"retry-after": "7"},
            "rate_limited",
        ),
        (529, error_body("overloaded_error", "Overloaded"), {}, "server_error"),
    ],
)
async def test_error_classification(provider, status, body, headers, kind):
    with respx.mock:
        respx.post(URL).mock(return_value=httpx.Response(status, json=body, headers=headers))
        with pytest.raises(ProviderError) as info:
            await provider.send(chat({"messages": [{"role": "user", "content": "Hi"}]}))
    err = info.value
    assert err.kind == kind
    assert err.status == status
    assert KEY not in str(err)
    if status == 429:
        assert err.retry_after == 7.0


async def test_non_json_200_is_invalid_body(provider):
    with respx.mock:
        respx.post(URL).mock(return_value=httpx.Response(200, content=b"<html>gateway</html>"))
        with pytest.raises(ProviderError) as info:
            await provider.send(chat({"messages": [{"role": "user", "content": "Hi"}]}))
    assert info.value.kind == "invalid_body"


async def test_unexpected_json_200_is_invalid_body(provider):
    with respx.mock:
        respx.post(URL).mock(return_value=httpx.Response(200, json={"hello": "world"}))
        with pytest.raises(ProviderError) as info:
            await provider.send(chat({"messages": [{"role": "user", "content": "Hi"}]}))
    assert info.value.kind == "invalid_body"


async def test_connection_error(provider):
    with respx.mock:
        respx.post(URL).mock(side_effect=httpx.ConnectError("refused"))
        with pytest.raises(ProviderError) as info:
            await provider.send(chat({"messages": [{"role": "user", "content": "Hi"}]}))
    assert info.value.kind == "connection"
    assert KEY not in str(info.value)


async def test_unsupported_endpoint(provider):
    assert provider.supports(Endpoint.CHAT)
    assert not provider.supports(Endpoint.EMBEDDINGS)
    with pytest.raises(ProviderError) as info:
        await provider.send(Call(Endpoint.EMBEDDINGS, {"input": "x"}, upstream_model=MODEL))
    assert info.value.kind == "unsupported"
    with pytest.raises(ProviderError) as info:
        await provider.stream(Call(Endpoint.COMPLETIONS, {"prompt": "x"}, upstream_model=MODEL))
    assert info.value.kind == "unsupported"


# --- streaming --------------------------------------------------------------------------


async def collect(provider: AnthropicProvider, payload: bytes, body: dict[str, Any] | None = None):
    body = body or {"messages": [{"role": "user", "content": "Hi"}], "stream": True}
    with respx.mock:
        route = respx.post(URL).mock(
            return_value=httpx.Response(
                200, content=payload, headers={"content-type": "text/event-stream"}
            )
        )
        stream = await provider.stream(chat(body, stream=True))
        try:
            chunks = [chunk async for chunk in stream]
        finally:
            await stream.aclose()
    return stream, chunks, sent(route)


async def test_stream_text(provider):
    stream, chunks, request = await collect(provider, TEXT_STREAM)
    assert request["stream"] is True
    assert all(name is None for name, _ in chunks)
    data = [chunk for _, chunk in chunks]
    for chunk in data:
        assert chunk["id"] == "msg_014p7gG3wDgGV9EUtLvnow3U"
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == MODEL
        assert isinstance(chunk["created"], int)
        assert "usage" not in chunk
    choices = [chunk["choices"][0] for chunk in data]
    assert choices == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        },
        {"index": 0, "delta": {"content": "Hel"}, "logprobs": None, "finish_reason": None},
        {"index": 0, "delta": {"content": "lo!"}, "logprobs": None, "finish_reason": None},
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"},
    ]
    assert stream.finish_reason == "stop"
    assert stream.usage == Usage(480, 15)


async def test_stream_tool_use(provider):
    stream, chunks, _ = await collect(provider, TOOL_STREAM)
    deltas = [chunk["choices"][0]["delta"] for _, chunk in chunks]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "Ok."},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"location": "San Fra'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": 'ncisco, CA"}'}}]},
        {},
    ]
    assert chunks[-1][1]["choices"][0]["finish_reason"] == "tool_calls"
    assert stream.finish_reason == "tool_calls"
    assert stream.usage == Usage(480, 89)


async def test_stream_include_usage_final_chunk(provider):
    body = {
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    _, chunks, request = await collect(provider, TEXT_STREAM, body)
    assert "stream_options" not in request
    final = chunks[-1][1]
    assert final["choices"] == []
    assert final["usage"] == {"prompt_tokens": 480, "completion_tokens": 15, "total_tokens": 495}
    assert final["id"] == "msg_014p7gG3wDgGV9EUtLvnow3U"
    assert all(chunk["usage"] is None for _, chunk in chunks[:-1])
    assert len(chunks) == 5


async def test_stream_events_split_across_reads(provider):
    pieces = [TEXT_STREAM[i : i + 7] for i in range(0, len(TEXT_STREAM), 7)]

    class Pieces(httpx.AsyncByteStream):
        async def __aiter__(self):
            for piece in pieces:
                yield piece

    with respx.mock:
        respx.post(URL).mock(return_value=httpx.Response(200, stream=Pieces()))
        stream = await provider.stream(
            chat({"messages": [{"role": "user", "content": "Hi"}]}, True)
        )
        text = "".join(
            [chunk["choices"][0]["delta"].get("content", "") async for _, chunk in stream]
        )
        await stream.aclose()
    assert text == "Hello!"


async def test_stream_error_event_raises(provider):
    payload = sse(
        MESSAGE_START,
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )
    seen = []
    with pytest.raises(ProviderError) as info, respx.mock:
        respx.post(URL).mock(return_value=httpx.Response(200, content=payload))
        stream = await provider.stream(
            chat({"messages": [{"role": "user", "content": "Hi"}]}, True)
        )
        try:
            async for _, chunk in stream:
                seen.append(chunk)
        finally:
            await stream.aclose()
    assert info.value.kind == "server_error"
    assert "Overloaded" in info.value.message
    assert len(seen) == 2  # role chunk and "Hi" arrived before the failure


async def test_stream_malformed_event_is_invalid_body(provider):
    payload = sse(MESSAGE_START) + b"event: content_block_delta\ndata: {not json\n\n"
    with pytest.raises(ProviderError) as info:
        await collect(provider, payload)
    assert info.value.kind == "invalid_body"


async def test_stream_truncated_is_invalid_body(provider):
    with pytest.raises(ProviderError) as info:
        await collect(provider, TEXT_STREAM.split(b"event: message_stop")[0])
    assert info.value.kind == "invalid_body"


async def test_stream_http_error_is_classified(provider):
    body = error_body("rate_limit_error", "slow down")
    with respx.mock:
        respx.post(URL).mock(
            return_value=httpx.Response(429, json=body, headers={"retry-after": "3"})
        )
        with pytest.raises(ProviderError) as info:
            await provider.stream(chat({"messages": [{"role": "user", "content": "Hi"}]}, True))
    assert info.value.kind == "rate_limited"
    assert info.value.retry_after == 3.0
    assert "slow down" in info.value.message


async def test_stream_connection_error(provider):
    with respx.mock:
        respx.post(URL).mock(side_effect=httpx.ConnectError("refused"))
        with pytest.raises(ProviderError) as info:
            await provider.stream(chat({"messages": [{"role": "user", "content": "Hi"}]}, True))
    assert info.value.kind == "connection"
