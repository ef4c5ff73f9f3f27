"""A response's head and body leave the gateway in one write, so in one TCP segment; the
inbound limits' settings (their behaviour: test_inbound_limits_e2e.py)."""

from __future__ import annotations

import asyncio
import functools
import gc
import pickle
import socket
import struct
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from gateway.core.config import ConfigError, parse_config
from gateway.core.headers import RenderedHeaders, render_headers
from gateway.server.protocol import (
    LARGE_WRITE,
    Inbound,
    InboundLimits,
    JoinedWritesProtocol,
    _HeadHoldingTransport,
)
from tests.conftest import upstream_config
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"
TCP_INFO_DATA_SEGS_IN = 152  # offset of tcpi_data_segs_in in Linux's struct tcp_info


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.lines: list[tuple[bytes, ...]] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def writelines(self, pieces: tuple[bytes, ...]) -> None:
        """One send of several pieces (uvloop: one writev): kept as they were given."""
        self.lines.append(pieces)
        self.writes.append(b"".join(pieces))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 5)}.get(name, default)


def holding() -> tuple[_HeadHoldingTransport, RecordingTransport]:
    real = RecordingTransport()
    return _HeadHoldingTransport(real, asyncio.get_running_loop()), real  # type: ignore[arg-type]


async def test_the_head_and_the_body_go_out_in_one_write() -> None:
    transport, real = holding()
    transport.write(HEAD)
    assert real.writes == []
    transport.write(b"{}")
    assert real.writes == [HEAD + b"{}"]
    await asyncio.sleep(0)
    assert real.writes == [HEAD + b"{}"]  # the scheduled flush finds nothing left


async def test_a_large_body_goes_out_with_its_head_in_one_send_without_a_copy() -> None:
    transport, real = holding()
    body = b"x" * LARGE_WRITE
    transport.write(HEAD)
    transport.write(body)
    assert real.lines == [(HEAD, body)] and real.lines[0][1] is body
    transport.writelines((b"10000\r\n", body, b"\r\n"))  # no head held: as they are
    assert real.lines[1] == (b"10000\r\n", body, b"\r\n") and real.lines[1][1] is body


async def test_pieces_written_together_follow_a_held_head() -> None:
    transport, real = holding()
    transport.write(HEAD)
    transport.writelines((b"3\r\n", b"abc", b"\r\n"))
    assert real.lines == [(HEAD, b"3\r\n", b"abc", b"\r\n")]
    await asyncio.sleep(0)
    assert real.writes == [HEAD + b"3\r\nabc\r\n"]  # the scheduled flush finds nothing left


async def test_a_head_alone_leaves_by_the_end_of_the_loop_iteration() -> None:
    transport, real = holding()
    transport.write(HEAD)  # a stream whose first chunk is still upstream
    await asyncio.sleep(0)
    assert real.writes == [HEAD]
    transport.write(b"data: 1\n\n")
    assert real.writes == [HEAD, b"data: 1\n\n"]


async def test_closing_sends_a_held_head_first() -> None:
    transport, real = holding()
    transport.write(HEAD)
    transport.close()
    assert real.writes == [HEAD] and real.closed
    await asyncio.sleep(0)
    assert real.writes == [HEAD]


async def test_other_writes_and_calls_pass_straight_through() -> None:
    transport, real = holding()
    transport.write(b"HTTP/1.1 100 Continue")  # not a complete head
    transport.write(b"chunk")
    assert real.writes == [b"HTTP/1.1 100 Continue", b"chunk"]
    assert transport.get_extra_info("peername") == ("127.0.0.1", 5)
    assert transport.is_closing() is False


