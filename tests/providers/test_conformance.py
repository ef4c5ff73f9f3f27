"""The transport conformance suite: every transport Gatewise offers (providers.factory's
TRANSPORTS, so a new one is included by being offered) against what upstreams send, on
a real nginx and on raw-socket servers on 127.0.0.1 and ::1. Each case checks what the
gateway's user gets: the body, or the typed error (providers/errors.py) that decides
whether the next model is tried. A transport that cannot pass this is not offered.

Framing abuse (truncated, reset, garbage, Content-Length with chunked, trickling) comes
from raw servers; keep-alive as a real server does it (closing after 1 s idle and after
3 requests), gzip, chunked and TLS with a test CA and client certificates from nginx.
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import socket
import struct
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import orjson
import pytest

from providers.errors import (
    InvalidResponse,
    NoMemory,
    ResponseTooLarge,
    UpstreamConnectionError,
    UpstreamTimeout,
)
from providers.factory import TRANSPORTS, TransportKind, create_transport
from providers.tls import TlsOptions
from providers.transport import IDLE_TIMEOUT, Timeout, Transport
from tests.providers.http1.native_helpers import (
    Handler,
    Server,
    answering,
    chunked,
    serving,
    until,
)
from tests.support.nginx import running_nginx
from tests.support.tls import Pki, make_pki
from tests.support.upstream import FakeUpstream, free_port

JSON = {"content-type": "application/json"}
LIMIT = 4096
Make = Callable[..., Transport]
FIVE_SECONDS = Timeout(total=5, connect=5)


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


IPV6 = _has_ipv6()
needs_ipv6 = pytest.mark.skipif(not IPV6, reason="this machine has no ::1")


@pytest.fixture(params=TRANSPORTS)
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    """create_transport(kind, ...), as the gateway builds it; closed after the test."""
    kind: TransportKind = request.param
    made: list[Transport] = []

    def factory(
        timeout: Timeout = FIVE_SECONDS, max_body: int = LIMIT,
        tls: TlsOptions | None = None, idle_timeout: float = IDLE_TIMEOUT,
    ) -> Transport:  # fmt: skip
        made.append(create_transport(kind, timeout, 16, max_body, tls=tls,
                                     idle_timeout=idle_timeout))  # fmt: skip
        return made[-1]

    yield factory
    for t in made:
        await t.aclose()


async def fetch(t: Transport, url: str, streaming: bool = False, method: str = "GET") -> bytes:
    """The body as the gateway's user gets it, whole or as a stream."""
    body = b"{}" if method == "POST" else None
    headers = JSON if body else {}
    if not streaming:
        resp = await t.request(method, url, headers, body)
        assert resp.status == 200
        return resp.body
    stream = await t.stream(method, url, headers, body)
    try:
        assert stream.status == 200
        return b"".join([piece async for piece in stream.aiter_bytes()])
    finally:
        await stream.aclose()


def head(*lines: bytes, version: bytes = b"1.1") -> bytes:
    return b"HTTP/" + version + b" 200 OK\r\n" + b"".join(h + b"\r\n" for h in lines) + b"\r\n"


def answer(body: bytes, *lines: bytes, version: bytes = b"1.1") -> bytes:
    """A response framed by its Content-Length."""
    return head(*lines, b"Content-Length: %d" % len(body), version=version) + body


