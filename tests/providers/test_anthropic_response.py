"""AnthropicProvider: Anthropic Messages replies and errors translated back to OpenAI."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
import respx

from providers.anthropic import AnthropicProvider
from providers.base import Call, Endpoint, Usage
from providers.errors import ProviderError
from tests.providers.anthropic_helpers import (
    KEY,
    MODEL,
    TEXT_REPLY,
    URL,
    chat,
    error_body,
    make_provider,
)

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


@pytest.fixture
async def provider() -> AsyncIterator[AnthropicProvider]:
    p = make_provider()
    yield p
    await p.aclose()


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
