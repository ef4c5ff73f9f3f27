"""One HTTP/1.1 client connection, and the response as its callers see it.

`Connection` is an asyncio Protocol fed by the httptools (llhttp) parser. It does one
thing: one request at a time on a keep-alive socket, the response delivered whole (an
`UpstreamResponse`) or as a flow-controlled `NativeStream`, with case-insensitive
`Headers` and gzip/deflate bodies decoded under the size limit. The stream and the
protocol drive each other read by read (the protocol feeds the stream, the stream
resumes the protocol's reading), which is why they share this module.

Why hand-written: on the benchmark machine aiohttp's client costs ~240 µs CPU per proxied
request and this protocol plus providers/http1/pool.py about a quarter of that.

The connection knows nothing of pooling: when an exchange ends with the socket still
usable it calls `reusable()`, and when the socket goes it calls `gone()`. A bare
`Connection` closes after one exchange; the pool's `PooledConnection` overrides both.
Connecting, limits and retry policy live in providers/http1/pool.py; the request head
in providers/http1/request.py.
"""

from __future__ import annotations

import asyncio
import math
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, Protocol

import httptools

from providers.errors import (
    InvalidResponse,
    ProviderError,
    ResponseTooLarge,
    UpstreamConnectionError,
    UpstreamTimeout,
)
from providers.transport import TakeMemory, UpstreamResponse, UpstreamStream, read_capped

__all__ = [
    "MAX_HEADER_BYTES",
    "PAUSE_AT",
    "Connection",
    "Decoder",
    "Headers",
    "NativeStream",
    "Unanswered",
    "decoder",
    "failed",
]

PAUSE_AT = 1 << 20  # stream bytes buffered for a lagging consumer before reading pauses
MAX_HEADER_BYTES = 1 << 16  # llhttp has no limit of its own


def failed(what: str) -> UpstreamConnectionError:
    """A connection failure; `what` is an exception or condition name, never data."""
    return UpstreamConnectionError(f"upstream connection failed: {what}")


class Unanswered(UpstreamConnectionError):
    """The connection died before any response byte: the request may not have been seen."""


class _Stop(Exception):
    """Raised inside a parser callback to stop parsing (bytes nobody asked for)."""


class ResponseHeadersTooLarge(Exception):
    pass


class _TooLarge(Exception):
    """Raised inside a parser callback: the body passed max_body."""


# -- what callers get back ----------------------------------------------------------------


class Headers(Mapping[str, str]):
    """Read-only response headers, case-insensitive; repeated fields joined with ", "."""

    __slots__ = ("_d",)

    def __init__(self, lowered: dict[str, str]) -> None:
        self._d = lowered  # keys already lowercase

    def __getitem__(self, key: str) -> str:
        d = self._d
        return d[key] if key in d else d[key.lower()]

    def get(self, key: str, default: Any = None) -> Any:
        v = self._d.get(key)
        return v if v is not None else self._d.get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return key in self._d or (isinstance(key, str) and key.lower() in self._d)

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __repr__(self) -> str:
        return f"Headers({self._d!r})"


class Decoder(Protocol):
    """What decodes a Content-Encoding: zlib's decompress objects and `_Deflate`."""

    def decompress(self, data: bytes, max_length: int = 0, /) -> bytes: ...

    def flush(self) -> bytes: ...


class _Deflate:
    """Content-Encoding "deflate" is zlib-wrapped per the RFC but raw from some servers."""

    __slots__ = ("_d", "_first")

    def __init__(self) -> None:
        self._d = zlib.decompressobj(zlib.MAX_WBITS)
        self._first = True

    def decompress(self, data: bytes, max_length: int = 0, /) -> bytes:
        if self._first:
            self._first = False
            try:
                return self._d.decompress(data, max_length)
            except zlib.error:
                self._d = zlib.decompressobj(-zlib.MAX_WBITS)
        return self._d.decompress(data, max_length)

    def flush(self) -> bytes:
        return self._d.flush()


def decoder(encoding: str) -> Decoder | None:
    """A decompressor for a Content-Encoding we decode, or None to pass the body through."""
    e = encoding.strip().lower()
    if e in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if e == "deflate":
        return _Deflate()
    return None  # identity or unknown: the body is passed through as sent


