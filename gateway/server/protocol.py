"""uvicorn's httptools protocol, with the gateway's inbound limits, sending a response's
head and body in one write, writing the proxy's rendered heads as they are, and telling
a handler at once when its client's connection is lost.

Inbound limits: uvicorn times a connection out only once it has answered on it (its
keep-alive timer), has no limit on connections but `limit_concurrency`, which answers
503 to every request once the limit is reached, existing clients' included, and lets
httptools gather a request head of any size (by repeated `bytes +=`: quadratic;
`h11_max_incomplete_event_size` is for h11 only). So a
silent connection was held forever, and a 128 MiB header took seconds of CPU. Here:

- a connection must send a complete request head within `header_timeout` of connecting
  (or of the head's first byte, on a kept-alive one): the deadline is not reset per
  byte, so a trickled head is cut too. Silent ones are closed, partial heads get 408;
- past `max_connections` (per worker) a new connection is answered 503 with Retry-After
  and closed, before anything is read, and the connections already open are served;
- a head larger than `max_header_bytes` is refused with 431 before the parser sees the
  excess, and so is one with more than `max_headers` headers;
- a request's body must arrive whole within `body_timeout` of its head's end, again not
  reset per byte: a client that trickles a body (slow POST), even one already answered
  (a 401 before its body), held its connection for as long as it liked. Past it: 408 if
  the request is not answered yet (its handler hears a disconnect), and the connection
  is closed;
- idle kept-alive connections are uvicorn's (`timeout_keep_alive` = `idle_timeout`).

The probe port (`gatewise serve --probe-port`) is served by this protocol too, from a
thread of its own, with an `Inbound` of its own (gateway/server/probes.py).

Every limit tripped is logged once per cause with counts (`SummaryLog`), never once per
connection. A refused connection is half-closed and what the client still sends is read
and dropped for a moment (bounded), so that the client reads the answer instead of a
reset.

Joined writes: uvicorn writes the status line and headers as soon as the app starts its
response, and the body in a second write. With TCP_NODELAY (asyncio's default) each
write is its own TCP segment, and the client wakes for each: 6 segments per proxied
request on loopback where 4 do. Here the head waits for the next write on the
connection and leaves with it in one send, or leaves at the end of the loop iteration if
nothing follows (a stream whose first chunk is not ready), so no byte waits past the
current iteration.

Rendered heads: an answer whose headers are `RenderedHeaders` (gateway.core.headers: the
proxy's) has its head written as it is, not checked and rendered pair by pair; a
streamed one (no content-length) is framed as chunked, as uvicorn would frame it.

Lost connections: the protocol is also the connection's `DisconnectWatch`
(gateway/http/disconnect.py), offered in every request's scope: a handler awaiting an
upstream arms it, and a lost connection cancels that handler at once, with no task per
request listening for it.

Shutting down: uvicorn stops accepting, closes idle connections, lets the answers under
way finish for its `timeout_graceful_shutdown`, then cancels what is left and stops
without waiting for it: a long stream was cut mid-chunk (the client saw a broken
connection, the log a traceback). Here a connection with an answer under way gets
`shutdown_timeout` to finish it; then its handler hears, through the same watch, that
the server stops waiting, and ends the answer in its API's shape (a stream: an error
event and its end marker; before the first byte: 503 with Retry-After). uvicorn's own
deadline comes `END_GRACE` seconds later, for what could not be told.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any

import httptools
import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.protocols.utils import get_remote_addr
from uvicorn.server import ServerState

from gateway.core.config import ServerConfig
from gateway.core.headers import RenderedHeaders, render_headers
from gateway.core.ids import request_id_from
from gateway.core.logs import SummaryLog
from gateway.http.disconnect import WATCH
from gateway.http.errors import anthropic_error_body, anthropic_error_type, error_body
from gateway.http.streaming import BODY
from gateway.server.collector import Collector
from gateway.server.metrics import METRICS_STATE

__all__ = [
    "END_GRACE",
    "LARGE_WRITE",
    "RESERVED_FILES",
    "Inbound",
    "InboundLimits",
    "JoinedWritesProtocol",
]

# Files a worker keeps apart from its connections: the listening socket, the store, the
# logs, the event loop's own, a metrics scrape.
RESERVED_FILES = 64
LINGER_SECONDS = 1.0  # how long a refused connection is read (and dropped) at most
LINGER_BYTES = 256 * 1024  # and how much of it
# Seconds from `shutdown_timeout` to uvicorn's cancelling of what is still running: for
# the answers ended at the deadline to be written and recorded.
END_GRACE = 5.0
# A body piece at least this large is handed to the transport beside its framing
# (`writelines`: one writev) rather than copied into one bytes with it: framing an 8 MiB
# event took two copies and 9 ms here (timeit), a head held for it one copy more.
LARGE_WRITE = 64 * 1024


@dataclass(frozen=True, slots=True)
class InboundLimits:
    """The limits one worker enforces (gateway.core.config.ServerConfig documents them)."""

    header_timeout: float = 10.0
    body_timeout: float = 60.0
    send_timeout: float = 60.0
    shutdown_timeout: float = 25.0
    max_connections: int = 10_000
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100

    @classmethod
    def of(cls, server: ServerConfig, open_files: int) -> InboundLimits:
        """The configured limits. Unset, max_connections is what the open-file limit
        allows once `RESERVED_FILES` are set aside: half the rest, for a streamed answer
        holds two files (its client's connection and its upstream's). Past it a client is
        refused with 503; at the open-file limit itself, accepting would fail and every
        stream the worker holds would stall behind the failing accepts."""
        spare = max(2, open_files - RESERVED_FILES)
        return cls(
            header_timeout=server.header_timeout,
            body_timeout=server.body_timeout,
            send_timeout=server.send_timeout,
            shutdown_timeout=server.shutdown_timeout,
            max_connections=server.max_connections or spare // 2,
            max_header_bytes=server.max_header_bytes,
            max_headers=server.max_headers,
        )


def _answer(
    status: int, reason: str, message: str, code: str, extra: str = "", anthropic: bool = False
) -> bytes:
    """A whole response that closes its connection, with an OpenAI-shaped error body (or
    Anthropic's, for its Messages API)."""
    if anthropic:
        body = orjson.dumps(anthropic_error_body(message, anthropic_error_type(status)))
    else:
        type_ = "server_error" if status >= 500 else "invalid_request_error"
        body = orjson.dumps(error_body(message, type_, code))
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n"
        f"x-content-type-options: nosniff\r\n{extra}\r\n"
    )
    return head.encode("ascii") + body


