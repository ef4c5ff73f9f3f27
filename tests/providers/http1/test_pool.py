"""providers/http1/pool.py: keep-alive, limits and queueing, timeouts, cancellation,
request heads, retry policy and https, against scripted loopback servers."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from providers.errors import CapacityExhausted, UpstreamConnectionError, UpstreamTimeout
from providers.factory import create_transport
from providers.http1.pool import NativeTransport
from providers.transport import Timeout
from tests.providers.http1.native_helpers import (
    JSON,
    OK,
    Server,
    answering,
    self_signed,
    serving,
    until,
)

Native = Callable[..., NativeTransport]


@pytest.fixture
async def transport() -> AsyncIterator[NativeTransport]:
    t = NativeTransport(Timeout(total=5, connect=5))
    yield t
    await t.aclose()


@pytest.fixture
async def native() -> AsyncIterator[Native]:
    """NativeTransport(...) that is closed after the test, whatever happened."""
    made: list[NativeTransport] = []

    def make(*args: Any, **kwargs: Any) -> NativeTransport:
        made.append(NativeTransport(*args, **kwargs))
        return made[-1]

    yield make
    for t in made:
        await t.aclose()


def gated(gate: asyncio.Event, hold: str | None = "/hold"):
    """Answer OK to every request; requests for `hold` (None: all) get the headers and the
    body's first byte, then the rest once the gate opens."""

    async def handler(srv: Server, reader, writer) -> None:
        while True:
            req = await srv.read_request(reader)
            if hold is None or req.path == hold:
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nh")
                await writer.drain()
                await gate.wait()
                writer.write(b"ello\r\n0\r\n\r\n")
            else:
                writer.write(OK)
            await writer.drain()

    return handler


async def test_create_transport_native() -> None:
    t = create_transport("native", Timeout(), 4)
    assert isinstance(t, NativeTransport) and t._limit == 4
    await t.aclose()


async def test_keep_alive_reuses_one_connection(transport: NativeTransport) -> None:
    async with serving(answering(OK)) as srv:
        for _ in range(5):
            resp = await transport.request("POST", srv.url(), JSON, b"{}")
            assert resp.body == b"hello"
        stream = await transport.stream("POST", srv.url(), JSON, b"{}")
        assert await stream.aread() == b"hello"
        await stream.aclose()
        assert srv.accepted == 1
        assert len(srv.requests) == 6


async def test_idle_connection_closed_by_server_is_dropped(transport: NativeTransport) -> None:
    async def handler(srv: Server, reader, writer) -> None:
        await srv.read_request(reader)
        writer.write(OK)
        await writer.drain()
        writer.close()

    async with serving(handler) as srv:
        assert (await transport.request("POST", srv.url(), JSON, b"{}")).body == b"hello"
        await until(lambda: transport._open == 0)  # the idle socket's EOF removed it
        assert (await transport.request("POST", srv.url(), JSON, b"{}")).body == b"hello"
        assert srv.accepted == 2


async def test_connection_closing_before_the_write_takes_another(transport) -> None:
    async with serving(answering(OK)) as srv:
        await transport.request("POST", srv.url(), JSON, b"{}")
        (origin,) = transport._origins.values()
        origin.idle[-1].transport.close()  # closing, not yet reported to the protocol
        assert (await transport.request("POST", srv.url(), JSON, b"{}")).body == b"hello"
        assert srv.accepted == 2 and len(srv.requests) == 2


async def test_post_on_a_stale_connection_is_not_replayed(transport) -> None:
    async def handler(srv: Server, reader, writer) -> None:
        await srv.read_request(reader)
        writer.write(OK)
        await writer.drain()
        await srv.read_request(reader)  # takes the second request, then dies unanswered

    async with serving(handler) as srv:
        await transport.request("POST", srv.url(), JSON, b"{}")
        with pytest.raises(UpstreamConnectionError) as info:
            await transport.request("POST", srv.url(), JSON, b"{}")
        assert info.value.kind == "connection"
        assert len(srv.requests) == 2  # the POST went out once
        await transport.request("GET", srv.url(), {})
        assert (await transport.request("GET", srv.url(), {})).body == b"hello"  # retried
        assert len(srv.requests) == 5 and srv.accepted == 3


