"""Incremental server-sent-events parsing for upstream streams."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import NoReturn, TypeVar

from providers.base import ChunkStream
from providers.errors import InvalidResponse, ProviderError, ResponseTooLarge, TransportError

__all__ = ["MAX_EVENT_BYTES", "Event", "EventSplitter", "chunk_batches", "iter_event_batches"]

Event = tuple[str | None, bytes]
T = TypeVar("T")
# An event still open after this many bytes fails the stream as a bad body: an upstream
# that never ends its event would otherwise grow the buffer without end. Generous: a
# streamed partial image (base64 PNG) is a few MB.
MAX_EVENT_BYTES = 32 * 1024 * 1024


class EventSplitter:
    """Cuts a stream's bytes into server-sent events, read by read.

    Linear in the bytes received: each read is appended once, only its new bytes are
    searched for an event's end, and what is consumed is cut once per read (an 8 MB
    event in 16 KiB reads took 2.5 s when the buffer was rebuilt and searched anew on
    every read). A read that holds whole events and nothing else, the common case,
    is cut without being copied into the buffer at all."""

    __slots__ = ("_buffer", "_cr", "_searched")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._searched = 0  # the buffer holds no event end before here
        self._cr = False  # the previous read ended in "\r": its "\n" may come next

    def feed(self, chunk: bytes) -> list[Event]:
        """The events `chunk` completes (maybe none)."""
        if len(self._buffer) > MAX_EVENT_BYTES:
            self._too_large()
        if self._cr:
            chunk = b"\r" + chunk
            self._cr = False
        if b"\r" in chunk:
            if chunk.endswith(b"\r"):
                chunk, self._cr = chunk[:-1], True
            chunk = chunk.replace(b"\r\n", b"\n")
        buffer = self._buffer
        batch: list[Event] = []
        if not buffer and chunk.endswith(b"\n\n"):
            # Whole events only: cut them straight from the read.
            start = 0
            while (end := chunk.find(b"\n\n", start)) >= 0:
                event = _parse(chunk[start:end])
                if event is not None:
                    batch.append(event)
                start = end + 2
            return batch
        buffer += chunk
        start = 0
        while (end := buffer.find(b"\n\n", max(start, self._searched))) >= 0:
            event = _parse(bytes(buffer[start:end]))
            if event is not None:
                batch.append(event)
            start = end + 2
        if start:
            del buffer[:start]
        self._searched = max(0, len(buffer) - 1)  # an end may straddle this read and the next
        if len(buffer) > MAX_EVENT_BYTES:
            if batch:  # the events before it first; the next call raises
                return batch
            self._too_large()
        return batch

    def end(self) -> list[Event]:
        """The last event, if the stream ended without the blank line after it."""
        buffer = self._buffer
        if len(buffer) > MAX_EVENT_BYTES:
            self._too_large()
        if self._cr:
            buffer += b"\r"
        if buffer.strip():
            event = _parse(bytes(buffer))
            self._buffer = bytearray()
            if event is not None:
                return [event]
        return []

    def _too_large(self) -> NoReturn:
        self._buffer = bytearray()
        raise InvalidResponse(f"upstream sent a stream event larger than {MAX_EVENT_BYTES} bytes")


async def iter_event_batches(chunks: AsyncIterator[bytes]) -> AsyncIterator[list[Event]]:
    """Yield the events each network read completes, together (never an empty list):
    the gateway then writes them to its client at once instead of one write each."""
    splitter = EventSplitter()
    async for chunk in chunks:
        batch = splitter.feed(chunk)
        if batch:
            yield batch
    last = splitter.end()
    if last:
        yield last


async def chunk_batches(
    stream: ChunkStream,
    chunks: AsyncIterator[bytes],
    read: Callable[[list[Event], list[T]], bool],
    provider: str,
    ended: Callable[[], None],
) -> AsyncIterator[list[T]]:
    """A provider's `batches()`: `read` turns each read's events into chunks and says
    whether the stream properly ended; at the upstream's end before that, `ended()`
    says what that means (raises, or accepts it). A failure of the network is
    `provider`'s. One generator between the socket and the gateway, where a stream's
    every event passes: it cuts the events itself (`EventSplitter`)."""
    splitter = EventSplitter()
    try:
        async for data in chunks:
            events = splitter.feed(data)
            if not events:
                continue
            batch: list[T] = []
            try:
                done = read(events, batch)
            except ProviderError:
                if batch:  # what came before the error still reaches the client
                    yield batch
                raise
            stream.complete = done
            if batch:
                yield batch
            if done:
                return
        events = splitter.end()
    except (TransportError, ResponseTooLarge) as exc:
        raise exc.prefixed(f"{provider}: stream broke") from None
    if events:
        batch = []
        try:
            done = read(events, batch)
        except ProviderError:
            if batch:
                yield batch
            raise
        stream.complete = done
        if batch:
            yield batch
    if not stream.complete:
        ended()


def _parse(block: bytes) -> Event | None:
    if block.startswith(b"data: ") and b"\n" not in block:  # the common framing
        return None, block[6:]
    name: str | None = None
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            name = value.decode("utf-8", "replace")
    if not data:
        return None
    return name, b"\n".join(data)
