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
    the gateway then writes them to its client at once instead of one write each."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        batch: list[Event] = []
        while True:
            end = buffer.find(b"\n\n")
            if end < 0:
                break
            block, buffer = buffer[:end], buffer[end + 2 :]
            event = _parse(block)
            if event is not None:
                batch.append(event)
        if batch:
            yield batch
        if len(buffer) > MAX_EVENT_BYTES:
            raise InvalidResponse(
                f"upstream sent a stream event larger than {MAX_EVENT_BYTES} bytes"
            )
    if buffer.strip():
        event = _parse(buffer)
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