async def test_idle_connections_expire_after_30s(transport: NativeTransport) -> None:
    async with serving(answering(OK)) as srv:
        await transport.request("GET", srv.url(), {})
        (origin,) = transport._origins.values()
        origin.idle[-1].idle_since -= 31
        await transport.request("GET", srv.url(), {})
        assert srv.accepted == 2
        await until(lambda: srv.disconnects == 1)
        assert transport._open == 1


async def test_idle_connections_are_closed_when_no_request_comes(native: Native) -> None:
    """Issue 17.11: a provider that got no more traffic kept its idle sockets for ever."""
    t = native(Timeout(total=5, connect=5), idle_timeout=0.2)
    loop = asyncio.get_running_loop()
    async with serving(answering(OK)) as srv, serving(answering(OK)) as other:
        await asyncio.gather(*(t.request("GET", srv.url(), {}) for _ in range(3)))
        await t.request("GET", other.url(), {})
        assert t._open == srv.accepted + 1 == 4
        start = loop.time()
        busy = loop.time() + 0.3  # one connection kept in use past its first TTL
        while loop.time() < busy:
            await t.request("GET", other.url(), {})
            await asyncio.sleep(0.05)
        assert other.accepted == 1
        await until(lambda: srv.disconnects == 3 and other.disconnects == 1, timeout=2)
        assert loop.time() - start < 1.0
        assert t._open == 0 and t._reaper is None


async def test_limit_caps_open_connections_and_all_succeed(native: Native) -> None:
    t = native(Timeout(total=5, connect=5), max_connections=2)
    gate = asyncio.Event()
    async with serving(gated(gate, hold=None)) as srv:
        tasks = [asyncio.create_task(t.request("GET", srv.url(), {})) for _ in range(5)]
        await until(lambda: len(t._waiters) == 3 and len(srv.requests) == 2)
        gate.set()
        results = await asyncio.gather(*tasks)
        assert [r.body for r in results] == [b"hello"] * 5
        assert srv.max_open == 2 and srv.accepted == 2
        assert t._open == 2


async def test_waiters_are_served_first_come_first_served(native: Native) -> None:
    t = native(Timeout(total=5, connect=5), max_connections=1)
    gate = asyncio.Event()
    async with serving(gated(gate)) as srv:
        first = asyncio.create_task(t.request("GET", srv.url("/hold"), {}))
        await until(lambda: srv.requests)
        rest = []
        for i in range(1, 6):
            rest.append(asyncio.create_task(t.request("GET", srv.url(f"/{i}"), {})))
            await until(lambda n=i: len(t._waiters) == n)
        gate.set()
        await asyncio.gather(first, *rest)
        assert [r.path for r in srv.requests[1:]] == ["/1", "/2", "/3", "/4", "/5"]
        assert srv.accepted == 1


async def test_a_full_pool_is_the_gateways_saturation_not_an_upstream_timeout(
    native: Native,
) -> None:
    t = native(Timeout(total=5, connect=5, pool=0.2), max_connections=1)
    gate = asyncio.Event()
    async with serving(gated(gate)) as srv:
        first = asyncio.create_task(t.request("GET", srv.url("/hold"), {}))
        await until(lambda: srv.requests)
        with pytest.raises(CapacityExhausted) as info:
            await t.request("GET", srv.url("/next"), {})
        assert info.value.kind == "pool_exhausted" and not info.value.blames_model
        assert "all 1 in use" in info.value.message
        gate.set()
        assert (await first).body == b"hello"
        assert (await t.request("GET", srv.url("/next"), {})).body == b"hello"
        assert t._open == 1 and not t._waiters


