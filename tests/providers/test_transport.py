"""Every transport against a real loopback HTTP server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import orjson
import pytest

from providers.aiohttp_transport import AiohttpTransport
from providers.errors import UpstreamConnectionError, UpstreamTimeout
from providers.http1.pool import NativeTransport
from providers.httpx_transport import HttpxTransport
from providers.transport import Timeout, Transport
from tests.support.upstream import FakeUpstream, free_port

JSON = {"content-type": "application/json"}
DEFAULT_TIMEOUT = Timeout(total=10, connect=5)
KINDS: dict[str, Callable[[Timeout], Transport]] = {
    "aiohttp": AiohttpTransport,
    "httpx": HttpxTransport,
    "native": NativeTransport,
}


@pytest.fixture(params=list(KINDS))
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Transport]]:
    made: list[Transport] = []

    def factory(timeout: Timeout = DEFAULT_TIMEOUT) -> Transport:
        transport = KINDS[request.param](timeout)
        made.append(transport)
        return transport

    yield factory
    for transport in made:
        await transport.aclose()


def chat(model: str, stream: bool = False) -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return orjson.dumps(body)


async def test_request_returns_status_headers_and_body(make, upstream: FakeUpstream) -> None:
    transport = make()
    upstream.behave("m", headers={"x-upstream": "yes"}, content="a b c")
    headers = {**JSON, "authorization": "Bearer k", "x-extra": "1"}
    resp = await transport.request("POST", upstream.url + "/chat/completions", headers, chat("m"))
    assert resp.status == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["X-Upstream"] == "yes"  # case-insensitive lookup
    body = orjson.loads(resp.body)
    assert body["choices"][0]["message"]["content"] == "a b c"
    seen = upstream.calls("/chat/completions")[-1]
    assert seen.method == "POST"
    assert seen.headers["authorization"] == "Bearer k"
    assert seen.headers["x-extra"] == "1"
    assert seen.body["model"] == "m"


async def test_request_returns_error_statuses(make, upstream: FakeUpstream) -> None:
    upstream.behave("bad", status=503, headers={"retry-after": "3"})
    resp = await make().request("POST", upstream.url + "/chat/completions", JSON, chat("bad"))
    assert resp.status == 503
    assert resp.headers.get("retry-after") == "3"
    assert b"scripted failure 503" in resp.body


async def test_get_without_body(make, upstream: FakeUpstream) -> None:
    resp = await make().request("GET", upstream.url + "/videos/video_1", {})
    assert resp.status == 200
    assert orjson.loads(resp.body)["id"] == "video_1"
    assert upstream.calls("/videos/video_1")[-1].method == "GET"


async def test_stream_yields_bytes(make, upstream: FakeUpstream) -> None:
    upstream.behave("m", content="one two three four")
    stream = await make().stream("POST", upstream.url + "/chat/completions", JSON, chat("m", True))
    try:
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        data = b"".join([piece async for piece in stream.aiter_bytes()])
    finally:
        await stream.aclose()
    assert data.count(b"data: ") == 6  # four words, the final chunk, [DONE]
    assert data.endswith(b"data: [DONE]\n\n")


async def test_stream_aread_reads_the_whole_body(make, upstream: FakeUpstream) -> None:
    upstream.behave("bad", status=500)
    stream = await make().stream("POST", upstream.url + "/chat/completions", JSON, chat("bad"))
    try:
        assert stream.status == 500
        assert b"scripted failure 500" in await stream.aread()
    finally:
        await stream.aclose()


async def test_stream_aclose_mid_stream(make, upstream: FakeUpstream) -> None:
    transport = make()
    # every chunk is followed by a pause, so the stream is unfinished when we leave
    upstream.behave("slow", delay=0.05, content=" ".join(["w"] * 200))
    url = upstream.url + "/chat/completions"
    stream = await transport.stream("POST", url, JSON, chat("slow", True))
    first = await anext(aiter(stream.aiter_bytes()))
    assert first.startswith(b"data: ")
    await stream.aclose()
    # the upstream sees the client go away and stops generating
    assert await asyncio.to_thread(upstream.disconnected.wait, 10)
    # the transport is still usable afterwards
    upstream.behave("slow", content="ok")
    resp = await transport.request("POST", url, JSON, chat("slow"))
    assert resp.status == 200


async def test_stream_aclose_after_the_end(make, upstream: FakeUpstream) -> None:
    stream = await make().stream("POST", upstream.url + "/chat/completions", JSON, chat("m", True))
    async for _ in stream.aiter_bytes():
        pass
    await stream.aclose()


@pytest.mark.parametrize("streaming", [False, True])
async def test_closed_port_is_a_connection_error(make, streaming: bool) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1/chat/completions"
    transport = make()
    with pytest.raises(UpstreamConnectionError) as info:
        if streaming:
            await transport.stream("POST", url, JSON, chat("m", True))
        else:
            await transport.request("POST", url, JSON, chat("m"))
    assert info.value.kind == "connection"
    assert "upstream connection failed" in str(info.value)


@pytest.mark.parametrize("streaming", [False, True])
async def test_slow_server_is_a_timeout(make, upstream: FakeUpstream, streaming: bool) -> None:
    upstream.behave("slow", delay=0.6)
    transport = make(Timeout(total=0.2, connect=0.2))
    url = upstream.url + "/chat/completions"
    with pytest.raises(UpstreamTimeout) as info:
        if streaming:
            await transport.stream("POST", url, JSON, chat("slow", True))
        else:
            await transport.request("POST", url, JSON, chat("slow"))
    assert info.value.kind == "timeout"


async def test_aclose_is_safe_before_use(make) -> None:
    await make().aclose()
