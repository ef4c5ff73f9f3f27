"""OpenAIProvider over HttpxTransport, with the upstream mocked by respx."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterator

import httpx
import orjson
import pytest
import respx

from providers.base import Endpoint, Usage
from providers.errors import (
    ProviderError,
    ResponseTooLarge,
    UpstreamConnectionError,
    UpstreamTimeout,
)
from providers.httpx_transport import HttpxTransport
from providers.openai import OpenAIProvider
from tests.providers.openai_helpers import (
    BASE,
    CHAT,
    CHAT_REPLY,
    KEY,
    USAGE,
    call,
    make_provider,
    mock_router,
    sent,
    upstream_error,
)  # fmt: skip


@pytest.fixture
async def provider() -> AsyncIterator[OpenAIProvider]:
    async for p in make_provider():
        yield p


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    yield from mock_router()


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


@pytest.mark.parametrize("base", [
    "https://az.test/openai/deployments/d?api-version=2024-10-21",
    "https://az.test/openai/deployments/d/?api-version=2024-10-21",
])  # fmt: skip
async def test_a_base_url_query_stays_after_the_path(base: str) -> None:
    """Issue 17.11: Azure's ?api-version= got the path appended after it."""
    provider = OpenAIProvider("az", base, HttpxTransport(), api_key=KEY)
    with respx.mock(assert_all_called=False) as router:
        chat = router.post("https://az.test/openai/deployments/d/chat/completions")
        chat.respond(200, json=CHAT_REPLY)
        video = router.get("https://az.test/openai/deployments/d/videos/v1")
        video.respond(200, json={"id": "v1"})
        await provider.send(call(CHAT))
        await provider.send(call({}, Endpoint.VIDEO_STATUS, resource_id="v1"))
    await provider.aclose()
    for route in (chat, video):
        assert route.calls.last.request.url.query == b"api-version=2024-10-21"


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


async def test_speech_broken_mid_body_names_the_provider(provider, mock) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        yield b"ID3\x04\x00"
        raise httpx.ReadError("reset")

    mock.post("/audio/speech").mock(
        side_effect=lambda request: httpx.Response(200, content=pieces())
    )
    reply = await provider.binary(call({"input": "hello"}, Endpoint.SPEECH))
    got = []
    try:
        with pytest.raises(UpstreamConnectionError) as info:
            async for piece in reply:
                got.append(piece)
    finally:
        await reply.aclose()
    assert got == [b"ID3\x04\x00"]
    assert info.value.message == "up: stream broke: upstream connection failed: ReadError"


# -- errors ----------------------------------------------------------------------------


async def test_an_answer_over_max_body_keeps_its_class_and_gets_the_name(mock) -> None:
    mock.post("/chat/completions").respond(200, content=b"x" * 2000)
    p = OpenAIProvider("up", BASE, HttpxTransport(max_body=1000))
    try:
        with pytest.raises(ResponseTooLarge) as info:
            await p.send(call(CHAT))
    finally:
        await p.aclose()
    assert info.value.kind == "invalid_body"
    assert info.value.message == "up: upstream response larger than 1000 bytes"


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
    assert info.value.blames_model
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
    ("exc", "cls", "kind"),
    [
        (httpx.ConnectError("refused"), UpstreamConnectionError, "connection"),
        (httpx.RemoteProtocolError("closed"), UpstreamConnectionError, "connection"),
        (httpx.ReadTimeout("slow"), UpstreamTimeout, "timeout"),
        (httpx.ConnectTimeout("slow"), UpstreamTimeout, "timeout"),
    ],
)
@pytest.mark.parametrize("streaming", [False, True])
async def test_transport_failures(provider, mock, exc, cls, kind, streaming) -> None:
    mock.post("/chat/completions").mock(side_effect=exc)
    with pytest.raises(ProviderError) as info:
        await (provider.stream(call(CHAT)) if streaming else provider.send(call(CHAT)))
    assert type(info.value) is cls  # the transport's class, named after the provider
    assert info.value.kind == kind
    assert info.value.message.startswith("up: ")
    assert info.value.blames_model


async def test_supports_every_endpoint(provider) -> None:
    assert all(provider.supports(e) for e in Endpoint)
