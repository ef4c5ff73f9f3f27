"""The one small interface between provider code and the network.

Providers speak bytes in, bytes out through a `Transport`. Production uses
`providers.http1.pool.NativeTransport` (asyncio protocols + httptools: ~50 µs CPU per
request where a pooled aiohttp session costs ~200-250 and httpx's default pool
more than 10x that); `AiohttpTransport` (providers/aiohttp_transport.py) remains as an
alternative. Tests use `HttpxTransport` (providers/httpx_transport.py), which respx can
intercept. Provider code never imports aiohttp or httpx; `providers.factory` picks one.

A transport reports the network's failures as the errors of providers.errors: a
`TransportError` (`UpstreamTimeout`, `UpstreamConnectionError`) or `ResponseTooLarge`.
A non-2xx answer is not a failure here: the provider classifies it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from providers.errors import ResponseTooLarge

__all__ = [
    "MAX_BODY",
    "Timeout",
    "Transport",
    "UpstreamResponse",
    "UpstreamStream",
    "read_capped",
]

# The most a response body may hold once decoded: a runaway or compressed ("zip bomb")
# answer fails as a bad body instead of taking the worker's memory. Per provider in
# gateway.yaml (max_response_bytes); 128 MiB fits OpenAI's largest answers (2,048
# float embeddings of 3,072 dimensions are ~120 MB as JSON).
MAX_BODY = 128 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Timeout:
    """Seconds: `total` bounds an exchange (a stream's head, then each silence in its
    body), `connect` opening a connection to send it on, `pool` waiting for the pool to
    have room for one (the gateway's own saturation: past it, CapacityExhausted, not a
    timeout of the upstream's), and `stream` a whole stream, however lively."""

    total: float = 60.0
    connect: float = 10.0
    pool: float = 5.0
    stream: float = 600.0


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
    """Sends HTTP requests to upstreams over a pool of its own; `aclose()` it at the end."""

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
