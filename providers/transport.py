"""The one small interface between provider code and the network.

Providers speak bytes in, bytes out through a `Transport`. Production uses
`providers.http1.pool.NativeTransport` (asyncio protocols + httptools: ~50 µs CPU per
request where a pooled aiohttp session costs ~200-250 and httpx's default pool
more than 10x that); `transport: aiohttp` remains as an alternative. Tests use
`HttpxTransport`, which respx can intercept. Provider code never imports aiohttp
or httpx.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from providers.errors import (
    ProviderError,
    ResponseTooLarge,
    UpstreamConnectionError,
    UpstreamTimeout,
)

__all__ = [
    "MAX_BODY",
    "AiohttpTransport",
    "HttpxTransport",
    "Timeout",
    "Transport",
    "UpstreamResponse",
    "UpstreamStream",
    "create_transport",
    "read_capped",
]

# The most a response body may hold once decoded: a runaway or compressed ("zip bomb")
# answer fails as a bad body instead of taking the worker's memory. Per provider in
# gateway.yaml (max_response_bytes); 128 MiB fits OpenAI's largest answers (2,048
# float embeddings of 3,072 dimensions are ~120 MB as JSON).
MAX_BODY = 128 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Timeout:
    total: float = 60.0
    connect: float = 10.0


async def read_capped(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """A whole body, or ResponseTooLarge as soon as it passes `limit` bytes."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge.beyond(limit)
        parts.append(chunk)
    return b"".join(parts)


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


class UpstreamStream(ABC):
    """An upstream response whose body is read as it arrives; always `aclose()` it."""

    status: int
    headers: Mapping[str, str]

    @abstractmethod
    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    @abstractmethod
    async def aread(self) -> bytes: ...

    @abstractmethod
    async def aclose(self) -> None: ...


class Transport(ABC):
    @abstractmethod
    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> UpstreamResponse: ...

    @abstractmethod
    async def stream(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> UpstreamStream: ...

    async def aclose(self) -> None:  # noqa: B027 - optional for transports without a pool
        pass


class AiohttpTransport(Transport):
    def __init__(
        self, timeout: Timeout, max_connections: int = 256, max_body: int = MAX_BODY,
        proxy: str | None = None,
    ) -> None:  # fmt: skip
        import aiohttp

        self._aiohttp = aiohttp
        self.max_body = max_body
        self._proxy = proxy
        self._timeout = aiohttp.ClientTimeout(total=timeout.total, connect=timeout.connect)
        self._limit = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self):  # created lazily: aiohttp wants a running loop
        if self._session is None:
            aiohttp = self._aiohttp
            connector = aiohttp.TCPConnector(limit=self._limit, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def request(self, method, url, headers, body=None) -> UpstreamResponse:
        try:
            request = self._client().request
            async with request(method, url, headers=headers, data=body, proxy=self._proxy) as resp:
                data = await read_capped(resp.content.iter_any(), self.max_body)
                return UpstreamResponse(resp.status, resp.headers, data)
        except ProviderError:
            raise
        except Exception as exc:
            raise self._translate(exc) from exc

    async def stream(self, method, url, headers, body=None) -> UpstreamStream:
        try:
            resp = await self._client().request(
                method, url, headers=headers, data=body, proxy=self._proxy
            )
        except Exception as exc:
            raise self._translate(exc) from exc
        return _AiohttpStream(resp, self._translate, self.max_body)

    def _translate(self, exc: BaseException) -> BaseException:
        if isinstance(exc, asyncio.TimeoutError):
            return UpstreamTimeout("upstream timed out")
        if isinstance(exc, self._aiohttp.ClientError):
            return UpstreamConnectionError(f"upstream connection failed: {type(exc).__name__}")
        return exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _AiohttpStream(UpstreamStream):
    def __init__(self, resp, translate, max_body: int) -> None:
        self._resp = resp
        self._translate = translate
        self.max_body = max_body
        self.status = resp.status
        self.headers = resp.headers

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except Exception as exc:
            raise self._translate(exc) from exc

    async def aread(self) -> bytes:
        return await read_capped(self.aiter_bytes(), self.max_body)

    async def aclose(self) -> None:
        # close() rather than release(): an unfinished stream must drop the
        # connection so the upstream stops generating for a client that left.
        if self._resp.content.at_eof():
            self._resp.release()
        else:
            self._resp.close()


class HttpxTransport(Transport):
    def __init__(
        self, timeout: Timeout = Timeout(), max_connections: int = 256, client=None,
        max_body: int = MAX_BODY, proxy: str | None = None,
    ) -> None:  # fmt: skip
        import httpx

        self._httpx = httpx
        self.max_body = max_body
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout.total, connect=timeout.connect),
            limits=httpx.Limits(max_connections=max_connections),
            proxy=proxy,
        )

    async def request(self, method, url, headers, body=None) -> UpstreamResponse:
        stream = await self.stream(method, url, headers, body)
        try:
            return UpstreamResponse(stream.status, stream.headers, await stream.aread())
        finally:
            await stream.aclose()

    async def stream(self, method, url, headers, body=None) -> UpstreamStream:
        request = self._client.build_request(method, url, headers=headers, content=body)
        try:
            resp = await self._client.send(request, stream=True)
        except Exception as exc:
            raise self._translate(exc) from exc
        return _HttpxStream(resp, self._translate, self.max_body)

    def _translate(self, exc: BaseException) -> BaseException:
        if isinstance(exc, self._httpx.TimeoutException):
            return UpstreamTimeout("upstream timed out")
        if isinstance(exc, self._httpx.TransportError):
            return UpstreamConnectionError(f"upstream connection failed: {type(exc).__name__}")
        return exc

    async def aclose(self) -> None:
        await self._client.aclose()


class _HttpxStream(UpstreamStream):
    def __init__(self, resp, translate, max_body: int) -> None:
        self._resp = resp
        self._translate = translate
        self.max_body = max_body
        self.status = resp.status_code
        self.headers = resp.headers

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.aiter_bytes():
                yield chunk
        except Exception as exc:
            raise self._translate(exc) from exc

    async def aread(self) -> bytes:
        return await read_capped(self.aiter_bytes(), self.max_body)

    async def aclose(self) -> None:
        await self._resp.aclose()


def create_transport(
    kind: str,
    timeout: Timeout,
    max_connections: int,
    max_body: int = MAX_BODY,
    proxy: str | None = None,
) -> Transport:
    """`proxy` None: the native transport takes the environment's (HTTPS_PROXY, ...);
    httpx does too, aiohttp does not."""
    if kind == "aiohttp":
        return AiohttpTransport(timeout, max_connections, max_body, proxy)
    if kind == "httpx":
        return HttpxTransport(timeout, max_connections, max_body=max_body, proxy=proxy)
    from providers.http1.pool import NativeTransport  # imported here: it imports this module

    return NativeTransport(timeout, max_connections, max_body=max_body, proxy=proxy)