def once(response: bytes, then: str = "close") -> Handler:
    """Answer one request per connection, then close (FIN), reset (RST), or wait for the
    client to hang up ("hold": the connection must not be reused)."""

    async def handler(srv: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await srv.read_request(reader)
        w.write(response)
        await w.drain()
        if then == "reset":
            sock = w.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.transport.abort()
        elif then == "hold":
            await reader.read()
        else:
            w.close()
            await w.wait_closed()

    return handler


# -- bodies as upstreams frame them ---------------------------------------------------------

PLAIN = b'{"text": "' + b"hello " * 300 + b'"}'
GZ = gzip.compress(PLAIN)
FRAMINGS = {
    "content-length": answer(PLAIN),
    "chunked-with-trailer": head(b"Transfer-Encoding: chunked")
    + chunked(PLAIN[:100], PLAIN[100:])[:-2]
    + b"X-T: 1\r\n\r\n",
    "gzip": answer(GZ, b"Content-Encoding: gzip"),
    "gzip-chunked": head(b"Content-Encoding: gzip", b"Transfer-Encoding: chunked")
    + chunked(GZ[:50], GZ[50:]),
    "deflate": answer(zlib.compress(PLAIN), b"Content-Encoding: deflate"),
    # raw deflate, without zlib's wrapper, as some servers send it
    "raw-deflate": answer(zlib.compress(PLAIN)[2:-4], b"Content-Encoding: deflate"),
    "interim-1xx": b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + answer(PLAIN),
}


@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("framing", list(FRAMINGS))
async def test_a_body_arrives_whole_however_framed(make: Make, framing: str, streaming: bool):
    t = make(max_body=1 << 20)
    async with serving(answering(FRAMINGS[framing])) as srv:
        assert await fetch(t, srv.url(), streaming) == PLAIN
        assert await fetch(t, srv.url(), streaming, "POST") == PLAIN  # and again, kept alive


@pytest.mark.parametrize(
    "response",
    [head(b"Connection: close") + b"until-close", head(version=b"1.0") + b"until-close"],
    ids=["connection-close", "http-1.0"],
)
@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "stream"])
async def test_a_body_delimited_by_the_close(make: Make, response: bytes, streaming: bool):
    t = make()
    async with serving(once(response)) as srv:
        for _ in range(2):
            assert await fetch(t, srv.url(), streaming, "POST") == b"until-close"


@pytest.mark.parametrize(
    "response",
    [answer(b"bye", b"Connection: close"), answer(b"bye", version=b"1.0")],
    ids=["connection-close", "http-1.0"],
)
async def test_a_connection_the_answer_closes_is_not_reused(make: Make, response: bytes):
    """The server leaves the socket open: reusing it would wait for ever."""
    t = make(Timeout(total=2, connect=2))
    async with serving(once(response, then="hold")) as srv:
        for _ in range(3):
            assert await fetch(t, srv.url(), method="POST") == b"bye"
        assert srv.accepted == 3


async def test_a_keep_alive_connection_is_reused(make: Make) -> None:
    t = make()
    async with serving(answering(answer(b"hello"))) as srv:
        for _ in range(3):
            assert await fetch(t, srv.url(), method="POST") == b"hello"
        assert srv.accepted == 1


async def test_an_idle_connection_is_closed_when_no_request_comes(make: Make) -> None:
    """Issue 17.11: a provider that got no more traffic held its idle connections (and
    the upstream's sockets) for ever: they were closed only at the next request."""
    t = make(idle_timeout=0.3)
    loop = asyncio.get_running_loop()
    async with serving(answering(answer(b"hello"))) as srv:
        assert await fetch(t, srv.url(), method="POST") == b"hello"
        start = loop.time()
        await until(lambda: srv.disconnects == 1, timeout=3)
        assert loop.time() - start < 1.0


@needs_ipv6
@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "stream"])
async def test_an_ipv6_upstream(make: Make, streaming: bool) -> None:
    async with serving(answering(answer(b"over v6")), host="::1") as srv:
        assert srv.url().startswith("http://[::1]:")
        assert await fetch(make(), srv.url(), streaming, "POST") == b"over v6"


# -- what must fail, and as what -------------------------------------------------------------