def _with_request_id(answer: bytes) -> bytes:
    """A refusal with an `x-request-id` of its own, as every answer has (these are
    written before any request is parsed, so there is no client id to echo)."""
    line_end = answer.index(b"\r\n")
    request_id = request_id_from(None).encode()
    return answer[:line_end] + b"\r\nx-request-id: " + request_id + answer[line_end:]


class Inbound:
    """The limits and what one worker process keeps about them: the log of limits
    tripped and how many refused connections linger. Pickled (for worker processes) as
    its limits alone, so every process starts with its own state. The probe port's
    (`collects` False) only limits its connections: the clients' port's collects the
    garbage and is what the metrics count."""

    def __init__(
        self, limits: InboundLimits, trips: SummaryLog | None = None, collects: bool = True
    ) -> None:
        self.limits = limits
        self.collects = collects
        self.serving = False  # from the first connection on (`serve`)
        self.draining = False  # the server has begun to shut down (`JoinedWritesProtocol.shutdown`)
        self.trips = trips or SummaryLog(
            logging.getLogger("gatewise.inbound"), "inbound_limit", "connections closed"
        )
        self.lingering = 0
        self._told_stopped = False  # the shutdown deadline's one log line is out
        # The server's open connections (its protocols), from the first one on.
        self.connections: Collection[Any] = ()
        self.max_lingering = max(64, limits.max_connections // 8)
        # Young collections on a clock; full ones when at most 1 % of the connections
        # are open. Started by the worker's first connection (gateway/server/collector.py).
        self.collector = Collector(quiet=max(16, limits.max_connections // 100))
        self.overloaded = _answer(
            503,
            "Service Unavailable",
            "The gateway has too many open connections; retry shortly.",
            "too_many_connections",
            "retry-after: 1\r\n",
        )
        self.header_too_large = _answer(
            431,
            "Request Header Fields Too Large",
            f"The request line and headers exceed {limits.max_header_bytes:,} bytes.",
            "request_header_fields_too_large",
        )
        self.too_many_headers = _answer(
            431,
            "Request Header Fields Too Large",
            f"The request has more than {limits.max_headers:,} headers.",
            "request_header_fields_too_large",
        )
        self.header_timeout = _answer(
            408,
            "Request Timeout",
            f"The request head did not arrive within {limits.header_timeout:g} s.",
            "request_timeout",
        )
        # Given up while its body arrives, a request's path is known: these answer in the
        # shape of the API asked (OpenAI's, or Anthropic's for /v1/messages).
        self.shutting_down = tuple(
            _answer(
                503,
                "Service Unavailable",
                "The gateway is shutting down; retry the request.",
                "shutting_down",
                "retry-after: 1\r\n",
                anthropic,
            )
            for anthropic in (False, True)
        )
        self.body_timeout = tuple(
            _answer(
                408,
                "Request Timeout",
                f"The request body did not arrive whole within {limits.body_timeout:g} s.",
                "request_timeout",
                anthropic=anthropic,
            )
            for anthropic in (False, True)
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return Inbound, (self.limits, None, self.collects)

    def stopping(self) -> None:
        """The shutdown deadline passed for the first of this worker's answers under way:
        one line for all of them, not one per answer. The others' deadlines have not fired
        yet (they fire in this turn of the loop or the next), so they are counted."""
        if self._told_stopped:
            return
        self._told_stopped = True
        ended = 1 + sum(1 for c in self.connections if getattr(c, "_stop_timer", None) is not None)
        logging.getLogger("gatewise.inbound").warning(
            "shutdown_timeout (%g s) passed: %d answers under way were ended, their clients "
            "told to retry",
            self.limits.shutdown_timeout,
            ended,
            extra={"fields": {"event": "shutdown_deadline", "ended": ended}},
        )

    def serve(
        self,
        loop: asyncio.AbstractEventLoop,
        connections: Collection[Any],
        app_state: dict[str, Any],
    ) -> None:
        """From the worker's first connection on: collect on the clock, and count
        `connections` (the server's open ones). The app's metrics live in the lifespan's
        state, and learn of this here, since uvicorn builds the app and the protocol apart."""
        self.connections = connections
        self.serving = True
        if not self.collects:
            return
        self.collector.start(loop, connections)
        metrics = app_state.get(METRICS_STATE)
        if metrics is not None:
            metrics.inbound = self

    def totals(self) -> dict[str, int]:
        """Limits tripped in this process since it started, by cause."""
        return dict(self.trips.totals)

    def open_connections(self) -> int:
        return len(self.connections)


class _TooManyHeaders(Exception):
    """Raised in a parser callback to stop parsing; httptools re-raises it as context."""


class _HeadHoldingTransport:
    """Delegates to the real transport; a response head is held for the body's write."""

    __slots__ = ("_held", "_loop", "_transport", "is_closing", "pause_reading", "resume_reading")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self.is_closing = transport.is_closing
        self.pause_reading = transport.pause_reading
        self.resume_reading = transport.resume_reading

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if len(data) < LARGE_WRITE:
                self._transport.write(held + data)
            else:  # one send all the same (writev), without a copy of the body
                self._transport.writelines((held, data))
        elif data.startswith(b"HTTP/1.1 ") and data.endswith(b"\r\n\r\n"):
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def writelines(self, pieces: tuple[bytes, ...]) -> None:
        """Pieces written in one send, after a held head."""
        held = self._held
        if held is not None:
            self._held = None
            pieces = (held, *pieces)
        self._transport.writelines(pieces)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # the rarely used rest of the interface
        return getattr(self._transport, name)


# The server's own headers (date, x-content-type-options) as lines: uvicorn replaces its
# list once a second, so the lines are rendered again when the list is another one.
_defaults: list[Any] = [None, b""]


def _default_lines(headers: list[tuple[bytes, bytes]]) -> bytes:
    cached = _defaults
    if cached[0] is not headers:
        cached[:] = [headers, render_headers(headers)]
    lines: bytes = cached[1]
    return lines


class _Cycle(RequestResponseCycle):
    """uvicorn's request-response cycle, writing a head of `RenderedHeaders`
    (gateway.core.headers) as it is: the proxy's answers, whose headers uvicorn would
    check and render pair by pair (~0.6 µs a header, 15 on a keyed answer). Anything
    else, and anything uvicorn must see (an access log, a paused or lost connection),
    goes uvicorn's way."""

    async def send(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            headers = message.get("headers")
            if type(headers) is RenderedHeaders and self.start(message["status"], headers):
                return
        await RequestResponseCycle.send(self, message)

    def start(self, status: int, headers: RenderedHeaders) -> bool:
        """Write the head now, as uvicorn would; False where uvicorn must write it (an
        access log, a paused or lost connection, a HEAD) or one is out already."""
        if (
            self.response_started
            or self.access_log
            or self.disconnected
            or self.flow.write_paused
            or (headers.content_length is None and self.scope["method"] == "HEAD")
        ):
            return False
        self.response_started = True
        self.waiting_for_100_continue = False
        length = headers.content_length
        if length is None:  # a streamed body: chunked, as uvicorn frames it
            self.chunked_encoding = True
            self.expected_content_length = 0
            framing = b"transfer-encoding: chunked\r\n"
        else:
            self.chunked_encoding = False
            self.expected_content_length = length
            framing = b""
        head = STATUS_LINE[status] + _default_lines(self.default_headers)
        close = b"" if self.keep_alive else b"connection: close\r\n"
        self.transport.write(head + headers.lines + close + framing + b"\r\n")
        return True


class JoinedWritesProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the inbound limits and joined writes. Built by
    uvicorn per connection through `functools.partial(JoinedWritesProtocol, inbound=...)`.
    The per-connection state below starts as class attributes: nothing to set on the
    request path unless it changes."""

    _head_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None  # from a head's end to its body's
    _reading_head = True  # from connecting, or the end of the last request, to a full head
    _head_bytes = 0  # bytes of the head so far
    _refused = False  # answered by a limit: what arrives now is dropped
    _dropped = 0
    _linger: asyncio.TimerHandle | None = None
    _gone: Callable[[bool], None] | None = None  # the armed handler's cancellation
    _stop_timer: asyncio.TimerHandle | None = None  # the shutdown deadline of its answer
    _stopping = False  # past it: a handler that arms hears it at once
    _send_timer: asyncio.TimerHandle | None = None  # while the client's buffer is full
    _when_sent: list[Callable[[], None]] | None = None  # `when_sent`'s, until it drains
    _lost = False
    # The cycle whose answer is under way (`_start_asgi_task`). Not always `cycle`: uvicorn
    # sets `cycle` to a pipelined request's as soon as its head is read.
    _answering: RequestResponseCycle | None = None
    _pipelined = 0  # requests read while an answer was under way, not started yet

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        inbound: Inbound,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.inbound = inbound
        self.limits = inbound.limits
        self._max_header_bytes = inbound.limits.max_header_bytes
        self._max_headers = inbound.limits.max_headers

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        inbound = self.inbound
        if len(self.connections) >= self.limits.max_connections:
            self._refuse_connection(transport)
            return
        if not inbound.serving:  # the worker's first connection
            inbound.serve(self.loop, self.connections, self.app_state)
        # Offered in each request's scope: this protocol as its DisconnectWatch and its
        # BodyWriter. One per connection, not per request.
        self._extensions: dict[str, dict[object, object]] = {
            WATCH: {"watch": self},
            BODY: {"writer": self},
        }
        super().connection_made(_HeadHoldingTransport(transport, self.loop))  # type: ignore[arg-type]
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
            self.inbound.lingering -= 1
        if self._stop_timer is not None:
            self._stop_timer.cancel()
            self._stop_timer = None
        self._lost = True
        answering = self._answering
        if answering is not None and not answering.response_complete:
            # uvicorn marks only its newest cycle, a pipelined request's once its head is
            # read: the answer under way ahead of it would end without a response and
            # uvicorn would log an error and write a 500 to the closed transport.
            answering.disconnected = True
            answering.message_event.set()
        super().connection_lost(exc)
        self._sent()  # nothing more leaves: what waited for it holds nothing now
        gone = self._gone
        if gone is not None:
            self._gone = None
            gone(False)
        # Nothing more is read or written here. What ties this protocol to its cycle and
        # to its requests' scopes is dropped, so that all of it is freed by reference
        # counting once the handler lets go: as reference cycles they reached the oldest
        # generation with every stream, which under load is collected only every
        # `overdue` seconds (gateway/server/collector.py), ~11 KiB a stream until then.
        extensions = self.__dict__.get("_extensions")  # none if refused as it was made
        if extensions is not None:
            extensions.clear()
        self.cycle = None  # type: ignore[assignment]
        self._answering = None

    def shutdown(self) -> None:
        """uvicorn's (close if idle, else after this answer), and a deadline for the
        answer under way: past it, its handler is told to end it (`_stop`)."""
        self.inbound.draining = True
        super().shutdown()
        if not self.transport.is_closing() and self._stop_timer is None:
            self._stop_timer = self.loop.call_later(self.limits.shutdown_timeout, self._stop)

    def _stop(self) -> None:
        self._stop_timer = None
        if not self._stopping:
            self._stopping = True
            self.inbound.stopping()
        gone = self._gone
        if gone is not None:
            self._gone = None
            gone(True)
        elif not self._reading_head:  # its body is still arriving: no handler to tell yet
            what = "request body incomplete at the shutdown deadline"
            self._cut_body("shutdown_timeout", what, self.inbound.shutting_down)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = self._extensions

    def arm(self, gone: Callable[[bool], None]) -> bool:
        if self._lost:
            return False
        self._gone = gone
        if self._stopping:  # armed after the deadline: told on the loop's next turn
            self.loop.call_soon(self._stop)
        return True

    def disarm(self) -> None:
        self._gone = None

    def write_body(self, data: bytes) -> Awaitable[None] | None:
        """A BodyWriter's write (gateway/http/streaming.py): what uvicorn's `send` does
        with a chunked body's piece, minus the message and the coroutine."""
        cycle = self._answering
        if cycle is None or cycle.disconnected:
            return None  # nobody to write to (the stream is being cancelled)
        if not cycle.response_started or cycle.response_complete or not cycle.chunked_encoding:
            raise RuntimeError("write_body outside a chunked response's body")
        size = len(data)
        if size < LARGE_WRITE:  # one copy, framed by one format (two with `+`)
            cycle.transport.write(b"%x\r\n%b\r\n" % (size, data))
        else:  # none: an image's partial frame is megabytes
            cycle.transport.writelines((b"%x\r\n" % size, data, b"\r\n"))
        flow = cycle.flow
        return flow.drain() if flow.write_paused else None

    def when_sent(self, then: Callable[[], None]) -> None:
        """A BodyWriter's: call `then` once what was written has left the worker's buffer
        (the client took all but the low-water mark of it) or the connection is gone; at
        once if it has."""
        if self._lost or not self.flow.write_paused:
            then()
            return
        if self._when_sent is None:
            self._when_sent = []
        self._when_sent.append(then)

    def _sent(self) -> None:
        waiting = self._when_sent
        if waiting is not None:
            self._when_sent = None
            for then in waiting:
                then()

    def start_body(self, lines: bytes) -> bool:
        """A BodyWriter's: a 200 chunked head of these header lines, written outside the
        handler's `send` (the heartbeat round, gateway/http/heartbeat.py)."""
        cycle = self._answering
        if type(cycle) is not _Cycle or cycle.response_complete:
            return False
        return cycle.start(200, RenderedHeaders(lines, None))

    def data_received(self, data: bytes) -> None:
        # uvicorn's, plus the head's limits; a parse error is logged with counts, not per
        # connection. On the path of every request: kept flat (no calls it can avoid).
        head = self._reading_head
        if head:
            if self._refused:
                self._drop(data)
                return
            seen = self._head_bytes + len(data)
            if seen > self._max_header_bytes:
                self._head_over(data)
                return
            self._head_bytes = seen
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._parse_error(exc)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._reading_head:
            if (
                head
                and self._head_timer is None
                and (self.cycle is None or self.cycle.response_complete)  # _idle(), inlined
            ):
                # The first bytes of a head on a kept-alive connection: its deadline
                # starts now.
                self._head_timer = self.loop.call_later(
                    self.limits.header_timeout, self._head_timed_out
                )
        elif self._body_timer is None and not self._pipelined:
            # A head is in and its body is not: it has a deadline. (A pipelined request's
            # starts with it: its body is not read while the answer ahead goes out.)
            self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_timed_out)

    def _drop(self, data: bytes) -> None:
        self._dropped += len(data)
        if self._dropped > LINGER_BYTES:
            self.transport.close()

    def _head_over(self, data: bytes) -> None:
        """More than the head may hold arrived: it is refused, unless the head ends within
        the limit (what follows it is a body or the next request)."""
        limit = self._max_header_bytes
        allowed = limit - self._head_bytes
        if allowed > 0:
            self.data_received(data[:allowed])  # brings the head to the limit exactly
            if self._refused or self.transport.is_closing():
                return
            if self._head_bytes != limit:  # reset by the head's end: the rest is not head
                self.data_received(data[allowed:])
                return
        self._refuse(
            "header_too_large",
            f"request line and headers over {limit:,} bytes",
            self.inbound.header_too_large,
        )

    def _parse_error(self, exc: httptools.HttpParserError) -> None:
        if isinstance(exc.__context__, _TooManyHeaders):
            self._refuse(
                "too_many_headers",
                f"more than {self.limits.max_headers:,} headers",
                self.inbound.too_many_headers,
            )
            return
        self._trip("invalid_request", "a request that is not valid HTTP/1.1")
        self.send_400_response("Invalid HTTP request received.")

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self.headers) >= self._max_headers:
            raise _TooManyHeaders
        # uvicorn's on_header, inlined: a super() call per header cost 1-2 µs a request.
        name = name.lower()
        # llhttp keeps trailing OWS, which RFC 9110 5.5 excludes from the value.
        value = value.rstrip(b" \t")
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        timer = self._head_timer
        if timer is not None:
            timer.cancel()
            self._head_timer = None
        self._reading_head = False
        self._head_bytes = 0
        ahead = self.cycle
        if ahead is not None and not ahead.response_complete:
            self._pipelined += 1  # uvicorn queues it (`pipeline`) behind the answer ahead
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and type(cycle) is RequestResponseCycle:
            # Made by uvicorn; its task has not run yet, so it sends through ours.
            cycle.__class__ = _Cycle

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        # At once for a request on a connection with nothing under way, or, pipelined,
        # once the answer ahead of it has ended.
        self._answering = cycle
        super()._start_asgi_task(cycle, app)
        if self._pipelined:  # from on_response_complete: a pipelined request starts
            self._pipelined -= 1
            if not self._reading_head and self._body_timer is None:  # its body is due
                timeout = self.limits.body_timeout
                self._body_timer = self.loop.call_later(timeout, self._body_timed_out)

    def on_message_complete(self) -> None:
        self._reading_head = True
        self._head_bytes = 0
        timer = self._body_timer
        if timer is not None:
            timer.cancel()
            self._body_timer = None
        super().on_message_complete()
        # uvicorn pauses reading while more than 64 KiB of a body waits for the app, and
        # resumes only when the app asks for more. Once the body is whole the app never
        # asks again, so after a large body the socket stayed paused: the client's leaving
        # (its FIN, unread) went unheard until a write failed, and a stream whose upstream
        # was silent (thinking, or sending only comments) ran on for nobody. Nothing of
        # this body can come now; a pipelined request's head pauses reading again.
        self.flow.resume_reading()

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing():
            idle = f"{self.timeout_keep_alive:g}"
            self._trip("idle_timeout", f"no request in {idle} s", logging.DEBUG)
        super().timeout_keep_alive_handler()

    def _idle(self) -> bool:
        """No response is on its way on this connection (one may start writing)."""
        return self.cycle is None or self.cycle.response_complete

    def pause_writing(self) -> None:
        """The client's write buffer is full: it has `send_timeout` to take some of it."""
        super().pause_writing()
        if self._send_timer is None and not self._lost:
            timeout = self.limits.send_timeout
            self._send_timer = self.loop.call_later(timeout, self._send_timed_out)

    def resume_writing(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        super().resume_writing()
        self._sent()

    def _send_timed_out(self) -> None:
        """A client that takes nothing of its answer: dropped, as if it had left (its
        stream's upstream is closed and the attempt blames no model)."""
        self._send_timer = None
        if self.transport.is_closing():
            return
        self._trip("send_timeout", f"took nothing for {self.limits.send_timeout:g} s")
        self.transport.abort()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self._refused or not self._reading_head:
            return
        if not self._idle():
            return  # a pipelined head: the keep-alive timer takes over after the response
        timeout = f"{self.limits.header_timeout:g}"
        if self._head_bytes == 0:
            self._trip("header_timeout", f"no request within {timeout} s")
            self.transport.close()
        else:
            self._refuse(
                "header_timeout",
                f"request head incomplete after {timeout} s",
                self.inbound.header_timeout,
            )

    def _body_timed_out(self) -> None:
        self._body_timer = None
        what = f"request body incomplete after {self.limits.body_timeout:g} s"
        self._cut_body("body_timeout", what, self.inbound.body_timeout)

    def _cut_body(self, cause: str, what: str, answers: tuple[bytes, ...]) -> None:
        """A request whose body has not all arrived is given up: answered (`answers`: in
        OpenAI's shape, then Anthropic's) if it is not yet (its handler hears a
        disconnect), and the connection closed."""
        cycle = self.cycle
        if self.transport.is_closing() or self._refused or self._reading_head or cycle is None:
            return
        self._trip(cause, what)
        self._refused = True
        self._reading_head = True  # what still arrives is dropped, not parsed
        self._unset_keepalive_if_required()
        if cycle.response_started:
            if cycle.response_complete:  # answered before its body (a 401): that answer stands
                self._half_close()
            else:
                self.transport.close()
            return
        # Its handler still waits for the body: it hears a disconnect, and what it answers
        # goes nowhere; the client gets the answer.
        cycle.disconnected = True
        cycle.message_event.set()
        anthropic = cycle.scope["path"].startswith("/v1/messages")
        self.transport.write(_with_request_id(answers[anthropic]))
        self._half_close()

    def _trip(self, cause: str, what: str, level: int = logging.WARNING) -> None:
        client = self.client
        peer = f"{client[0]}:{client[1]}" if client else "unknown"
        self.inbound.trips.record(
            cause, f"closed a connection from {peer}: {what}", level, peer=peer
        )

    def _refuse(self, cause: str, what: str, answer: bytes) -> None:
        """Answer a request a limit refuses, and close; nothing more on it is parsed."""
        self._trip(cause, what)
        self._refused = True
        self._reading_head = True
        self._unset_keepalive_if_required()
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if not self._idle():  # a response is being written: no room for another
            self.transport.close()
            return
        self.transport.write(_with_request_id(answer))
        self._half_close()

    def _refuse_connection(self, transport: asyncio.Transport) -> None:
        """One connection more than the limit: answered and closed, never parsed."""
        self.transport = transport
        self.client = get_remote_addr(transport)
        self._refused = True
        count = len(self.connections)
        self._trip("too_many_connections", f"{count:,} connections are open, the limit")
        transport.write(_with_request_id(self.inbound.overloaded))
        self._half_close()

    def _half_close(self) -> None:
        """Send FIN and drop what still arrives, until the client closes too, for at most
        LINGER_SECONDS and LINGER_BYTES: closing with unread data would send a reset,
        which can destroy the answer before the client reads it. Past `max_lingering`
        refused connections at once (a flood), they are closed at once instead."""
        inbound = self.inbound
        transport = self.transport
        if inbound.lingering >= inbound.max_lingering or not transport.can_write_eof():
            transport.close()
            return
        inbound.lingering += 1
        transport.write_eof()
        self._linger = self.loop.call_later(LINGER_SECONDS, transport.close)
