"""The one small interface between provider code and the network.

Providers speak bytes in, bytes out through a `Transport`. Production uses
`providers.http1.pool.NativeTransport` (asyncio protocols + httptools: ~50 µs CPU per
request where a pooled aiohttp session costs ~200-250 and httpx's default pool
more than 10x that); `AiohttpTransport` (providers/aiohttp_transport.py) remains as an
alternative. Tests use `HttpxTransport` (providers/httpx_transport.py), which respx can
intercept. Provider code never imports aiohttp or httpx; `providers.factory` picks one.

A transport reports the network's failures as the errors of providers.errors: a
`TransportError` (`UpstreamTimeout`, `UpstreamConnectionError`), or an `InvalidResponse`
for a body that does not decode or passes the limit (`ResponseTooLarge`). A non-2xx
answer is not a failure here: the provider classifies it. Every transport offered
(providers.factory.TRANSPORTS) behaves alike: tests/providers/test_conformance.py.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

from providers.errors import ResponseTooLarge

__all__ = [
    "IDLE_TIMEOUT",
    "MAX_BODY",
    "EventMemory",
    "TakeMemory",
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
# Seconds an idle pooled connection is kept for reuse. Every transport closes it then,
# whether or not another request comes: a provider that gets no more traffic must not
# hold its sockets, and the upstream's, for ever.
IDLE_TIMEOUT = 30.0


# What a whole answer's body is charged to, piece by piece as it arrives (decoded), for
# what the piece takes raw and will take parsed: raises NoMemory when the worker holds too
# much to take it (the gateway's `server.max_body_memory`, which bounds a worker's
# requests and their answers together). Answers are the client's to shape (`n`, images,
# embeddings: tens of MB each), so a bound per answer alone let a few hundred at once
# take gigabytes. Charged as it arrives, not once whole: an answer that cannot fit is
# dropped before it holds the room the others need to finish.
TakeMemory = Callable[[bytes], None]
# What a stream's event not yet whole is charged to, the same budget: told what the
# event holds now, raw and parsed (estimated), whenever that changes past a stream's own
# small allowance, and 0 once it is cut (providers/sse.py's EventSplitter). A streamed
# image's partial frames, or a Responses stream's last event, are MBs each: held by
# thousands of streams at once, they too took gigabytes. Raises NoMemory as TakeMemory.
EventMemory = Callable[[int], None]


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


async def read_capped(
    chunks: AsyncIterator[bytes], limit: int, memory: TakeMemory | None = None
) -> bytes:
    """A whole body, or ResponseTooLarge as soon as it passes `limit` bytes; each piece
    is charged to `memory` as it comes.

    One growing buffer rather than a list of the pieces: a large one lives in a mapping
    of its own, which goes back to the system when freed, where thousands of 64 KiB
    pieces leave the allocator's heap fragmented (after 20 refused answers of 128 MiB,
    an httpx gateway kept 303 MiB resident this way, an aiohttp one 207; now 151 and 79).
    """
    buf = bytearray()
    async for chunk in chunks:
        if len(buf) + len(chunk) > limit:
            # Emptied before raising: the error's traceback keeps this frame, and with it
            # `buf`, for as long as anything holds the error.
            buf.clear()
            raise ResponseTooLarge.beyond(limit)
        if memory is not None:
            try:
                memory(chunk)
            except BaseException:
                buf.clear()
                raise
        buf += chunk
    return bytes(buf)


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


class UpstreamStream(ABC):
    """An upstream response whose body is read as it arrives; always `aclose()` it.

    A stream that `pushes` can also hand each piece to a callback as it arrives, from
    the socket's own callback (`listen`), until told to `hold` (providers/sse.py's
    `ChunkBatches.relay`: no task woken per piece)."""

    status: int
    headers: Mapping[str, str]
    pushes = False

    def listen(
        self, on_data: Callable[[bytes], None], on_end: Callable[[BaseException | None], None]
    ) -> None:
        """Hand every piece to `on_data` (those already read first) and then the end, or
        what broke the stream, to `on_end` (once); only where `pushes`."""
        raise NotImplementedError

    def hold(self) -> None:  # noqa: B027 - a no-op where nothing is pushed
        """Stop handing pieces out and pause reading; `listen` again goes on."""

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
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None = None,
        memory: TakeMemory | None = None,
    ) -> UpstreamResponse:
        """The whole answer, its body charged to `memory` as it arrives."""

    @abstractmethod
    async def stream(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> UpstreamStream: ...

    async def aclose(self) -> None:  # noqa: B027 - optional for transports without a pool
        pass