BROKEN: dict[str, tuple[Handler, type[Exception]]] = {
    "truncated": (once(answer(b"partial", b"Content-Length: 100")), UpstreamConnectionError),
    "truncated-chunked": (
        once(head(b"Transfer-Encoding: chunked") + b"7\r\npartial\r\n"),
        UpstreamConnectionError,
    ),
    "reset-before-answering": (once(b"", then="reset"), UpstreamConnectionError),
    "reset-mid-body": (
        once(answer(b"partial", b"Content-Length: 100"), then="reset"),
        UpstreamConnectionError,
    ),
    "closed-without-answer": (once(b""), UpstreamConnectionError),
    "garbage": (answering(b"SMTP ready\r\n\r\n"), UpstreamConnectionError),
    "content-length-with-chunked": (
        answering(head(b"Content-Length: 5", b"Transfer-Encoding: chunked") + chunked(b"hello")),
        UpstreamConnectionError,
    ),
    "bad-gzip": (
        answering(answer(b"not gzip at all", b"Content-Encoding: gzip")),
        InvalidResponse,
    ),
    "bad-gzip-chunked": (
        answering(
            head(b"Content-Encoding: gzip", b"Transfer-Encoding: chunked")
            + chunked(b"not gzip", b" at all")
        ),
        InvalidResponse,
    ),
}


@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("case", list(BROKEN))
async def test_a_broken_answer_is_a_typed_error(make: Make, case: str, streaming: bool) -> None:
    """The class decides what happens next (the next model is tried for all of these);
    anything untyped would be a 500."""
    handler, expected = BROKEN[case]
    t = make(Timeout(total=3, connect=3), max_body=1 << 20)
    async with serving(handler) as srv:
        with pytest.raises(expected) as info:
            await fetch(t, srv.url(), streaming, "POST")
    assert info.value.blames_model


@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "stream"])
async def test_a_closed_port_is_a_connection_error(make: Make, streaming: bool) -> None:
    with pytest.raises(UpstreamConnectionError) as info:
        await fetch(make(), f"http://127.0.0.1:{free_port()}/v1/x", streaming, "POST")
    assert info.value.kind == "connection"
    assert "upstream connection failed" in str(info.value)


async def test_a_trickling_body_is_bounded_by_the_total_timeout(make: Make) -> None:
    """One byte every 20 ms, never silent long enough for a read timeout: only the total
    bound ends it, and `request` promises it."""

    async def trickle(srv: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter):
        await srv.read_request(reader)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(1000):
            w.write(b"x")
            await w.drain()
            await asyncio.sleep(0.02)

    t = make(Timeout(total=0.5, connect=0.5))
    loop = asyncio.get_running_loop()
    async with serving(trickle) as srv:
        start = loop.time()
        with pytest.raises(UpstreamTimeout) as info:
            await t.request("POST", srv.url(), JSON, b"{}")
        assert loop.time() - start < 1.5
    assert info.value.kind == "timeout"


@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "stream"])
async def test_silence_before_the_headers_is_a_timeout(make: Make, streaming: bool) -> None:
    async def silent(srv: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter):
        await srv.read_request(reader)
        await reader.read()

    t = make(Timeout(total=0.3, connect=0.3))
    async with serving(silent) as srv:
        with pytest.raises(UpstreamTimeout):
            await fetch(t, srv.url(), streaming, "POST")


# -- answers past max_response_bytes --------------------------------------------------------


def _framed(body: bytes, how: str) -> bytes:
    if how == "length":
        return answer(body)
    if how == "chunked":
        half = len(body) // 2
        return head(b"Transfer-Encoding: chunked") + chunked(body[:half], body[half:])
    return head(b"Connection: close") + body


def _server(body: bytes, how: str) -> Handler:
    return once(_framed(body, how)) if how == "close" else answering(_framed(body, how))


@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("how", ["length", "chunked", "close"])
async def test_a_body_over_the_limit_is_a_bad_body(make: Make, how: str, streaming: bool):
    async with serving(_server(b"x" * (LIMIT + 1), how)) as srv:
        t = make()
        with pytest.raises(ResponseTooLarge) as info:
            if streaming:
                stream = await t.stream("GET", srv.url(), {})
                try:
                    await stream.aread()  # an error body is read whole, under the limit
                finally:
                    await stream.aclose()
            else:
                await t.request("GET", srv.url(), {})
    assert info.value.kind == "invalid_body"
    assert str(info.value) == f"upstream response larger than {LIMIT} bytes"


@pytest.mark.parametrize("how", ["length", "chunked", "close"])
async def test_a_body_at_the_limit_is_whole(make: Make, how: str) -> None:
    body = b"y" * LIMIT
    async with serving(_server(body, how)) as srv:
        assert (await make().request("GET", srv.url(), {})).body == body


