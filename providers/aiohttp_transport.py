"""A Transport over an aiohttp ClientSession: `transport: aiohttp` in gateway.yaml.

The alternative to the native transport, for an upstream it cannot talk to. aiohttp is
imported only when this module is (providers.factory does so on demand): it adds about
a quarter of a second and some memory to a start that does not need it.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping

import aiohttp
from aiohttp.http_exceptions import ContentEncodingError

from providers.errors import (
    InvalidResponse,
    ProviderError,
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

__all__ = ["AiohttpTransport"]


def _translate(exc: Exception) -> Exception:
    """aiohttp's failure as ours; anything else (a bug) passes unchanged."""
    if isinstance(exc, asyncio.TimeoutError):
        return UpstreamTimeout("upstream timed out")
    if isinstance(exc.__cause__, ContentEncodingError):  # a bad body, not the network
        return InvalidResponse.undecodable()
    if isinstance(exc, aiohttp.ClientError):
        return UpstreamConnectionError(f"upstream connection failed: {type(exc).__name__}")
    return exc


class AiohttpTransport(Transport):
    def __init__(
        self, timeout: Timeout, max_connections: int = 256, max_body: int = MAX_BODY,
        proxy: str | None = None, *, ssl_context: ssl.SSLContext | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:  # fmt: skip
        self.max_body = max_body
        self._proxy = proxy
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._timeout = aiohttp.ClientTimeout(total=timeout.total, connect=timeout.connect)
        self._limit = max_connections
        self._idle = idle_timeout  # aiohttp's connector closes idle ones on a timer of its own
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:  # created lazily: aiohttp wants a running loop
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limit, ttl_dns_cache=300, ssl=self._ssl, keepalive_timeout=self._idle
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None = None,
        memory: TakeMemory | None = None,
    ) -> UpstreamResponse:
        try:
            request = self._client().request
            async with request(method, url, headers=headers, data=body, proxy=self._proxy) as resp:
                data = await read_capped(resp.content.iter_any(), self.max_body, memory)
                return UpstreamResponse(resp.status, resp.headers, data)
        except ProviderError:
            raise
        except Exception as exc:
            raise _translate(exc) from exc

    async def stream(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> UpstreamStream:
        try:
            resp = await self._client().request(
                method, url, headers=headers, data=body, proxy=self._proxy
            )
        except Exception as exc:
            raise _translate(exc) from exc
        return _AiohttpStream(resp, self.max_body)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _AiohttpStream(UpstreamStream):
    def __init__(self, resp: aiohttp.ClientResponse, max_body: int) -> None:
        self._resp = resp
        self.max_body = max_body
        self.status = resp.status
        self.headers = resp.headers

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except Exception as exc:
            raise _translate(exc) from exc

    async def aread(self) -> bytes:
        return await read_capped(self.aiter_bytes(), self.max_body)

    async def aclose(self) -> None:
        # close() rather than release(): an unfinished stream must drop the
        # connection so the upstream stops generating for a client that left.
        if self._resp.content.at_eof():
            self._resp.release()
        else:
            self._resp.close()
