"""A Transport over an httpx AsyncClient: what the tests use, since respx intercepts it.

Also `transport: httpx` in gateway.yaml. httpx is imported only when this module is
(providers.factory does so on demand). Where httpx differs from what the conformance
suite (tests/providers/test_conformance.py) asks of every transport, this module makes
up for it: its timeouts bound each read, so `request` bounds the whole exchange itself
(a trickling body otherwise never ends); its decoding errors are not transport errors
(a bad gzip body was a 500, not the next model); and h11 takes a Content-Length beside
Transfer-Encoding: chunked, which RFC 9112 lets a client refuse and every other
transport does (the two framings disagreeing is how responses get smuggled); and its
pool closes an expired connection only when the pool is next used, so a reaper does it
when no request comes. A stream's `Timeout.stream` is checked here, at each piece that
arrives (a stream that falls silent meets the read timeout first).
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
from collections.abc import AsyncIterator, Mapping

import httpx

from providers.errors import (
    CapacityExhausted,
    InvalidResponse,
    UpstreamConnectionError,
    UpstreamTimeout,
)
from providers.transport import (
    IDLE_TIMEOUT,
    MAX_BODY,
    TakeMemory,
    Timeout,
    Transport,
    UpstreamResponse,
    UpstreamStream,
    read_capped,
)

__all__ = ["HttpxTransport"]

_DEFAULT_TIMEOUT = Timeout()


def _translate(exc: Exception) -> Exception:
    """httpx's failure as ours; anything else (a bug) passes unchanged."""
    if isinstance(exc, httpx.DecodingError):
        return InvalidResponse.undecodable()
    if isinstance(exc, httpx.PoolTimeout):
        return CapacityExhausted("no connection to the upstream came free in time")
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout("upstream timed out")
    if isinstance(exc, httpx.TransportError):
        return UpstreamConnectionError(f"upstream connection failed: {type(exc).__name__}")
    return exc


class HttpxTransport(Transport):
    def __init__(
        self, timeout: Timeout = _DEFAULT_TIMEOUT, max_connections: int = 256,
        client: httpx.AsyncClient | None = None, max_body: int = MAX_BODY,
        proxy: str | None = None, ssl_context: ssl.SSLContext | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:  # fmt: skip
        self.max_body = max_body
        self._total = timeout.total
        self._stream_total = timeout.stream
        self._idle = idle_timeout
        self._reaper: asyncio.Task[None] | None = None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout.total, connect=timeout.connect, pool=timeout.pool),
            limits=httpx.Limits(max_connections=max_connections, keepalive_expiry=idle_timeout),
            proxy=proxy,
            verify=ssl_context if ssl_context is not None else True,
        )

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None = None,
        memory: TakeMemory | None = None,
    ) -> UpstreamResponse:
        try:
            async with asyncio.timeout(self._total):  # httpx's bounds each read only
                stream = await self._send(method, url, headers, body, math.inf)
                try:
                    data = await read_capped(stream.aiter_bytes(), self.max_body, memory)
                    return UpstreamResponse(stream.status, stream.headers, data)
                finally:
                    await stream.aclose()
        except TimeoutError:
            raise UpstreamTimeout("upstream timed out") from None

    async def stream(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> UpstreamStream:
        """`total` bounds the wait for the headers; then each read, and `stream` the
        whole stream (a stream that keeps talking ends by then all the same)."""
        ends_by = time.monotonic() + self._stream_total
        return await self._send(method, url, headers, body, ends_by)

    async def _send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
        ends_by: float,
    ) -> _HttpxStream:  # fmt: skip
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap())
        request = self._client.build_request(method, url, headers=headers, content=body)
        try:
            async with asyncio.timeout(self._total):
                resp = await self._client.send(request, stream=True)
        except TimeoutError:
            raise UpstreamTimeout("upstream timed out") from None
        except Exception as exc:
            raise _translate(exc) from exc
        if "transfer-encoding" in resp.headers and "content-length" in resp.headers:
            await resp.aclose()  # unread: the connection is dropped, not reused
            raise UpstreamConnectionError(
                "upstream connection failed: Content-Length with Transfer-Encoding"
            )
        return _HttpxStream(resp, self.max_body, ends_by)

    async def aclose(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        await self._client.aclose()

    async def _reap(self) -> None:
        """Close the connections idle past the timeout, a quarter of it at a time.

        httpcore closes them only when its pool is next used. The pools are reached
        through httpx's private attributes (the client's transport and its proxy
        mounts); a client without them (respx's) has nothing to reap."""
        transports = [self._client._transport, *self._client._mounts.values()]
        pools = [p for t in transports if (p := getattr(t, "_pool", None)) is not None]
        while True:
            await asyncio.sleep(self._idle / 4)
            for pool in pools:
                for conn in pool.connections:
                    if conn.is_idle() and conn.has_expired():
                        await conn.aclose()  # the pool drops it when next used


class _HttpxStream(UpstreamStream):
    def __init__(self, resp: httpx.Response, max_body: int, ends_by: float) -> None:
        self._resp = resp
        self.max_body = max_body
        self._ends_by = ends_by  # time.monotonic()
        self.status = resp.status_code
        self.headers = resp.headers

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.aiter_bytes():
                if time.monotonic() > self._ends_by:
                    raise UpstreamTimeout("upstream stream ran past its stream_timeout")
                yield chunk
        except UpstreamTimeout:
            raise
        except Exception as exc:
            raise _translate(exc) from exc

    async def aread(self) -> bytes:
        return await read_capped(self.aiter_bytes(), self.max_body)

    async def aclose(self) -> None:
        await self._resp.aclose()