@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "stream"])
async def test_a_refused_body_is_freed_at_once_without_a_collection(make: Make, streaming: bool):
    """Issue 17.3: each answer cut at the limit stayed resident (the partial body, kept by
    the failed connection in reference cycles) until a full collection, which the
    gateway's GC tuning makes rare. With the collector off, nothing of it may remain."""
    limit = 4 << 20
    t = make(max_body=limit)
    async with serving(answering(_framed(b"x" * (limit * 2), "length"))) as srv:
        gc.collect()
        gc.disable()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(3):
                with pytest.raises(ResponseTooLarge):
                    if streaming:
                        stream = await t.stream("GET", srv.url(), {})
                        try:
                            await stream.aread()
                        finally:
                            await stream.aclose()
                    else:
                        await t.request("GET", srv.url(), {})
            await until(lambda: srv.open == 0)
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
            gc.enable()
    assert held < limit // 2, held  # 3 refused bodies of 4 MiB each were read


# -- the worker's memory for bodies ---------------------------------------------------------


class Memory:
    """A TakeMemory with room for `room` bytes of pieces (the gateway's BodyBudget also
    counts what they take parsed)."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.taken: list[bytes] = []

    def __call__(self, piece: bytes) -> None:
        if sum(map(len, self.taken)) + len(piece) > self.room:
            raise NoMemory("no room", status=503, retry_after=1.0)
        self.taken.append(piece)


@pytest.mark.parametrize("framing", ["content-length", "chunked-with-trailer", "gzip"])
async def test_a_whole_body_is_charged_as_it_arrives(make: Make, framing: str) -> None:
    t = make(max_body=1 << 20)
    memory = Memory(1 << 20)
    async with serving(answering(FRAMINGS[framing])) as srv:
        resp = await t.request("GET", srv.url(), {}, None, memory)
    assert resp.body == PLAIN
    assert b"".join(memory.taken) == PLAIN  # decoded, as they are held


@pytest.mark.parametrize("how", ["length", "chunked", "close"])
async def test_a_body_without_room_fails_and_frees_its_connection(make: Make, how: str) -> None:
    """A worker holding all it may: the answer is dropped with NoMemory (the gateway's
    own saturation, not the upstream's), and the next exchange still works."""
    t = make(max_body=1 << 20)
    body = b"z" * 3000
    async with serving(_server(body, how)) as srv:
        with pytest.raises(NoMemory) as info:
            await t.request("GET", srv.url(), {}, None, Memory(1000))
        assert info.value.blames_model is False
        assert (await t.request("GET", srv.url(), {}, None, Memory(1 << 20))).body == body
        await until(lambda: srv.open <= 1)


async def test_a_body_that_could_never_fit_is_the_upstreams_and_too_large(make: Make) -> None:
    def never(piece: bytes) -> None:
        raise ResponseTooLarge("upstream answer would take more memory than all bodies may")

    t = make(max_body=1 << 20)
    async with serving(_server(b"z" * 3000, "length")) as srv:
        with pytest.raises(ResponseTooLarge) as info:
            await t.request("GET", srv.url(), {}, None, never)
    assert info.value.blames_model and "more memory" in str(info.value)


# -- a real nginx: keep-alive as servers do it, gzip, chunked, TLS --------------------------


@dataclass(frozen=True)
class Nginx:
    port: int
    tls_port: int
    pki: Pki

    def url(self, path: str, host: str = "127.0.0.1", tls: bool = False) -> str:
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if tls else 'http'}://{host}:{self.tls_port if tls else self.port}{path}"

    def active(self) -> int:
        """Connections nginx has open, not counting the one that asks."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        return int(data.split(b"Active connections:")[1].split()[0]) - 1


HELLO = "hello from nginx"
TEXT = "The quick brown fox jumps over the lazy dog. " * 60  # gzip and chunked when asked


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    d = tmp_path_factory.mktemp("nginx")
    pki = make_pki(d / "pki")
    port, tls_port = free_port(), free_port()
    v6 = f"listen [::1]:{port}; listen [::1]:{tls_port} ssl;" if IPV6 else ""
    conf = f"""