class NativeStream(UpstreamStream):
    """A response body arriving as chunks; always `aclose()` (drops an unfinished body).
    Pulled (`aiter_bytes`) or pushed (`listen`): then each piece goes to the listener
    from the protocol's `data_received`, and nothing is buffered unless held."""

    pushes = True

    def __init__(self, conn: Connection, status: int, headers: Headers, max_body: int) -> None:
        self.status = status
        self.headers = headers
        self._max_body = max_body
        self._conn: Connection | None = conn  # None once the body ended or failed
        self._loop = conn.loop
        self._chunks: deque[bytes] = deque()
        self._done = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._on_data: Callable[[bytes], None] | None = None
        self._on_end: Callable[[BaseException | None], None] | None = None

    def _feed(self, data: bytes) -> bool:
        """Take a piece; True if it was buffered (counts toward pausing the socket)."""
        on_data = self._on_data
        if on_data is not None:
            on_data(data)
            return False
        self._chunks.append(data)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
        return True

    def _finish(self, exc: BaseException | None) -> None:
        if self._done:
            return
        self._done = True
        self._exc = exc
        self._conn = None
        if self._on_data is not None:
            self._ended()
            return
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _ended(self) -> None:
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end(self._exc)

    def listen(
        self, on_data: Callable[[bytes], None], on_end: Callable[[BaseException | None], None]
    ) -> None:
        self._on_data, self._on_end = on_data, on_end
        chunks = self._chunks
        while chunks and self._on_data is on_data:  # handling one may hold again
            on_data(chunks.popleft())
        if self._on_data is not on_data:
            return
        if self._done:
            self._ended()
        elif self._conn is not None:
            self._conn.consumed()  # resumes reading if held

    def hold(self) -> None:
        self._on_data = None
        conn = self._conn
        if conn is not None:
            conn.hold()

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        chunks = self._chunks
        while True:
            if chunks:
                chunk = chunks.popleft()
                if not chunks:
                    conn = self._conn
                    if conn is not None:
                        conn.consumed()
                yield chunk
            elif self._done:
                if self._exc is not None:
                    raise self._exc
                return
            else:
                w = self._waiter = self._loop.create_future()
                try:
                    await w
                finally:
                    self._waiter = None

    async def aread(self) -> bytes:
        return await read_capped(self.aiter_bytes(), self._max_body)

    def close_now(self) -> None:
        """Synchronous aclose: an unfinished body cannot be reused, so the socket goes."""
        self._chunks.clear()
        self._on_data = self._on_end = None
        if self._done:
            return
        conn = self._conn
        self._finish(failed("StreamClosed"))
        if conn is not None:
            conn.abort()

    async def aclose(self) -> None:
        self.close_now()


# -- the protocol -------------------------------------------------------------------------


