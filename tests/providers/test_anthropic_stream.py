"""AnthropicProvider streaming: Anthropic SSE events in, OpenAI chat.completion.chunk out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import respx

from providers.anthropic import AnthropicProvider
from providers.base import Call, Endpoint, Usage
from providers.errors import ProviderError, UpstreamConnectionError
from tests.providers.anthropic_helpers import MODEL, URL, chat, error_body, make_provider, sent


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
    p = make_provider()
    yield p
    await p.aclose()


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


async def test_one_upstream_read_gives_one_batch_marked_complete(provider):
    with respx.mock:
        respx.post(URL).mock(
            return_value=httpx.Response(
                200, content=TEXT_STREAM, headers={"content-type": "text/event-stream"}
            )
        )
        body = {"messages": [{"role": "user", "content": "Hi"}], "stream": True}
        stream = await provider.stream(chat(body, stream=True))
        try:
            batches = [batch async for batch in stream.batches()]
        finally:
            await stream.aclose()
    assert [len(batch) for batch in batches] == [4]  # role, "Hel", "lo!", finish
    assert stream.complete


async def test_a_network_failure_mid_stream_is_the_transports_class(provider):
    async def pieces() -> AsyncIterator[bytes]:
        yield sse(MESSAGE_START)
        raise httpx.ReadError("connection reset")

    seen = []
    with respx.mock:
        respx.post(URL).mock(side_effect=lambda request: httpx.Response(200, content=pieces()))
        body = {"messages": [{"role": "user", "content": "Hi"}]}
        stream = await provider.stream(chat(body, True))
        try:
            with pytest.raises(UpstreamConnectionError) as info:
                async for _, chunk in stream:
                    seen.append(chunk)
        finally:
            await stream.aclose()
    assert info.value.message == "claude: stream broke: upstream connection failed: ReadError"
    assert len(seen) == 1  # the role chunk arrived before the failure


@pytest.mark.parametrize("native", [False, True], ids=["chat", "messages"])
async def test_a_large_event_is_charged_to_the_calls_event_memory(provider, native: bool) -> None:
    big = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "x" * 200_000},
    }
    payload = TEXT_STREAM.replace(
        b"event: ping\ndata: " + orjson.dumps({"type": "ping"}),
        b"event: content_block_delta\ndata: " + orjson.dumps(big),
    )
    assert payload != TEXT_STREAM
    told: list[int] = []

    async def reads() -> AsyncIterator[bytes]:  # as the network cuts it
        for i in range(0, len(payload), 16_384):
            yield payload[i : i + 16_384]

    endpoint = Endpoint.MESSAGES if native else Endpoint.CHAT
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 9, "stream": True}
    call = Call(endpoint, body, MODEL, stream=True, event_memory=told.append)
    with respx.mock:
        respx.post(URL).mock(
            side_effect=lambda request: httpx.Response(
                200, content=reads(), headers={"content-type": "text/event-stream"}
            )
        )
        stream = await provider.stream(call)
        try:
            texts = [c async for c in stream]
        finally:
            await stream.aclose()
    assert len(texts) > 3
    # Raw and parsed, as it grew; given back at the next read, or with the request's
    # share when the stream ends.
    assert max(told) > 200_000