worker_processes 1;
events {{ worker_connections 256; }}
http {{
    access_log off;
    default_type text/plain;
    client_body_temp_path {d}/body;
    keepalive_timeout 1s;
    keepalive_requests 3;
    gzip on;
    gzip_types text/plain;
    gzip_min_length 1;
    server {{
        listen 127.0.0.1:{port};
        listen 127.0.0.1:{tls_port} ssl;
        {v6}
        ssl_certificate {pki.server_cert};
        ssl_certificate_key {pki.server_key};
        ssl_client_certificate {pki.ca};
        ssl_verify_client optional;
        location = /hello {{ gzip off; return 200 "{HELLO}"; }}
        location = /text {{ return 200 "{TEXT}"; }}
        location = /status {{ stub_status; }}
        location = /client {{
            if ($ssl_client_verify != SUCCESS) {{ return 403; }}
            return 200 "client $ssl_client_s_dn";
        }}
    }}
}}
"""
    with running_nginx(conf, d, f"http://127.0.0.1:{port}/hello"):
        yield Nginx(port, tls_port, pki)


async def _idle_closed(nginx: Nginx) -> None:
    """Wait until nginx has closed every connection (its keepalive_timeout is 1 s)."""
    deadline = time.monotonic() + 5
    while await asyncio.to_thread(nginx.active):
        assert time.monotonic() < deadline, "nginx kept an idle connection past 1 s"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "stream"])
async def test_nginx_closing_idle_connections_after_1s(make: Make, nginx: Nginx, streaming):
    t = make()
    assert await fetch(t, nginx.url("/hello"), streaming, "POST") == HELLO.encode()
    await _idle_closed(nginx)
    # The pooled connection is dead: a POST must go out on a new one, not fail.
    assert await fetch(t, nginx.url("/hello"), streaming, "POST") == HELLO.encode()


async def test_nginx_closing_after_3_requests(make: Make, nginx: Nginx) -> None:
    t = make()
    for _ in range(7):
        assert await fetch(t, nginx.url("/hello"), method="POST") == HELLO.encode()


@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "stream"])
async def test_nginx_gzip_and_chunked(make: Make, nginx: Nginx, streaming: bool) -> None:
    t = make(max_body=1 << 20)
    headers = {"accept-encoding": "gzip"}
    resp = await t.request("GET", nginx.url("/text"), headers)
    assert resp.headers.get("content-encoding") == "gzip"  # decoded, the header kept
    assert resp.headers.get("transfer-encoding") == "chunked"
    assert resp.body == TEXT.encode()
    assert await fetch(t, nginx.url("/text"), streaming) == TEXT.encode()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", pytest.param("::1", marks=needs_ipv6)])
async def test_nginx_tls_with_a_private_ca(make: Make, nginx: Nginx, host: str) -> None:
    url = nginx.url("/hello", host, tls=True)
    with pytest.raises(UpstreamConnectionError):  # the system's roots do not know the CA
        await fetch(make(), url)
    t = make(tls=TlsOptions(ca_file=str(nginx.pki.ca)))
    assert await fetch(t, url, method="POST") == HELLO.encode()
    assert await fetch(t, url, streaming=True) == HELLO.encode()


async def test_nginx_tls_client_certificate(make: Make, nginx: Nginx) -> None:
    url = nginx.url("/client", tls=True)
    t = make(tls=TlsOptions(ca_file=str(nginx.pki.ca)))
    assert (await t.request("GET", url, {})).status == 403
    pki = nginx.pki
    t = make(tls=TlsOptions(str(pki.ca), str(pki.client_cert), str(pki.client_key)))
    assert await fetch(t, url) == b"client CN=gatewise"


# -- a real HTTP server: request and response as the providers use them ---------------------


def chat(model: str, stream: bool = False) -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return orjson.dumps(body)


async def test_request_returns_status_headers_and_body(make, upstream: FakeUpstream) -> None:
    transport = make(max_body=1 << 20)
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
