"""One HTTP/1.1 client connection: an asyncio Protocol fed by the httptools (llhttp) parser.

Why hand-written: on the benchmark machine aiohttp's client costs ~240 µs CPU per proxied
request and this protocol plus providers/pool.py about a quarter of that. It does one
thing: one request at a time on a keep-alive connection, the response delivered whole
(`request`) or as a flow-controlled stream (`stream`). Pooling, limits, connecting and
retry policy live in providers/pool.py; the request head in providers/h1_request.py.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import TYPE_CHECKING, Any

import httptools

from providers.errors import ResponseTooLarge, UpstreamTimeout
from providers.http1.response import Headers, NativeStream, Unanswered, decoder, failed
from providers.transport import UpstreamResponse

if TYPE_CHECKING:
    from providers.http1.pool import NativeTransport, Origin

__all__ = ["Connection"]

PAUSE_AT = 1 << 20  # stream bytes buffered for a lagging consumer before reading pauses
MAX_HEADER_BYTES = 1 << 16  # llhttp has no limit of its own


class _Stop(Exception):
    """Raised inside a parser callback to stop parsing (bytes nobody asked for)."""


class ResponseHeadersTooLarge(Exception):
    pass


class _TooLarge(Exception):
    """Raised inside a parser callback: the body passed the pool's max_body."""


