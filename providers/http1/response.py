"""What NativeTransport callers get back: case-insensitive headers, decoded bodies, streams.

Split from providers/h1.py (the connection protocol) to keep each module small.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from providers.errors import UpstreamConnectionError
from providers.transport import UpstreamStream, read_capped

if TYPE_CHECKING:
    from providers.http1.connection import Connection

__all__ = ["Headers", "NativeStream", "Unanswered", "decoder", "failed"]


def failed(what: str) -> UpstreamConnectionError:
    """A connection failure; `what` is an exception or condition name, never data."""
    return UpstreamConnectionError(f"upstream connection failed: {what}")


class Unanswered(UpstreamConnectionError):
    """The connection died before any response byte: the request may not have been seen."""


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


class _Deflate:
    """Content-Encoding "deflate" is zlib-wrapped per the RFC but raw from some servers."""

    __slots__ = ("_d", "_first")

    def __init__(self) -> None:
        self._d = zlib.decompressobj(zlib.MAX_WBITS)
        self._first = True

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        if self._first:
            self._first = False
            try:
                return self._d.decompress(data, max_length)
            except zlib.error:
                self._d = zlib.decompressobj(-zlib.MAX_WBITS)
        return self._d.decompress(data, max_length)

    def flush(self) -> bytes:
        return self._d.flush()


def decoder(encoding: str) -> Any:
    """A decompressor for a Content-Encoding we decode, or None to pass the body through."""
    e = encoding.strip().lower()
    if e in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if e == "deflate":
        return _Deflate()
    return None  # identity or unknown: the body is passed through as sent


class NativeStream(UpstreamStream):
    """A response body arriving as chunks; always `aclose()` (drops an unfinished body)."""

    def __init__(self, conn: Connection, status: int, headers: Headers, max_body: int) -> None:
        self.status = status
        self.headers = headers
        self._max_body = max_body
        self._conn: Connection | None = conn  # None once the body ended or failed
        self._loop = conn.loop
        self._chunks: list[bytes] = []
        self._done = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _finish(self, exc: BaseException | None) -> None:
        if self._done:
            return
        self._done = True
        self._exc = exc
        self._conn = None
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        while True:
            chunks = self._chunks
            if chunks:
                self._chunks = []
                conn = self._conn
                if conn is not None:
                    conn.consumed()
                for chunk in chunks:
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
        self._chunks = []
        if self._done:
            return
        conn = self._conn
        self._finish(failed("StreamClosed"))
        if conn is not None:
            conn.abort()

    async def aclose(self) -> None:
        self.close_now()
