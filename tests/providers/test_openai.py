"""OpenAIProvider over HttpxTransport, with the upstream mocked by respx."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import respx

from gateway.types import Endpoint
from providers.base import Call, ProviderError, Usage
from providers.openai import OpenAIProvider
from providers.transport import HttpxTransport

BASE = "https://upstream.test/v1"
KEY = "sk-test-SECRETKEY1234567890"
CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
CHAT_REPLY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
}


@pytest.fixture
async def provider() -> AsyncIterator[OpenAIProvider]:
    p = OpenAIProvider("up", BASE + "/", HttpxTransport(), api_key=KEY, headers={"x-org": "o1"})
    yield p
    await p.aclose()


@pytest.fixture
def mock() -> respx.MockRouter:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


def call(body: dict[str, Any], endpoint: Endpoint = Endpoint.CHAT, **kw: Any) -> Call:
    return Call(endpoint, body, "up-model", **kw)


def sse(*events: Any, done: bool = True) -> bytes:
    out = b""
    for event in events:
        if isinstance(event, tuple):
            name, data = event
            out += f"event: {name}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n"
        elif isinstance(event, bytes):
            out += b"data: " + event + b"\n\n"
        else:
            out += b"data: " + orjson.dumps(event) + b"\n\n"
    return out + (b"data: [DONE]\n\n" if done else b"")


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> dict:
    delta = {"content": content} if content is not None else {}
    return {"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


USAGE = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}


async def drain(stream: Any) -> list[tuple[str | None, dict[str, Any]]]:
    try:
        return [item async for item in stream]
    finally:
        await stream.aclose()


def sent(route: respx.Route, index: int = -1) -> dict[str, Any]:
    return orjson.loads(route.calls[index].request.content)


# -- request shape ---------------------------------------------------------------------


async def test_model_rewritten_fields_kept_body_untouched_headers_sent(provider, mock) -> None:
    route = mock.post("/chat/completions").respond(200, json=CHAT_REPLY)
    body = {**CHAT, "temperature": 0.2, "brand_new": {"x": [1]}, "user": "u1"}
    before = copy.deepcopy(body)
    reply = await provider.send(call(body))
    assert body == before
    assert sent(route) == {**before, "model": "up-model"}
    request = route.calls.last.request
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["x-org"] == "o1"
    assert request.headers["content-type"] == "application/json"
    assert reply.body == CHAT_REPLY
    assert reply.usage == Usage(5, 2)


async def test_no_authorization_without_a_key(mock) -> None:
    route = mock.post("/embeddings").respond(200, json={"data": [], "usage": {"prompt_tokens": 3}})
    p = OpenAIProvider("local", BASE, HttpxTransport())
    try:
        reply = await p.send(call({"model": "e", "input": "x"}, Endpoint.EMBEDDINGS))
    finally:
        await p.aclose()
    assert "authorization" not in route.calls.last.request.headers
    assert reply.usage == Usage(3, 0)


@pytest.mark.parametrize(
    ("endpoint", "path", "reply", "usage"),
    [
        (Endpoint.COMPLETIONS, "/completions", {"usage": USAGE}, Usage(9, 3)),
        (Endpoint.IMAGES, "/images/generations", {"data": [{}, {}]}, Usage(images=2)),
        (Endpoint.VIDEOS, "/videos", {"id": "v1", "seconds": "8"}, Usage(seconds=8.0)),
        (Endpoint.RESPONSES, "/responses", {"usage": {"input_tokens": 4, "output_tokens": 1}},
         Usage(4, 1)),
    ],
)  # fmt: skip
async def test_paths_and_usage(provider, mock, endpoint, path, reply, usage) -> None:
    route = mock.post(path).respond(200, json=reply)
    result = await provider.send(call({"model": "x", "prompt": "p"}, endpoint))
    assert route.called
    assert result.usage == usage


async def test_video_status_is_a_get_to_videos_id(provider, mock) -> None:
    route = mock.get("/videos/video_abc").respond(200, json={"id": "video_abc", "seconds": "4"})
    reply = await provider.send(call({}, Endpoint.VIDEO_STATUS, resource_id="video_abc"))
    request = route.calls.last.request
    assert request.method == "GET"
    assert request.content == b""
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["x-org"] == "o1"
    assert "content-type" not in request.headers
    assert reply.body["id"] == "video_abc"


async def test_speech_binary_passes_bytes_and_content_type(provider, mock) -> None:
    audio = b"ID3\x04\x00" + bytes(range(256)) * 8
    route = mock.post("/audio/speech").respond(
        200, content=audio, headers={"content-type": "audio/mpeg"}
    )
    body = {"model": "tts", "input": "hello", "voice": "alloy"}
    reply = await provider.binary(call(body, Endpoint.SPEECH))
    try:
        data = b"".join([piece async for piece in reply])
    finally:
        await reply.aclose()
    assert reply.media_type == "audio/mpeg"
    assert data == audio
    assert sent(route) == {**body, "model": "up-model"}


# -- errors ----------------------------------------------------------------------------


def upstream_error(message: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (500, upstream_error("boom"), "server_error"),
        (502, b"<html>bad gateway</html>", "server_error"),
        (503, upstream_error("overloaded"), "server_error"),
        (401, upstream_error("Invalid API key"), "auth"),
        (403, upstream_error("Forbidden"), "auth"),
        (404, upstream_error("The model does not exist"), "not_found"),
        (400, upstream_error("bad temperature"), "bad_request"),
        (422, upstream_error("unprocessable"), "bad_request"),
        (400, upstream_error("too long", "context_length_exceeded"), "context_length"),
        (400, upstream_error("This model's maximum context length is 8192 tokens"),
         "context_length"),
        (408, upstream_error("slow"), "timeout"),
    ],
)  # fmt: skip
async def test_status_classification(provider, mock, status, body, kind) -> None:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    mock.post("/chat/completions").respond(status, content=content)
    with pytest.raises(ProviderError) as info:
        await provider.send(call(CHAT))
    assert info.value.kind == kind
    assert info.value.status == status
    assert info.value.message.startswith(f"up returned HTTP {status}")


@pytest.mark.parametrize(("header", "expected"), [("7", 7.0), ("0.5", 0.5), (None, None)])
async def test_rate_limited_with_retry_after(provider, mock, header, expected) -> None:
    headers = {"Retry-After": header} if header else {}
    mock.post("/chat/completions").respond(429, json=upstream_error("slow"), headers=headers)
    with pytest.raises(ProviderError) as info:
        await provider.send(call(CHAT))
    assert info.value.kind == "rate_limited"
    assert info.value.retry_after == expected
    assert info.value.retryable
    assert "slow" in info.value.message


@pytest.mark.parametrize("key", [KEY, "local-token-xyz", "gsk_abcdefghij"])
@pytest.mark.parametrize("streaming", [False, True])
async def test_error_messages_never_contain_the_api_key(mock, key, streaming) -> None:
    echo = upstream_error(f"Incorrect API key provided: {key}. Bearer {key}")
    mock.post("/chat/completions").respond(401, json=echo)
    p = OpenAIProvider("up", BASE, HttpxTransport(), api_key=key)
    try:
        with pytest.raises(ProviderError) as info:
            await (p.stream(call(CHAT)) if streaming else p.send(call(CHAT)))
    finally:
        await p.aclose()
    assert info.value.kind == "auth"
    assert key not in info.value.message
    assert key not in str(info.value)
    assert "[redacted]" in info.value.message


async def test_long_upstream_messages_are_trimmed(provider, mock) -> None:
    mock.post("/chat/completions").respond(500, json=upstream_error("x" * 5000))
    with pytest.raises(ProviderError) as info:
        await provider.send(call(CHAT))
    assert len(info.value.message) < 400


@pytest.mark.parametrize("content", [b"<html>ok</html>", b"[1, 2]", b""])
async def test_non_json_or_non_object_200_is_invalid_body(provider, mock, content) -> None:
    mock.post("/chat/completions").respond(200, content=content)
    with pytest.raises(ProviderError) as info:
        await provider.send(call(CHAT))
    assert info.value.kind == "invalid_body"


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx.ConnectError("refused"), "connection"),
        (httpx.RemoteProtocolError("closed"), "connection"),
        (httpx.ReadTimeout("slow"), "timeout"),
        (httpx.ConnectTimeout("slow"), "timeout"),
    ],
)
@pytest.mark.parametrize("streaming", [False, True])
async def test_transport_failures(provider, mock, exc, kind, streaming) -> None:
    mock.post("/chat/completions").mock(side_effect=exc)
    with pytest.raises(ProviderError) as info:
        await (provider.stream(call(CHAT)) if streaming else provider.send(call(CHAT)))
    assert info.value.kind == kind
    assert info.value.message.startswith("up: ")
    assert info.value.retryable


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


async def test_supports_every_endpoint(provider) -> None:
    assert all(provider.supports(e) for e in Endpoint)


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


async def test_chunks_before_an_error_in_the_same_read_are_still_handed_out(
    provider, mock
) -> None:
    stream_reads(mock, [sse(chunk("a"), {"error": {"message": "overloaded"}}, done=False)])
    stream = await provider.stream(call(CHAT))
    seen = []
    with pytest.raises(ProviderError) as info:
        async for batch in stream.batches():
            seen.append(batch)
    assert [[c["choices"][0]["delta"] for _, c in b] for b in seen] == [[{"content": "a"}]]
    assert info.value.kind == "server_error"
    assert not stream.complete
