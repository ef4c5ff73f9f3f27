"""A Transport over an httpx AsyncClient: what the tests use, since respx intercepts it.

Also `transport: httpx` in gateway.yaml. httpx is imported only when this module is
(providers.factory does so on demand). httpx's timeouts bound each read; a stream's
`Timeout.stream` is checked here, at each piece that arrives (a stream that falls
silent meets the read timeout first).
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Mapping

import httpx

from providers.errors import CapacityExhausted, UpstreamConnectionError, UpstreamTimeout
from providers.transport import (
    MAX_BODY,
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
        proxy: str | None = None,
    ) -> None:  # fmt: skip
        self.max_body = max_body
        self._stream_total = timeout.stream
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout.total, connect=timeout.connect, pool=timeout.pool),
            limits=httpx.Limits(max_connections=max_connections),
            proxy=proxy,
        )

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> UpstreamResponse:
        stream = await self._send(method, url, headers, body, math.inf)
        try:
            return UpstreamResponse(stream.status, stream.headers, await stream.aread())
        finally:
            await stream.aclose()

    async def stream(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> UpstreamStream:
        ends_by = time.monotonic() + self._stream_total
        return await self._send(method, url, headers, body, ends_by)

    async def _send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
        ends_by: float,
    ) -> _HttpxStream:  # fmt: skip
        request = self._client.build_request(method, url, headers=headers, content=body)
        try:
            resp = await self._client.send(request, stream=True)
        except Exception as exc:
            raise _translate(exc) from exc
        return _HttpxStream(resp, self.max_body, ends_by)

    async def aclose(self) -> None:
        await self._client.aclose()


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