def data_segments_in(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return struct.unpack_from("I", info, TCP_INFO_DATA_SEGS_IN)[0]


def exchange(sock: socket.socket, request: bytes) -> tuple[bytes, bytes]:
    """Send one request on a kept-alive connection; read the whole response."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head, body


def post(path: str, payload: object, key: str = "test-key") -> bytes:
    body = orjson.dumps(payload)
    return (
        f"POST {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="Linux TCP_INFO")
@pytest.mark.parametrize("workers", [1, 2])
def test_every_response_arrives_in_one_segment(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess], workers: int
) -> None:
    gw = start_gateway(upstream_config(upstream), args=["--workers", str(workers)])
    chat = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    requests = {
        "chat": post("/v1/chat/completions", chat),
        "models": b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer test-key\r\n\r\n",
        "bad key": post("/v1/chat/completions", chat, key="wrong"),
        "bad body": post("/v1/chat/completions", {"model": 5}),
    }
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        for name, request in requests.items():
            before = data_segments_in(sock)
            head, body = exchange(sock, request)
            assert head.startswith(b"HTTP/1.1 "), name
            assert body, name
            assert data_segments_in(sock) - before == 1, name


def test_a_closing_connection_still_gets_the_whole_response(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess]
) -> None:
    gw = start_gateway(upstream_config(upstream))
    chat = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    request = post("/v1/chat/completions", chat).replace(
        b"Host: gw\r\n", b"Host: gw\r\nConnection: close\r\n"
    )
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk  # until the gateway closes
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 ") and b"connection: close" in head.lower()
    assert orjson.loads(body)["object"] == "chat.completion"


MINIMAL = {
    "providers": [{"name": "mock", "type": "mock"}],
    "models": [{"name": "m1", "provider": "mock"}],
    "routes": [{"name": "auto", "models": ["m1"]}],
}


def test_the_limits_default_to_what_a_public_gateway_needs() -> None:
    limits = InboundLimits.of(parse_config(MINIMAL, env={}).server, open_files=20_000)
    assert limits == InboundLimits(
        header_timeout=10, max_connections=9_968, max_header_bytes=65_536, max_headers=100
    )
    server = parse_config({**MINIMAL, "server": {"max_connections": 50}}, env={}).server
    assert InboundLimits.of(server, open_files=20_000).max_connections == 50
    assert server.idle_timeout == 75  # past the 60 s nginx keeps idle upstream connections


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("header_timeout", 0),
        ("idle_timeout", -1),
        ("max_connections", 0),
        ("max_header_bytes", 100),
        ("max_headers", 100_000),
    ],
)
def test_limits_out_of_bounds_are_configuration_errors(setting: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"server.{setting}"):
        parse_config({**MINIMAL, "server": {setting: value}}, env={})


def test_every_worker_process_gets_the_limits_and_a_state_of_its_own() -> None:
    inbound = Inbound(InboundLimits(max_connections=64))
    inbound.lingering = 5
    factory = functools.partial(JoinedWritesProtocol, inbound=inbound)
    copy = pickle.loads(pickle.dumps(factory))  # what uvicorn's spawned workers get
    assert copy.func is JoinedWritesProtocol
    worker = copy.keywords["inbound"]
    assert worker.limits == inbound.limits
    assert worker.lingering == 0 and worker.trips is not inbound.trips
    assert b"retry-after: 1\r\n" in worker.overloaded


# -- the limits, on a protocol driven by hand ---------------------------------------------


class WireTransport(RecordingTransport):
    """A transport that also half-closes, as uvloop's does, and says whether it reads."""

    def __init__(self) -> None:
        super().__init__()
        self.eof = False
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("10.0.0.7", 5555), "sockname": ("127.0.0.1", 80)}.get(name, default)


class Trips:
    """Stands in for the SummaryLog: what was recorded, by cause."""

    def __init__(self) -> None:
        self.causes: list[str] = []

    def record(self, cause: str, message: str, level: int = 0, **fields: object) -> None:
        self.causes.append(cause)


async def _app(scope: object, receive: object, send: object) -> None:
    pass


class Wire:
    """One worker's protocol state (uvicorn's ServerState), connections made by hand;
    requests are parsed but no ASGI task runs: `started` lists the requests let in."""

    def __init__(self, **limits: Any) -> None:
        from uvicorn.config import Config
        from uvicorn.server import ServerState

        self.config = Config(_app, log_level="warning")
        self.config.load()
        self.state = ServerState()
        self.trips = Trips()
        self.inbound = Inbound(InboundLimits(**limits), trips=self.trips)  # type: ignore[arg-type]
        self.started: list[dict[str, Any]] = []

    def connect(self) -> tuple[JoinedWritesProtocol, WireTransport]:
        protocol = JoinedWritesProtocol(
            config=self.config, server_state=self.state, app_state={}, inbound=self.inbound
        )

        def start(cycle: Any, app: Any) -> None:
            protocol._answering = cycle  # what the protocol's own does, minus the task
            self.started.append(cycle.scope)

        protocol._start_asgi_task = start  # type: ignore[method-assign]
        transport = WireTransport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        return protocol, transport