class Connection(asyncio.Protocol):
    """One socket. States: idle (no fut, no stream), awaiting headers (fut), body (fut for
    `request`, stream for `stream`). Calls pool.release() when a keep-alive response ended
    and pool.conn_closed() exactly once when the socket goes (after adopt())."""

    __slots__ = (
        "adopted", "body", "buffered", "closed", "decoder", "eof_body", "fut", "got_bytes",
        "head_only", "header_bytes", "headers", "idle", "idle_since", "in_idle", "interim",
        "last_io", "loop", "origin", "parser", "paused", "pool", "raw", "reused", "room",
        "status", "stream", "streaming", "timer", "transport",
    )  # fmt: skip

    def __init__(self, pool: NativeTransport, origin: Origin, loop: asyncio.AbstractEventLoop):
        self.pool = pool
        self.origin = origin
        self.loop = loop
        self.transport: Any = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = self.adopted = self.in_idle = self.reused = self.paused = False
        self.idle_since = self.last_io = 0.0
        self.fut: asyncio.Future[Any] | None = None
        self.stream: NativeStream | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.raw: list[tuple[bytes, bytes]] | None = None
        self.body: list[bytes] = []
        self.headers: Headers | None = None
        self.decoder: Any = None
        self.status = self.header_bytes = self.buffered = self.room = 0
        self.idle: float | None = None
        self.got_bytes = self.eof_body = self.interim = self.streaming = self.head_only = False

    # -- driving (called by the pool) ---------------------------------------------------
    def adopt(self) -> None:
        """The pool now counts this connection; a close that already happened is reported."""
        self.adopted = True
        if self.closed:
            self.pool.conn_closed(self)

    def start(
        self, head: bytes, body: bytes | None, deadline: float, idle: float | None,
        streaming: bool, head_only: bool,
    ) -> asyncio.Future[Any]:  # fmt: skip
        """Write one request. The future gets an UpstreamResponse, or a NativeStream at the
        headers; `deadline` bounds it, then for streams `idle` bounds each silence."""
        self.raw = []
        self.body = []
        self.header_bytes = self.buffered = 0
        self.room = self.pool.max_body  # decoded body bytes still allowed
        self.got_bytes = self.eof_body = self.interim = False
        self.streaming = streaming
        self.head_only = head_only
        self.idle = idle
        f = self.fut = self.loop.create_future()
        self.timer = self.loop.call_at(deadline, self._on_timer)
        t = self.transport
        if body is None:
            t.write(head)
        elif len(body) <= 65536:
            t.write(head + body)
        else:  # no copy of large bodies
            t.write(head)
            t.write(body)
        return f

    def consumed(self) -> None:
        """The stream consumer took everything buffered: resume reading if paused."""
        self.buffered = 0
        if self.paused and not self.closed:
            self.paused = False
            self.last_io = self.loop.time()
            self.transport.resume_reading()

    def abort(self, exc: BaseException | None = None) -> None:
        """Drop the socket now, failing any exchange in flight."""
        self._fail(exc if exc is not None else failed("ConnectionAborted"))

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self.fut is None and self.stream is None:  # bytes nobody asked for
            self._fail(failed("UnexpectedData"))
            return
        self.got_bytes = True
        if self.stream is not None:
            self.last_io = self.loop.time()
        try:
            self.parser.feed_data(data)
        except Exception as exc:
            cause = exc.__context__ if isinstance(exc, httptools.HttpParserCallbackError) else exc
            if isinstance(cause, _TooLarge):
                self._fail(ResponseTooLarge.beyond(self.pool.max_body))
                return
            name = "UnexpectedData" if isinstance(cause, _Stop) else type(cause or exc).__name__
            if isinstance(cause, zlib.error):
                name = "ContentDecodingError"
            self._fail(failed(name))

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost decides what it meant

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None  # gone: nothing below may touch it
        if self.fut is not None or self.stream is not None:
            if self.eof_body and exc is None:  # a body delimited by the close has ended
                self._complete(False)
            elif not self.got_bytes:
                name = type(exc).__name__ if exc else "ServerDisconnected"
                self._fail(Unanswered(f"upstream connection failed: {name}"))
            else:
                self._fail(failed(type(exc).__name__ if exc else "ServerDisconnected"))
        self._close(True)

    # -- httptools callbacks -------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        raw = self.raw
        if raw is None:  # a trailer of a chunked body (ignored), or bytes nobody asked for
            if self.fut is None and self.stream is None:
                raise _Stop
            return
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > MAX_HEADER_BYTES:
            raise ResponseHeadersTooLarge
        raw.append((name, value))

    def on_headers_complete(self) -> None:
        f = self.fut
        if f is None or self.raw is None:
            raise _Stop
        status = self.parser.get_status_code()
        if status < 200:  # 1xx interim response: wait for the real one
            self.raw = []
            self.interim = True
            return
        hdrs: dict[str, str] = {}
        for name, value in self.raw:
            k = name.decode("latin-1").lower()
            v = value.decode("latin-1")
            hdrs[k] = hdrs[k] + ", " + v if k in hdrs else v
        self.raw = None
        self.status = status
        headers = self.headers = Headers(hdrs)
        self.eof_body = (
            "content-length" not in hdrs
            and "transfer-encoding" not in hdrs
            and status != 204
            and status != 304
        )
        ce = hdrs.get("content-encoding")
        self.decoder = decoder(ce) if ce else None
        if self.head_only:  # llhttp cannot be told that a HEAD answer has no body
            self.eof_body = False
            self._complete(False)
            raise _Stop
        if self.streaming:
            s = self.stream = NativeStream(self, status, headers, self.pool.max_body)
            self.fut = None
            self.last_io = self.loop.time()
            if not f.done():
                f.set_result(s)

    def on_body(self, body: bytes) -> None:
        s = self.stream
        d = self.decoder
        if d is not None:
            # Asked for at most one byte more than allowed, a bomb stops expanding there.
            room = self._room()
            body = d.decompress(body, room + 1)
            if len(body) > room:
                raise _TooLarge
            if not body:
                return
        if s is None:
            self.room -= len(body)
            if self.room < 0:
                raise _TooLarge
            self.body.append(body)
            return
        s._feed(body)
        self.buffered += len(body)
        if self.buffered > PAUSE_AT and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self._complete(self.parser.should_keep_alive())

    # -- internals ------------------------------------------------------------------------
    def _complete(self, keep: bool) -> None:
        timer = self.timer
        if timer is not None:
            timer.cancel()
            self.timer = None
        d = self.decoder
        try:
            tail = d.flush() if d is not None else b""
        except zlib.error:
            self._fail(failed("ContentDecodingError"))
            return
        if len(tail) > self._room():
            self._fail(ResponseTooLarge.beyond(self.pool.max_body))
            return
        s, f = self.stream, self.fut
        self.stream = self.fut = self.decoder = None
        if s is not None:
            if tail:
                s._feed(tail)
            s._finish(None)
        elif f is not None:
            body = self.body
            self.body = []
            if tail:
                body.append(tail)
            if not f.done():
                data = body[0] if len(body) == 1 else b"".join(body)
                f.set_result(UpstreamResponse(self.status, self.headers or Headers({}), data))
        if keep and not self.closed:
            if self.paused:
                self.paused = False
                self.transport.resume_reading()
            self.pool.release(self)
        else:
            self._close(True)

    def _room(self) -> int:
        """Decoded bytes the next piece may hold: what is left of a whole body; for a
        stream, one max_body per piece (its buffer is bounded by PAUSE_AT)."""
        return self.room if self.stream is None else self.pool.max_body

    def _on_timer(self) -> None:
        self.timer = None
        if self.stream is not None and self.idle is not None:  # body phase: read-idle
            due = self.last_io + self.idle
            if due > self.loop.time():
                self.timer = self.loop.call_at(due, self._on_timer)
                return
        self._fail(UpstreamTimeout("upstream timed out"))

    def _fail(self, exc: BaseException) -> None:
        timer = self.timer
        if timer is not None:
            timer.cancel()
            self.timer = None
        f, s = self.fut, self.stream
        self.fut = self.stream = None
        if f is not None and not f.done():
            f.set_exception(exc)
        if s is not None:
            s._finish(exc)
        self._close(False)

    def _close(self, graceful: bool) -> None:
        if self.closed:
            return
        self.closed = True
        t = self.transport
        if t is not None:
            if graceful:
                t.close()
            else:
                t.abort()
        if self.adopted:
            self.pool.conn_closed(self)
