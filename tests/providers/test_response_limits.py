"""Response bodies are bounded: a runaway or compressed answer fails as a bad body
(kind "invalid_body", so the next model is tried) instead of taking the worker's memory.
What every transport must do with a body past the limit is in test_conformance.py; here,
the native transport's decoding and streaming under it."""

from __future__ import annotations

import gzip
import tracemalloc
from collections.abc import AsyncIterator

import pytest

from providers.errors import InvalidResponse, ResponseTooLarge
from providers.http1.pool import NativeTransport
from providers.sse import iter_event_batches
from providers.transport import Timeout
from tests.providers.http1.native_helpers import answering, chunked, serving, until

LIMIT = 4096


def _framed(body: bytes, how: str, encoding: str | None = None) -> bytes:
    head = b"HTTP/1.1 200 OK\r\n"
    if encoding:
        head += b"Content-Encoding: %s\r\n" % encoding.encode()
    if how == "length":
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    if how == "chunked":
        half = len(body) // 2
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(body[:half], body[half:])
    return head + b"Connection: close\r\n\r\n" + body  # delimited by the close


async def test_a_compressed_bomb_stops_expanding_at_the_limit() -> None:
    """50 MB of zeros packed into ~50 KB: decoding stops one byte past the limit, so the
    worker never holds the 50 MB (it did: zlib expanded each network read whole)."""
    limit = 1 << 20
    bomb = gzip.compress(b"\0" * (50 << 20))
    t = NativeTransport(Timeout(total=5, connect=5), max_body=limit)
    async with serving(answering(_framed(bomb, "length", "gzip"))) as srv:
        tracemalloc.start()
        try:
            with pytest.raises(ResponseTooLarge) as info:
                await t.request("GET", srv.url(), {})
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            await t.aclose()
    assert info.value.kind == "invalid_body"
    assert peak < 8 * limit, peak


async def test_a_streamed_bomb_chunk_fails_the_stream() -> None:
    limit = 1 << 20
    bomb = gzip.compress(b"\0" * (20 << 20))
    t = NativeTransport(Timeout(total=5, connect=5), max_body=limit)
    async with serving(answering(_framed(bomb, "chunked", "gzip"))) as srv:
        stream = await t.stream("GET", srv.url(), {})
        try:
            with pytest.raises(ResponseTooLarge) as info:
                async for _ in stream.aiter_bytes():
                    pass
        finally:
            await stream.aclose()
            await t.aclose()
    assert info.value.kind == "invalid_body"


async def test_a_long_stream_is_not_cut_by_the_limit() -> None:
    """The limit bounds a stream's chunks, not its length: streams are flow-controlled."""
    chunks = [b"data: %d\n\n" % i + b"p" * 1000 for i in range(20)]
    t = NativeTransport(Timeout(total=5, connect=5), max_body=LIMIT)
    async with serving(answering(_framed(b"".join(chunks), "chunked", None))) as srv:
        stream = await t.stream("GET", srv.url(), {})
        got = b"".join([c async for c in stream.aiter_bytes()])
        await stream.aclose()
    await t.aclose()
    assert got == b"".join(chunks)


async def test_the_connection_of_a_refused_body_is_not_reused() -> None:
    t = NativeTransport(Timeout(total=5, connect=5), max_body=LIMIT)
    async with serving(answering(_framed(b"x" * (LIMIT * 2), "length"))) as srv:
        with pytest.raises(ResponseTooLarge):
            await t.request("GET", srv.url(), {})
        await until(lambda: t._open == 0)
        assert not t._conns
    await t.aclose()


async def _feed(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_an_event_that_never_ends_fails_the_stream(monkeypatch) -> None:
    monkeypatch.setattr("providers.sse.MAX_EVENT_BYTES", 1000)
    # The events a read completes still arrive before the error.
    parts = [b"data: first\n\ndata: " + b"w" * 1200, *[b"w" * 300 for _ in range(3)]]
    got = []
    with pytest.raises(InvalidResponse) as info:
        async for batch in iter_event_batches(_feed(parts)):
            got += batch
    assert got == [(None, b"first")]
    assert info.value.kind == "invalid_body"


async def test_events_under_the_limit_pass_however_cut(monkeypatch) -> None:
    monkeypatch.setattr("providers.sse.MAX_EVENT_BYTES", 1000)
    event = b"data: " + b"v" * 900 + b"\n\n"
    parts = [event[:400], event[400:], event]
    got = [e async for batch in iter_event_batches(_feed(parts)) for e in batch]
    assert got == [(None, b"v" * 900)] * 2
