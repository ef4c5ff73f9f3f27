"""providers/http1/connection.py through NativeTransport: response framing, decoding,
streams, failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from providers.errors import UpstreamConnectionError, UpstreamTimeout
from providers.http1.connection import Headers
from providers.http1.pool import NativeTransport
from providers.transport import Timeout
from tests.providers.http1.native_helpers import (
    JSON,
    OK,
    Server,
    answering,
    chunked,
    serving,
    until,
)


@pytest.fixture
async def transport() -> AsyncIterator[NativeTransport]:
    t = NativeTransport(Timeout(total=5, connect=5))
    yield t
    await t.aclose()


def only_conn(t: NativeTransport):
    (conn,) = t._conns
    return conn


async def test_headers_are_case_insensitive_and_joined(transport: NativeTransport) -> None:
    resp_bytes = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Multi: a\r\nx-multi: b\r\n"
        b"Content-Length: 2\r\n\r\nok"
    )
    async with serving(answering(resp_bytes)) as srv:
        resp = await transport.request("GET", srv.url(), {})
    assert resp.body == b"ok"
    assert resp.headers["Content-Type"] == resp.headers.get("content-type") == "text/plain"
    assert resp.headers.get("X-MULTI") == "a, b"
    assert "CONTENT-LENGTH" in resp.headers
    assert resp.headers.get("missing", "d") == "d"
    assert dict(resp.headers)["x-multi"] == "a, b"
    with pytest.raises(KeyError):
        resp.headers["nope"]
    assert isinstance(resp.headers, Headers)
    with pytest.raises(TypeError):
        resp.headers["x"] = "y"  # type: ignore[index]


async def test_chunked_body_whole_and_incremental(transport: NativeTransport) -> None:
    release = asyncio.Event()

    async def handler(srv: Server, reader, writer) -> None:
        while True:
            await srv.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(b"6\r\ndata 1\r\n")
            await writer.drain()
            await release.wait()
            writer.write(chunked(b"data 2"))
            await writer.drain()

    async with serving(handler) as srv:
        stream = await transport.stream("POST", srv.url(), JSON, b"{}")
        parts = stream.aiter_bytes()
        assert await anext(parts) == b"data 1"  # arrives before the rest is sent
        release.set()
        assert b"".join([p async for p in parts]) == b"data 2"
        await stream.aclose()
        resp = await transport.request("POST", srv.url(), JSON, b"{}")
        assert resp.body == b"data 1data 2"
        assert srv.accepted == 1  # the stream was read to the end, so the socket was reused


async def test_head_response_has_no_body(transport: NativeTransport) -> None:
    async with serving(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n")) as srv:
        resp = await transport.request("HEAD", srv.url(), {})
        assert (resp.status, resp.body, resp.headers["content-length"]) == (200, b"", "99")
        assert (await transport.request("HEAD", srv.url(), {})).status == 200
    assert transport._open == 0  # a HEAD connection is not reused


async def test_early_aclose_drops_the_connection(transport: NativeTransport) -> None:
    async def handler(srv: Server, reader, writer) -> None:
        await srv.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwait\r\n")
        await writer.drain()
        await reader.read()  # returns at EOF: the client went away

    async with serving(handler) as srv:
        stream = await transport.stream("POST", srv.url(), JSON, b"{}")
        assert await anext(aiter(stream.aiter_bytes())) == b"wait"
        await stream.aclose()
        assert transport._open == 0
        await until(lambda: srv.disconnects == 1)
        with pytest.raises(UpstreamConnectionError, match="StreamClosed"):
            await stream.aread()  # a closed stream cannot be read


async def test_oversized_response_headers_are_refused(transport: NativeTransport) -> None:
    huge = b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * 70000 + b"\r\nContent-Length: 0\r\n\r\n"
    async with serving(answering(huge)) as srv:
        with pytest.raises(UpstreamConnectionError, match="ResponseHeadersTooLarge"):
            await transport.request("GET", srv.url(), {})


async def test_bytes_on_an_idle_connection_drop_it(transport: NativeTransport) -> None:
    async def handler(srv: Server, reader, writer) -> None:
        await srv.read_request(reader)
        writer.write(OK)
        await writer.drain()
        await srv.read_request(reader)  # never comes: the client hangs up on the junk
        writer.write(b"junk")

    async def junk_after(srv: Server, reader, writer) -> None:
        await srv.read_request(reader)
        writer.write(OK + b"junk")
        await reader.read()

    for h in (handler, junk_after):
        async with serving(h) as srv:
            assert (await transport.request("GET", srv.url(), {})).body == b"hello"
            if h is handler:
                conn = only_conn(transport)
                conn.transport.write(b"GET / HTTP/1.1\r\n\r\n")  # provoke the junk
            await until(lambda: transport._open == 0)


def _kernel_buffers() -> int:
    """The most a loopback connection can hold in kernel buffers (receive + send)."""
    try:
        sizes = [Path(f"/proc/sys/net/ipv4/tcp_{k}mem").read_text().split() for k in "rw"]
    except OSError:
        return 8 << 20
    return sum(int(size[2]) for size in sizes)


async def test_flow_control_pauses_a_lagging_consumer(transport: NativeTransport) -> None:
    # More than the kernel can buffer between the ends (receive buffers autotune up to
    # 32 MiB here), so the server's own write buffer must fill once the reader pauses.
    mib = max(8, (_kernel_buffers() >> 20) + 4)
    big = bytes(range(256)) * (mib * 4096)
    writers = []

    async def handler(srv: Server, reader, writer) -> None:
        writers.append(writer)
        while True:
            await srv.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big) + big)
            await writer.drain()

    async with serving(handler) as srv:
        stream = await transport.stream("GET", srv.url(), {})
        conn = only_conn(transport)
        await until(lambda: conn.paused)
        assert writers[0].transport.get_write_buffer_size() > 0  # backpressure reached it
        assert 1 << 20 < sum(map(len, stream._chunks)) < 4 << 20
        got = [chunk async for chunk in stream.aiter_bytes()]
        await stream.aclose()
        assert b"".join(got) == big
        assert (await transport.request("GET", srv.url(), {})).body == big
        assert srv.accepted == 1


async def test_stream_read_idle_timeout_and_a_slow_stream_that_keeps_going() -> None:
    t = NativeTransport(Timeout(total=0.3, connect=1))

    async def handler(srv: Server, reader, writer) -> None:
        while True:
            req = await srv.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            n = 8 if req.path == "/steady" else 1
            for i in range(n):  # 8 x 0.1 s: well past the 0.3 s total, never 0.3 s silent
                writer.write(chunked(b"%d" % i)[:-5])
                await writer.drain()
                await asyncio.sleep(0.1)
            if n == 1:
                await asyncio.sleep(5)
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    try:
        async with serving(handler) as srv:
            stream = await t.stream("POST", srv.url("/steady"), JSON, b"{}")
            assert await stream.aread() == b"01234567"
            await stream.aclose()
            stream = await t.stream("POST", srv.url("/stall"), JSON, b"{}")
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(UpstreamTimeout) as info:
                await stream.aread()
            assert info.value.kind == "timeout"
            assert 0.2 < loop.time() - start < 1.0
            await stream.aclose()
            assert t._open == 0
    finally:
        await t.aclose()


async def test_a_stream_that_never_falls_silent_ends_at_its_stream_timeout() -> None:
    t = NativeTransport(Timeout(total=0.3, connect=1, stream=0.6))

    async def handler(srv: Server, reader, writer) -> None:
        await srv.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while True:  # a keep-alive comment every 0.1 s: never 0.3 s silent, never done
            writer.write(chunked(b": keep-alive\n\n")[:-5])
            await writer.drain()
            await asyncio.sleep(0.1)

    try:
        async with serving(handler) as srv:
            loop = asyncio.get_running_loop()
            start = loop.time()
            stream = await t.stream("POST", srv.url(), JSON, b"{}")
            with pytest.raises(UpstreamTimeout) as info:
                await stream.aread()
            assert "stream_timeout" in info.value.message
            assert 0.55 < loop.time() - start < 1.5
            await stream.aclose()
            assert t._open == 0  # the connection went with it
    finally:
        await t.aclose()