def answer(transport: WireTransport) -> tuple[int, dict[str, Any]]:
    data = b"".join(transport.writes)
    head, body = data.split(b"\r\n\r\n", 1)
    return int(head.split(b" ")[1]), orjson.loads(body)


async def test_a_body_in_the_same_read_as_a_small_head_is_not_counted_as_head() -> None:
    wire = Wire(max_header_bytes=1024)
    protocol, transport = wire.connect()
    body = b"x" * 5000
    protocol.data_received(
        b"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    assert [scope["path"] for scope in wire.started] == ["/v1/x"]
    assert protocol.cycle.body == body and transport.writes == [] and wire.trips.causes == []
    protocol.cycle.response_complete = True  # answered; the next read is a new head
    protocol.data_received(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
    assert [scope["path"] for scope in wire.started] == ["/v1/x", "/healthz"]
    protocol.connection_lost(None)


async def test_reading_resumes_once_a_large_body_is_whole_so_a_client_leaving_is_heard() -> None:
    wire = Wire()
    protocol, transport = wire.connect()
    body = b"x" * (100 * 1024)
    protocol.data_received(
        b"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:40_000]
    )
    protocol.data_received(body[40_000:90_000])
    assert not transport.reading  # 90,000 bytes wait for the app: uvicorn pauses
    protocol.data_received(body[90_000:])
    assert protocol.cycle.body == body and not protocol.cycle.more_body
    # The body is whole: reading goes on, so that the client's leaving is heard at once.
    assert transport.reading
    cycle = protocol.cycle
    protocol.connection_lost(None)
    assert cycle.disconnected


async def test_a_head_over_the_limit_is_answered_431_and_the_rest_dropped() -> None:
    wire = Wire(max_header_bytes=1024)
    protocol, transport = wire.connect()
    protocol.data_received(b"GET / HTTP/1.1\r\nX-A: " + b"a" * 600)
    assert transport.writes == []  # 622 bytes: still within the limit
    protocol.data_received(b"a" * 600)
    status, body = answer(transport)
    assert status == 431 and body["error"]["code"] == "request_header_fields_too_large"
    assert transport.eof and not transport.closed and wire.started == []
    assert wire.trips.causes == ["header_too_large"] and wire.inbound.lingering == 1
    protocol.data_received(b"a" * 200 * 1024)  # dropped, unparsed
    assert not transport.closed
    protocol.data_received(b"a" * 100 * 1024)  # past LINGER_BYTES: closed
    assert transport.closed
    protocol.connection_lost(None)
    assert wire.inbound.lingering == 0


async def test_one_header_too_many_is_answered_431() -> None:
    wire = Wire(max_headers=10)
    protocol, transport = wire.connect()
    ten = b"".join(b"X-%d: v\r\n" % i for i in range(10))
    protocol.data_received(b"GET / HTTP/1.1\r\n" + ten + b"\r\n")
    assert len(wire.started) == 1 and transport.writes == []
    protocol.cycle.response_complete = True
    protocol.data_received(b"GET / HTTP/1.1\r\n" + ten + b"X-10: v\r\n\r\n")
    status, body = answer(transport)
    assert status == 431 and body["error"]["message"] == "The request has more than 10 headers."
    assert len(wire.started) == 1 and wire.trips.causes == ["too_many_headers"]
    protocol.connection_lost(None)


async def test_the_header_deadline_runs_from_connecting_then_from_each_heads_first_byte() -> None:
    wire = Wire(header_timeout=5)
    protocol, transport = wire.connect()
    assert protocol._head_timer is not None  # from connecting
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert protocol._head_timer is None  # a complete head
    protocol.cycle.response_complete = True
    protocol.data_received(b"GET / HTT")  # a kept-alive connection starts a head
    timer = protocol._head_timer
    assert timer is not None
    protocol.data_received(b"P/1.1\r\n")
    assert protocol._head_timer is timer  # not re-armed per read: one deadline per head
    protocol._head_timed_out()  # the deadline passes
    status, body = answer(transport)
    assert status == 408 and body["error"]["code"] == "request_timeout"
    assert wire.trips.causes == ["header_timeout"]

    silent, quiet = wire.connect()
    silent._head_timed_out()
    assert quiet.writes == [] and quiet.closed  # nothing asked, nothing answered
    assert wire.trips.causes == ["header_timeout", "header_timeout"]
    protocol.connection_lost(None)
    silent.connection_lost(None)


async def test_a_connection_over_the_limit_is_answered_503_and_never_parsed() -> None:
    wire = Wire(max_connections=2)
    (a, _), (b, _) = wire.connect(), wire.connect()
    refused, transport = wire.connect()
    status, body = answer(transport)
    assert status == 503 and b"retry-after: 1\r\n" in transport.writes[0]
    assert body["error"]["code"] == "too_many_connections" and transport.eof
    refused.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert wire.started == [] and len(wire.state.connections) == 2
    refused.connection_lost(None)
    a.connection_lost(None)
    c, transport = wire.connect()  # room again
    c.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert len(wire.started) == 1 and transport.writes == []
    assert wire.trips.causes == ["too_many_connections"] and wire.inbound.lingering == 0
    for protocol in (b, c):
        protocol.connection_lost(None)


# -- rendered heads, against uvicorn's own rendering ------------------------------------

RENDERED_BODY = b'{"id":"chatcmpl-1"}'
RENDERED_PAIRS = [
    (b"content-type", b"application/json"),
    (b"content-length", b"%d" % len(RENDERED_BODY)),
    (b"x-request-id", b"req_1"),
    (b"x-ratelimit-remaining-requests", b"59"),
]


STREAMED_PAIRS = [(b"content-type", b"text/event-stream"), (b"x-request-id", b"req_2")]


async def _rendered_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the headers as pairs on /pairs, as RenderedHeaders elsewhere; on
    /stream and /stream-pairs a streamed (chunked) body the same two ways."""
    if scope["type"] != "http":
        return
    if scope["path"].startswith("/stream"):
        streamed: Any = STREAMED_PAIRS
        if scope["path"] == "/stream":
            streamed = RenderedHeaders(render_headers(STREAMED_PAIRS), None)
        await send({"type": "http.response.start", "status": 200, "headers": streamed})
        for event in (b"data: 1\n\n", b"data: 2\n\n"):
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    if scope["path"] == "/pairs":
        headers: Any = RENDERED_PAIRS
    else:
        headers = RenderedHeaders(render_headers(RENDERED_PAIRS), len(RENDERED_BODY))
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": RENDERED_BODY})


async def _serve(protocol: Callable[..., Any]) -> tuple[asyncio.Server, int]:
    """A uvicorn protocol listening on loopback, as uvicorn's server starts one."""
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    config = Config(
        _rendered_app,
        headers=[("x-content-type-options", "nosniff")],
        server_header=False,
        access_log=False,  # as the gateway runs by default: with one, uvicorn's way
    )
    config.load()
    state = ServerState()
    state.default_headers = [(b"date", b"Fri, 04 Dec 2026 03:00:00 GMT")]
    state.default_headers += config.encoded_headers
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: protocol(config=config, server_state=state, app_state={}), "127.0.0.1", 0
    )
    return server, server.sockets[0].getsockname()[1]


async def _heads(port: int, requests: bytes, count: int) -> list[bytes]:
    """Send `requests` at once (pipelined); the heads of the `count` answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(requests)
    heads = []
    for _ in range(count):
        head = await reader.readuntil(b"\r\n\r\n")
        assert await reader.readexactly(len(RENDERED_BODY)) == RENDERED_BODY
        heads.append(head)
    writer.close()
    return heads


Read = Callable[[int, bytes, int], Awaitable[list[bytes]]]


async def _both_servers(
    monkeypatch: pytest.MonkeyPatch, read: Read, keep: bytes, close: bytes, old: bytes,
    paired: bytes,
) -> tuple[dict[str, list[bytes]], list[bytes], list[str]]:  # fmt: skip
    """The answers of our protocol and uvicorn's (`read` each) to a kept-alive request
    pipelined behind another, a closing one, an HTTP/1.0 one; the answer to `paired`;
    and by which server RenderedHeaders were read as pairs (ours writes the lines)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    read_as_pairs: list[str] = []
    serving = [""]
    iterate = RenderedHeaders.__iter__
    monkeypatch.setattr(
        RenderedHeaders, "__iter__", lambda self: read_as_pairs.append(serving[0]) or iterate(self)
    )
    ours = functools.partial(JoinedWritesProtocol, inbound=Inbound(InboundLimits()))
    answers = {}
    for name, protocol in (("ours", ours), ("uvicorn's", HttpToolsProtocol)):
        serving[0] = name
        server, port = await _serve(protocol)
        async with server:
            # Kept alive, pipelined behind another (its cycle waits in uvicorn's queue),
            # then closing: the connection's state after each is uvicorn's.
            answers[name] = await read(port, keep + keep + close, 3)
            answers[name] += await read(port, old, 1)
            pairs = await read(port, paired, 1)
    return answers, pairs, read_as_pairs


async def test_a_rendered_head_is_what_uvicorn_writes_for_the_same_headers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keep = b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n"
    close = b"GET / HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    old = b"GET / HTTP/1.0\r\nHost: gw\r\n\r\n"
    paired_request = keep.replace(b"/ ", b"/pairs ")
    heads, paired, read_as_pairs = await _both_servers(
        monkeypatch, _heads, keep, close, old, paired_request
    )
    assert heads["ours"] == heads["uvicorn's"]
    assert read_as_pairs == ["uvicorn's"] * 4
    assert paired == heads["ours"][:1]  # pairs and rendered lines: the same head
    assert heads["ours"][0] == (
        b"HTTP/1.1 201 Created\r\ndate: Fri, 04 Dec 2026 03:00:00 GMT\r\n"
        b"x-content-type-options: nosniff\r\n" + render_headers(RENDERED_PAIRS) + b"\r\n"
    )
    assert b"connection: close" in heads["ours"][2] and b"connection: close" in heads["ours"][3]


# -- the BodyWriter: a streamed body's pieces written without an ASGI send ----------------

_EVENTS = (b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n")


async def _streamed(
    wire: Wire, direct: bool, events: tuple[bytes, ...] = _EVENTS
) -> tuple[JoinedWritesProtocol, WireTransport]:
    """A POST answered with a chunked body: the first piece sent, the rest written by
    `write_body` (direct) or sent as uvicorn is sent them."""
    protocol, transport = wire.connect()
    protocol.data_received(b"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
    cycle = protocol.cycle
    headers = [(b"content-type", b"text/event-stream")]
    await cycle.send({"type": "http.response.start", "status": 200, "headers": headers})
    await cycle.send({"type": "http.response.body", "body": events[0], "more_body": True})
    for event in events[1:]:
        if direct:
            assert protocol.write_body(event) is None
        else:
            await cycle.send({"type": "http.response.body", "body": event, "more_body": True})
    await cycle.send({"type": "http.response.body", "body": b"", "more_body": False})
    return protocol, transport


async def test_write_body_puts_on_the_wire_what_uvicorns_send_would() -> None:
    wire = Wire()
    direct, by_writer = await _streamed(wire, True)
    _, by_send = await _streamed(wire, False)
    assert direct._extensions["gatewise.body"]["writer"] is direct
    wire_bytes = b"".join(by_writer.writes)
    assert wire_bytes == b"".join(by_send.writes)
    assert wire_bytes.endswith(b"9\r\ndata: 2\n\n\r\n9\r\ndata: 3\n\n\r\n0\r\n\r\n")


async def test_a_large_piece_is_framed_beside_itself_as_uvicorns_send_frames_it() -> None:
    large = b"data: " + b"x" * LARGE_WRITE + b"\n\n"
    _, by_writer = await _streamed(Wire(), True, (*_EVENTS[:2], large))
    _, by_send = await _streamed(Wire(), False, (*_EVENTS[:2], large))
    assert b"".join(by_writer.writes) == b"".join(by_send.writes)
    assert [piece for pieces in by_writer.lines for piece in pieces if piece is large] == [large]


async def test_write_body_hands_back_the_wait_while_the_client_is_slow_to_read() -> None:
    protocol, transport = Wire().connect()
    protocol.data_received(b"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(RuntimeError, match="outside a chunked response's body"):
        protocol.write_body(b"data: early\n\n")  # nothing has started the response
    cycle = protocol.cycle
    await cycle.send({"type": "http.response.start", "status": 200, "headers": []})
    await cycle.send({"type": "http.response.body", "body": b"data: 0\n\n", "more_body": True})
    protocol.pause_writing()  # the transport's buffer is past its high-water mark
    wait = protocol.write_body(b"data: 1\n\n")
    assert wait is not None and b"data: 1" in transport.writes[-1]
    waiting = asyncio.ensure_future(wait)
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()
    protocol.resume_writing()
    await waiting
    assert protocol.write_body(b"data: 2\n\n") is None
    protocol.connection_lost(None)
    writes = len(transport.writes)
    assert protocol.write_body(b"data: 3\n\n") is None  # the client left: nothing written
    assert len(transport.writes) == writes


async def test_a_client_whose_buffer_stays_full_for_send_timeout_is_dropped() -> None:
    wire = Wire(send_timeout=7)
    protocol, transport = wire.connect()
    protocol.pause_writing()  # the client takes nothing: its write buffer is full
    timer = protocol._send_timer
    assert timer is not None and round(timer.when() - asyncio.get_running_loop().time()) == 7
    protocol.resume_writing()  # it read some: no deadline while it keeps up
    assert protocol._send_timer is None and timer.cancelled()
    protocol.pause_writing()
    aborted: list[bool] = []
    transport.abort = lambda: aborted.append(True)  # type: ignore[attr-defined]
    protocol._send_timed_out()  # the deadline passes
    assert aborted == [True] and wire.trips.causes == ["send_timeout"]
    protocol.pause_writing()
    protocol.connection_lost(None)
    assert protocol._send_timer is None  # nothing left armed on a closed connection


async def _streams(port: int, requests: bytes, count: int) -> list[bytes]:
    """Send `requests` at once (pipelined); the `count` chunked answers, whole."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(requests)
    answers = [await reader.readuntil(b"0\r\n\r\n") for _ in range(count)]
    writer.close()
    return answers


async def test_a_rendered_streamed_head_is_framed_as_uvicorn_frames_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keep = b"POST /stream HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n"
    close = keep.replace(b"Host: gw", b"Host: gw\r\nConnection: close")
    old = keep.replace(b"HTTP/1.1", b"HTTP/1.0")
    paired_request = keep.replace(b"/stream", b"/stream-pairs")
    answers, paired, read_as_pairs = await _both_servers(
        monkeypatch, _streams, keep, close, old, paired_request
    )
    assert answers["ours"] == answers["uvicorn's"]
    assert read_as_pairs == ["uvicorn's"] * 4
    assert paired == answers["ours"][:1]
    assert answers["ours"][0] == (
        b"HTTP/1.1 200 OK\r\ndate: Fri, 04 Dec 2026 03:00:00 GMT\r\n"
        b"x-content-type-options: nosniff\r\n" + render_headers(STREAMED_PAIRS)
        + b"transfer-encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\n0\r\n\r\n"
    )  # fmt: skip


async def test_a_lost_connection_is_freed_by_reference_counting() -> None:
    """A connection's protocol, its cycle and its scope's extensions referred to one
    another, so that a lost connection was freed only by a full collection, which under
    load runs every 30 minutes (gateway/server/collector.py): ~11 KiB a stream served
    until then (bench/README.md). Now they are freed when the last reference goes."""
    wire = Wire()
    protocol, transport = wire.connect()
    protocol.data_received(b"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
    cycle = protocol.cycle
    await cycle.send({"type": "http.response.start", "status": 200, "headers": []})
    assert protocol.write_body(b"data: 0\n\n") is None
    protocol.connection_lost(None)
    assert protocol.write_body(b"data: 1\n\n") is None  # a late write goes nowhere
    assert not protocol.start_body(b"")
    del protocol.__dict__["_start_asgi_task"]  # the harness's stub, which refers to it
    lost = weakref.ref(protocol)
    wire.started.clear()  # the scope the handler was given: its extensions are empty now
    gc.disable()
    try:
        del protocol, cycle, transport
        assert lost() is None
    finally:
        gc.enable()
