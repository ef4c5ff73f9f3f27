"""Incremental server-sent-events parsing for upstream streams."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from providers.base import Chunk, ChunkStream
from providers.errors import InvalidResponse, ProviderError

__all__ = ["MAX_EVENT_BYTES", "chunk_batches", "iter_event_batches"]

Event = tuple[str | None, bytes]
# An event still open after this many bytes fails the stream as a bad body: an upstream
# that never ends its event would otherwise grow the buffer without end. Generous: a
# streamed partial image (base64 PNG) is a few MB.
MAX_EVENT_BYTES = 32 * 1024 * 1024


async def iter_event_batches(chunks: AsyncIterator[bytes]) -> AsyncIterator[list[Event]]:
    """Yield the events each network read completes, together (never an empty list):
    the gateway then writes them to its client at once instead of one write each.

    Linear in the bytes received: each read is appended once, only its new bytes are
    searched for an event's end, and what is consumed is cut once per read (an 8 MB
    event in 16 KiB reads took 2.5 s when the buffer was rebuilt and searched anew on
    every read)."""
    buffer = bytearray()
    searched = 0  # the buffer holds no event end before here
    cr = False  # the previous read ended in "\r": its "\n" may come next
    async for chunk in chunks:
        if cr:
            chunk = b"\r" + chunk
            cr = False
        if b"\r" in chunk:
            if chunk.endswith(b"\r"):
                chunk, cr = chunk[:-1], True
            chunk = chunk.replace(b"\r\n", b"\n")
        buffer += chunk
        batch: list[Event] = []
        start = 0
        while (end := buffer.find(b"\n\n", max(start, searched))) >= 0:
            event = _parse(bytes(buffer[start:end]))
            if event is not None:
                batch.append(event)
            start = end + 2
        if start:
            del buffer[:start]
        searched = max(0, len(buffer) - 1)  # an end may straddle this read and the next
        if batch:
            yield batch
        if len(buffer) > MAX_EVENT_BYTES:
            raise InvalidResponse(
                f"upstream sent a stream event larger than {MAX_EVENT_BYTES} bytes"
            )
    if cr:
        buffer += b"\r"
    if buffer.strip():
        event = _parse(bytes(buffer))
        if event is not None:
            yield [event]


async def chunk_batches(
    stream: ChunkStream,
    chunks: AsyncIterator[bytes],
    read: Callable[[list[Event], list[Chunk]], bool],
) -> AsyncIterator[list[Chunk]]:
    """A provider's `batches()`: `read` turns each read's events into chunks and says
    whether the stream properly ended; returns without raising if the upstream stops
    before that (the provider says what that means)."""
    async for events in iter_event_batches(chunks):
        batch: list[Chunk] = []
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


def _parse(block: bytes) -> Event | None:
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