class Connection(asyncio.Protocol):
    """One socket. States: idle (no fut, no stream), awaiting headers (fut), body (fut for
    `request`, stream for `stream`). Calls `reusable()` when a keep-alive response ended
    and `gone()` exactly once when the socket goes."""

    __slots__ = (
        "body", "buffered", "closed", "decoder", "ends_by", "eof_body", "fut", "got_bytes",
        "head_only", "header_bytes", "headers", "idle", "interim", "last_io", "loop",
        "max_body", "memory", "parser", "paused", "raw", "room", "status", "stream", "streaming",
        "timer", "transport",
    )  # fmt: skip

    def __init__(self, loop: asyncio.AbstractEventLoop, max_body: int) -> None:
        self.loop = loop
        self.max_body = max_body  # decoded bytes a whole body, or one stream piece, may hold
        # asyncio.Transport once made, None once lost; loosely typed so that the hot path
        # needs no checks (every use is guarded by `closed` or by being in an exchange).
        self.transport: Any = None
        # Made with the socket and dropped with it: the parser holds this protocol, and a
        # cycle between them would leave every connection to the full collections.
        self.parser: Any = None
        self.closed = self.paused = False
        self.last_io = 0.0
        self.fut: asyncio.Future[UpstreamResponse | NativeStream] | None = None
        self.stream: NativeStream | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.raw: list[tuple[bytes, bytes]] | None = None
        self.body: list[bytes] = []
        self.headers: Headers | None = None
        self.decoder: Decoder | None = None
        self.status = self.header_bytes = self.buffered = self.room = 0
        self.idle: float | None = None
        self.ends_by = math.inf  # a stream's overall deadline (loop time)
        self.memory: TakeMemory | None = None  # a whole body's pieces are charged to it
        self.got_bytes = self.eof_body = self.interim = self.streaming = self.head_only = False

    # -- what the owner overrides ---------------------------------------------------------
    def reusable(self) -> None:
        """A keep-alive exchange ended and the socket could take another request. Nobody
        will send one on a bare connection, so it closes."""
        self._close(True)

    def gone(self) -> None:
        """Called exactly once, when the socket has closed (or is closing)."""

    # -- driving ----------------------------------------------------------------------------
    def start(
        self, head: bytes, body: bytes | None, deadline: float, idle: float | None,
        ends_by: float, streaming: bool, head_only: bool, memory: TakeMemory | None = None,
    ) -> asyncio.Future[UpstreamResponse | NativeStream]:  # fmt: skip
        """Write one request. The future gets an UpstreamResponse, or a NativeStream at the
        headers; `deadline` bounds it, then for streams `idle` bounds each silence and
        `ends_by` the whole (one timer either way: the nearer of the two). A whole body's
        pieces are charged to `memory` as they arrive."""
        self.raw = []
        self.body = []
        self.header_bytes = self.buffered = 0
        self.room = self.max_body  # decoded body bytes still allowed
        self.got_bytes = self.eof_body = self.interim = False
        self.streaming = streaming
        self.head_only = head_only
        self.memory = memory
        self.idle = idle
        self.ends_by = ends_by
        f = self.fut = self.loop.create_future()
        self.timer = self.loop.call_at(min(deadline, ends_by), self._on_timer)
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

    def hold(self) -> None:
        """The stream consumer cannot take more now: pause reading (`consumed` resumes)."""
        if not self.paused and not self.closed:
            self.paused = True
            self.transport.pause_reading()

    def abort(self, exc: BaseException | None = None) -> None:
        """Drop the socket now, failing any exchange in flight."""
        self._fail(exc if exc is not None else failed("ConnectionAborted"))

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.parser = httptools.HttpResponseParser(self)

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
            self._fail(self._parse_failure(exc))

    def _parse_failure(self, exc: Exception) -> ProviderError:
        """What a parser error means to the caller. Its own frame, so that no local of
        `data_received` holds the callback's exception: that exception's traceback reaches
        back to `data_received`'s frame, and the loop would keep both (and the connection)
        until a full collection."""
        cause = exc.__context__ if isinstance(exc, httptools.HttpParserCallbackError) else exc
        if isinstance(cause, _TooLarge):
            return ResponseTooLarge.beyond(self.max_body)
        if isinstance(cause, ProviderError):  # the body's memory refused (TakeMemory)
            return cause.with_traceback(None)  # its frames hold this connection
        if isinstance(cause, zlib.error):
            return InvalidResponse.undecodable()
        return failed("UnexpectedData" if isinstance(cause, _Stop) else type(cause or exc).__name__)

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
        self.parser = None  # breaks the cycle: reference counting frees the connection

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
            s = self.stream = NativeStream(self, status, headers, self.max_body)
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
            if self.memory is not None:
                self.memory(body)  # NoMemory fails the exchange (_parse_failure)
            self.body.append(body)
            return
        if not s._feed(body):
            return
        self.buffered += len(body)
        if self.buffered > PAUSE_AT:
            self.hold()

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
            self._fail(InvalidResponse.undecodable())
            return
        if len(tail) > self._room():
            self._fail(ResponseTooLarge.beyond(self.max_body))
            return
        s, f = self.stream, self.fut
        self.stream = self.fut = self.decoder = self.memory = None
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
            self.reusable()
        else:
            self._close(True)

    def _room(self) -> int:
        """Decoded bytes the next piece may hold: what is left of a whole body; for a
        stream, one max_body per piece (its buffer is bounded by PAUSE_AT)."""
        return self.room if self.stream is None else self.max_body

    def _on_timer(self) -> None:
        self.timer = None
        now = self.loop.time()
        if now >= self.ends_by:
            self._fail(UpstreamTimeout("upstream stream ran past its stream_timeout"))
            return
        if self.stream is not None and self.idle is not None:  # body phase: read-idle
            due = self.last_io + self.idle
            if due > now:
                self.timer = self.loop.call_at(min(due, self.ends_by), self._on_timer)
                return
        self._fail(UpstreamTimeout("upstream timed out"))

    def _fail(self, exc: BaseException) -> None:
        timer = self.timer
        if timer is not None:
            timer.cancel()
            self.timer = None
        f, s = self.fut, self.stream
        self.fut = self.stream = self.decoder = self.memory = None
        self.body = []  # the partial body goes now, not when the connection is collected
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
        self.gone()