async def test_connecting_is_bounded_by_the_connect_timeout_apart_from_the_wait(
    native: Native, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slot is free, the upstream does not answer the dial in time: the upstream's
    timeout (blamed on it), and the slot is given back."""
    t = native(Timeout(total=5, connect=0.2, pool=5), max_connections=1)

    async def dial_that_hangs(origin: Any) -> Any:
        await asyncio.Event().wait()

    monkeypatch.setattr(t, "_dial", dial_that_hangs)
    with pytest.raises(UpstreamTimeout) as info:
        await t.request("GET", "http://127.0.0.1:9/", {})
    assert info.value.blames_model
    assert t._open == 0


async def test_total_timeout_on_request_drops_the_connection(native: Native) -> None:
    t = native(Timeout(total=0.2, connect=1))
    gate = asyncio.Event()
    async with serving(gated(gate)) as srv:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(UpstreamTimeout) as info:
            await t.request("POST", srv.url("/hold"), JSON, b"{}")
        assert info.value.kind == "timeout"
        assert 0.15 < loop.time() - start < 1.0
        assert t._open == 0
        gate.set()  # the server writes the rest into a socket the client dropped
        await until(lambda: srv.disconnects == 1)


@pytest.mark.parametrize("where", ["queued", "in_flight", "handed_a_slot"])
async def test_cancellation_does_not_leak_a_slot(where: str) -> None:
    t = NativeTransport(Timeout(total=5, connect=5), max_connections=1)
    gate = asyncio.Event()
    try:
        async with serving(gated(gate)) as srv:
            if where == "handed_a_slot":
                holder = await t.stream("GET", srv.url("/hold"), {})
            else:
                holder = asyncio.create_task(t.request("GET", srv.url("/hold"), {}))
            await until(lambda: srv.requests)
            waiters = [asyncio.create_task(t.request("GET", srv.url(), {})) for _ in range(3)]
            await until(lambda: len(t._waiters) == 3)
            if where == "handed_a_slot":
                holder.close_now()  # the freed slot goes to the first waiter at once...
                waiters[0].cancel()  # ...which is cancelled before it could use it
            elif where == "in_flight":
                holder.cancel()
            for w in waiters[where == "handed_a_slot" :]:
                w.cancel()
            results = await asyncio.gather(*waiters, return_exceptions=True)
            assert all(isinstance(r, asyncio.CancelledError) for r in results)
            gate.set()
            if where == "queued":
                assert (await holder).body == b"hello"
            got = await asyncio.gather(*(t.request("GET", srv.url(), {}) for _ in range(3)))
            assert [r.body for r in got] == [b"hello"] * 3
            assert t._open <= 1
    finally:
        await t.aclose()


async def test_cancelled_waiter_passes_on_a_connection_handed_to_it(native: Native) -> None:
    t = native(Timeout(total=5, connect=5), max_connections=1)
    gate = asyncio.Event()
    async with serving(gated(gate)) as srv:
        holder = asyncio.create_task(t.request("GET", srv.url("/hold"), {}))
        await until(lambda: srv.requests)
        waiter = asyncio.create_task(t.request("GET", srv.url(), {}))
        await until(lambda: t._waiters)
        release = t.release

        def release_then_cancel(conn) -> None:
            t.release = release  # type: ignore[method-assign]
            release(conn)  # hands the connection to the waiter...
            waiter.cancel()  # ...which is cancelled before it runs

        t.release = release_then_cancel  # type: ignore[method-assign]
        gate.set()
        assert (await holder).body == b"hello"
        with pytest.raises(asyncio.CancelledError):
            await waiter
        (origin,) = t._origins.values()
        assert len(origin.idle) == 1 and t._open == 1  # parked, not leaked
        assert (await t.request("GET", srv.url(), {})).body == b"hello"
        assert srv.accepted == 1


async def test_request_head(transport: NativeTransport) -> None:
    async with serving(answering(OK)) as srv:
        url = srv.url("/v1/a b/ü?q=1 2&x=%41")
        await transport.request("POST", url, {"Authorization": "Bearer k", "X-A": "1"}, b"{}")
        await transport.request("POST", url, {"host": "example.test", "Content-Length": "9"})
        await transport.request("GET", srv.url(), {"accept-encoding": "identity"})
    first, second, third = srv.requests
    assert first.head.startswith(b"POST /v1/a%20b/%C3%BC?q=1%202&x=%41 HTTP/1.1\r\n")
    assert first.header("host") == f"127.0.0.1:{srv.port}"
    assert first.header("authorization") == "Bearer k"
    assert first.header("content-length") == "2" and first.body == b"{}"
    assert first.header("accept-encoding") == "gzip, deflate"
    assert first.header("user-agent") is None
    assert second.header("host") == "example.test"
    assert second.header("content-length") == "0"  # the caller's value is not trusted
    assert third.header("content-length") is None
    assert third.header("accept-encoding") == "identity"


@pytest.mark.parametrize(
    "headers",
    [
        {"x-a": "v\r\nx-injected: 1"},
        {"x-a": "v\nx"},
        {"x-a": "v\0"},
        {"x-a\r\nx-b": "v"},
        {"bad name": "v"},
        {"host": "h\r\nx: y"},
    ],
)
async def test_unsafe_headers_are_rejected(transport: NativeTransport, headers) -> None:
    async with serving(answering(OK)) as srv:
        with pytest.raises(ValueError) as info:
            await transport.request("POST", srv.url(), headers, b"{}")
        assert "v\r" not in str(info.value)
        assert srv.accepted == 0


async def test_bad_urls_are_value_errors(transport: NativeTransport) -> None:
    for url in ("ftp://h/x", "http://u:p@h/x", "http:///x"):
        with pytest.raises(ValueError):
            await transport.request("GET", url, {})


async def test_aclose_fails_waiters_and_exchanges_and_stays_usable() -> None:
    t = NativeTransport(Timeout(total=5, connect=5), max_connections=1)
    gate = asyncio.Event()
    async with serving(gated(gate)) as srv:
        first = asyncio.create_task(t.request("GET", srv.url("/hold"), {}))
        await until(lambda: srv.requests)
        second = asyncio.create_task(t.request("GET", srv.url(), {}))
        await until(lambda: t._waiters)
        await t.aclose()
        for task in (first, second):
            with pytest.raises(UpstreamConnectionError, match="TransportClosed"):
                await task
        assert t._open == 0
        assert (await t.request("GET", srv.url(), {})).body == b"hello"
        await t.aclose()


async def test_https_uses_tls_with_verification(tmp_path: Path) -> None:
    pair = self_signed(tmp_path)
    if pair is None:
        pytest.skip("neither the cryptography package nor the openssl CLI is available")
    cert, key = pair
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))
    default = NativeTransport(Timeout(total=5, connect=5))
    custom = NativeTransport(Timeout(total=5, connect=5), ssl_context=trusting)
    try:
        async with serving(answering(OK), ssl_context=server_ctx) as srv:
            assert default._ssl is None  # made lazily, on the first https use
            with pytest.raises(UpstreamConnectionError) as info:
                await default.request("GET", srv.url(scheme="https"), {})
            assert info.value.kind == "connection"
            assert "SSLCertVerificationError" in str(info.value)
            made = default._ssl
            assert isinstance(made, ssl.SSLContext) and made.verify_mode == ssl.CERT_REQUIRED
            with pytest.raises(UpstreamConnectionError):
                await default.request("GET", srv.url(scheme="https"), {})
            assert default._ssl is made  # once per transport
            for _ in range(3):
                resp = await custom.request("POST", srv.url(scheme="https"), JSON, b"{}")
                assert resp.body == b"hello"
            url = f"https://localhost:{srv.port}/x"  # by name: resolved, SNI and check by name
            assert (await custom.request("GET", url, {})).body == b"hello"
            assert srv.accepted == 2  # one per origin (failed handshakes never get here)
            assert srv.requests[0].header("host") == f"127.0.0.1:{srv.port}"
    finally:
        await default.aclose()
        await custom.aclose()
