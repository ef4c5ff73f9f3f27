"""AnthropicProvider: OpenAI chat bodies in, Anthropic Messages on the wire, OpenAI out.

Request translation. Responses and errors: test_anthropic_response.py; streaming:
test_anthropic_stream.py.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from providers.anthropic import AnthropicProvider
from providers.errors import ProviderError
from providers.httpx_transport import HttpxTransport
from tests.providers.anthropic_helpers import (
    BASE,
    KEY,
    MODEL,
    TEXT_REPLY,
    URL,
    chat,
    make_provider,
    sent,
)

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


@pytest.fixture
async def provider() -> AsyncIterator[AnthropicProvider]:
    p = make_provider()
    yield p
    await p.aclose()


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


async def test_a_base_url_query_stays_after_the_path():
    p = AnthropicProvider("c", "https://gw.test/anthropic/?tenant=t1", HttpxTransport())
    try:
        with respx.mock:
            url = "https://gw.test/anthropic/v1/messages"
            route = respx.post(url).mock(return_value=httpx.Response(200, json=TEXT_REPLY))
            await p.send(chat({"messages": [{"role": "user", "content": "x"}]}))
        assert route.calls.last.request.url == url + "?tenant=t1"
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
    "change",
    [
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": True}]},
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": 7}]},
        {"messages": [{"role": "user", "content": "x"}], "tools": 5},
    ],
    ids=["tool_calls-true", "tool_calls-int", "tools-int"],
)
async def test_a_field_of_the_wrong_type_is_a_bad_request_not_a_crash(
    provider: AnthropicProvider, change: dict[str, Any]
) -> None:
    """Found by fuzzing a real gateway: iterating a bool or an int was a 500."""
    with pytest.raises(ProviderError) as info:
        await provider.send(chat(change))
    assert info.value.kind == "bad_request"


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
