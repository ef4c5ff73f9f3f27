"""OpenAIProvider streaming over HttpxTransport, with the upstream mocked by respx."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import respx

from providers.base import Endpoint, Usage
from providers.errors import ProviderError, UpstreamTimeout
from providers.openai import OpenAIProvider
from tests.providers.openai_helpers import (
    CHAT,
    KEY,
    USAGE,
    call,
    chunk,
    drain,
    make_provider,
    mock_router,
    sent,
    sse,
    upstream_error,
)  # fmt: skip


@pytest.fixture
async def provider() -> AsyncIterator[OpenAIProvider]:
    async for p in make_provider():
        yield p


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    yield from mock_router()


# -- streaming -------------------------------------------------------------------------


def stream_route(mock: respx.MockRouter, content: bytes, path: str = "/chat/completions"):
    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(content), 7):  # cut events at awkward places
            yield content[i : i + 7]

    return mock.post(path).mock(
        side_effect=lambda request: httpx.Response(
            200, content=pieces(), headers={"content-type": "text/event-stream"}
        )
    )


async def test_include_usage_injected_and_usage_chunk_hidden(provider, mock) -> None:
    body = {**CHAT, "stream_options": {"other": 1}}
    before = copy.deepcopy(body)
    route = stream_route(
        mock,
        sse(
            chunk("Hel", usage=None),
            chunk("lo", usage=None),
            chunk(None, "stop", usage=None),
            {"id": "c", "choices": [], "usage": USAGE},
        ),
    )
    stream = await provider.stream(call(body))
    chunks = await drain(stream)
    assert body == before
    wire = sent(route)
    assert wire["stream"] is True
    assert wire["model"] == "up-model"
    assert wire["stream_options"] == {"other": 1, "include_usage": True}
    assert [c["choices"][0]["delta"] for _, c in chunks] == [
        {"content": "Hel"},
        {"content": "lo"},
        {},
    ]
    assert all("usage" not in c for _, c in chunks)
    assert all(event is None for event, _ in chunks)
    assert stream.usage == Usage(9, 3)
    assert stream.finish_reason == "stop"


async def test_usage_chunk_kept_when_the_client_asked(provider, mock) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    route = stream_route(
        mock,
        sse(
            chunk("a", usage=None),
            chunk(None, "length", usage=None),
            {"choices": [], "usage": USAGE},
        ),
    )
    stream = await provider.stream(call(body))
    chunks = await drain(stream)
    assert sent(route)["stream_options"] == {"include_usage": True}
    assert len(chunks) == 3
    assert chunks[0][1]["usage"] is None
    assert chunks[-1][1] == {"choices": [], "usage": USAGE}
    assert stream.usage == Usage(9, 3)
    assert stream.finish_reason == "length"


async def test_completions_stream_also_gets_usage(provider, mock) -> None:
    route = stream_route(
        mock,
        sse(
            {"choices": [{"text": "x", "finish_reason": "stop"}]},
            {"choices": [], "usage": USAGE},
        ),
        "/completions",
    )
    stream = await provider.stream(call({"model": "m", "prompt": "p"}, Endpoint.COMPLETIONS))
    chunks = await drain(stream)
    assert sent(route)["stream_options"] == {"include_usage": True}
    assert len(chunks) == 1
    assert stream.usage == Usage(9, 3)
    assert stream.finish_reason == "stop"


async def test_done_ends_the_stream(provider, mock) -> None:
    stream_route(mock, sse(chunk("a"), b"[DONE]", chunk("after"), b"not json", done=False))
    chunks = await drain(await provider.stream(call(CHAT)))
    assert [c["choices"][0]["delta"] for _, c in chunks] == [{"content": "a"}]


async def test_an_end_after_the_finish_chunk_without_done_is_complete(provider, mock) -> None:
    stream_route(mock, sse(chunk("a"), chunk(finish="stop"), done=False))
    stream = await provider.stream(call(CHAT))
    chunks = await drain(stream)
    assert len(chunks) == 2 and stream.complete


async def test_an_end_before_the_finish_chunk_is_an_invalid_body(provider, mock) -> None:
    stream_route(mock, sse(chunk("a"), chunk("b"), done=False))
    with pytest.raises(ProviderError) as info:
        await drain(await provider.stream(call(CHAT)))
    assert info.value.kind == "invalid_body"


@pytest.mark.parametrize("bad", [b"{not json", b"[1, 2]", b'"text"'])
async def test_malformed_event_is_invalid_body(provider, mock, bad) -> None:
    stream_route(mock, sse(chunk("a"), bad))
    stream = await provider.stream(call(CHAT))
    seen = []
    with pytest.raises(ProviderError) as info:
        async for item in stream:
            seen.append(item)
    await stream.aclose()
    assert info.value.kind == "invalid_body"
    assert len(seen) == 1


async def test_mid_stream_error_event_is_server_error(provider, mock) -> None:
    stream_route(mock, sse(chunk("a"), {"error": {"message": "model overloaded"}}))
    stream = await provider.stream(call(CHAT))
    with pytest.raises(ProviderError) as info:
        await drain(stream)
    assert info.value.kind == "server_error"
    assert "model overloaded" in info.value.message


async def test_mid_stream_error_event_does_not_leak_the_key(provider, mock) -> None:
    stream_route(mock, sse(chunk("a"), {"error": {"message": f"key {KEY} was revoked"}}))
    stream = await provider.stream(call(CHAT))
    with pytest.raises(ProviderError) as info:
        await drain(stream)
    assert KEY not in info.value.message


async def test_responses_named_events_pass_through_with_usage(provider, mock) -> None:
    usage = {"input_tokens": 12, "output_tokens": 4, "total_tokens": 16}
    events = [
        ("response.created", {"type": "response.created", "response": {"id": "r", "usage": None}}),
        ("response.output_text.delta", {"type": "response.output_text.delta", "delta": "Hi"}),
        ("response.completed", {"type": "response.completed", "response": {"usage": usage}}),
    ]
    route = stream_route(mock, sse(*events, done=False), "/responses")
    body = {"model": "x", "input": "hello"}
    stream = await provider.stream(call(body, Endpoint.RESPONSES))
    chunks = await drain(stream)
    assert "stream_options" not in sent(route)
    assert sent(route)["stream"] is True
    assert chunks == events
    assert stream.usage == Usage(12, 4)


async def test_stream_http_error_is_classified(provider, mock) -> None:
    mock.post("/chat/completions").respond(
        429, json=upstream_error("slow"), headers={"retry-after": "2.5"}
    )
    with pytest.raises(ProviderError) as info:
        await provider.stream(call(CHAT))
    assert info.value.kind == "rate_limited"
    assert info.value.retry_after == 2.5


def stream_reads(mock: respx.MockRouter, reads: list[bytes], path: str = "/chat/completions"):
    async def pieces() -> AsyncIterator[bytes]:
        for read in reads:
            yield read

    return mock.post(path).mock(
        side_effect=lambda request: httpx.Response(
            200, content=pieces(), headers={"content-type": "text/event-stream"}
        )
    )


async def test_batches_follow_the_upstream_reads_and_mark_the_last(provider, mock) -> None:
    first = sse(chunk("a"), chunk("b"), done=False)
    last = sse(chunk(None, "stop"), {"choices": [], "usage": USAGE})  # ends with [DONE]
    stream_reads(mock, [first, last])
    stream = await provider.stream(call(CHAT))
    seen = []
    async for batch in stream.batches():
        seen.append(([c["choices"][0]["delta"] for _, c in batch], stream.complete))
    assert seen == [([{"content": "a"}, {"content": "b"}], False), ([{}], True)]
    assert stream.usage == Usage(9, 3)


async def test_chunks_before_an_error_in_the_same_read_are_still_handed_out(provider, mock) -> None:
    stream_reads(mock, [sse(chunk("a"), {"error": {"message": "overloaded"}}, done=False)])
    stream = await provider.stream(call(CHAT))
    seen = []
    with pytest.raises(ProviderError) as info:
        async for batch in stream.batches():
            seen.append(batch)
    assert [[c["choices"][0]["delta"] for _, c in b] for b in seen] == [[{"content": "a"}]]
    assert info.value.kind == "server_error"
    assert not stream.complete


async def test_a_network_failure_mid_stream_is_the_transports_class(provider, mock) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        yield sse(chunk("a"), done=False)
        raise httpx.ReadTimeout("slow")

    mock.post("/chat/completions").mock(
        side_effect=lambda request: httpx.Response(200, content=pieces())
    )
    stream = await provider.stream(call(CHAT))
    seen = []
    with pytest.raises(UpstreamTimeout) as info:
        async for item in stream:
            seen.append(item)
    await stream.aclose()
    assert info.value.message == "up: stream broke: upstream timed out"
    assert len(seen) == 1


# -- an event not yet whole counts in the worker's memory for bodies -----------------------


@pytest.mark.parametrize(
    ("endpoint", "path"),
    [
        (Endpoint.CHAT, "/chat/completions"),
        (Endpoint.RESPONSES, "/responses"),
        (Endpoint.MESSAGES, "/chat/completions"),  # an Anthropic client's, via chat
    ],
)
async def test_a_large_event_is_charged_to_the_calls_event_memory(
    provider, mock, endpoint: Endpoint, path: str
) -> None:
    """A streamed image's partial frame, a Responses stream's last event: the call's
    `event_memory` is told what the event holds as it grows, and 0 once it is cut."""
    big = "x" * 200_000
    if endpoint is Endpoint.RESPONSES:
        events = sse(
            ("response.output_text.delta", {"type": "response.output_text.delta", "delta": big}),
            ("response.completed", {"type": "response.completed", "response": {}}),
            done=False,
        )
        body: dict = {"input": "hi", "stream": True}
    else:
        events = sse(chunk(big), chunk(None, "stop"))
        body = {**CHAT, "stream": True}
        if endpoint is Endpoint.MESSAGES:
            body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 9}
    stream_route(mock, events, path)
    told: list[int] = []
    stream = await provider.stream(call(body, endpoint, stream=True, event_memory=told.append))
    await drain(stream)
    # Raw and parsed, as it grew; given back at the next read, or with the request's
    # share when the stream ends.
    assert max(told) > 200_000
