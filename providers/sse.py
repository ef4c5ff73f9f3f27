"""Incremental server-sent-events parsing for upstream streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, NoReturn, TypeVar

from providers.base import ChunkStream
from providers.errors import InvalidResponse, ProviderError, ResponseTooLarge, TransportError
from providers.json_memory import parsed_size
from providers.transport import EventMemory, UpstreamStream

__all__ = [
    "MAX_EVENT_BYTES",
    "UNCHARGED_EVENT_BYTES",
    "ChunkBatches",
    "Event",
    "EventSplitter",
    "Sink",
    "chunk_batches",
    "iter_event_batches",
]

Event = tuple[str | None, bytes]
T = TypeVar("T")
# An event still open after this many bytes fails the stream as a bad body: an upstream
# that never ends its event would otherwise grow the buffer without end. Generous: a
# streamed partial image (base64 PNG) is a few MB.
MAX_EVENT_BYTES = 32 * 1024 * 1024
# What an event not yet whole may hold before it is charged to the worker's memory for
# bodies (`EventMemory`): a stream's events are mostly under 1 KiB, and under this they
# cost no call at all.
UNCHARGED_EVENT_BYTES = 64 * 1024


class EventSplitter:
    """Cuts a stream's bytes into server-sent events, read by read.

    Linear in the bytes received: each read is appended once, only its new bytes are
    searched for an event's end, and what is consumed is cut once per read (an 8 MB
    event in 16 KiB reads took 2.5 s when the buffer was rebuilt and searched anew on
    every read). A read that holds whole events and nothing else, the common case,
    is cut without being copied into the buffer at all.

    With `memory`, an event held open past UNCHARGED_EVENT_BYTES is charged to it, raw
    and parsed, as it grows (each read estimated once; the read that ends it too, before
    it is parsed). It is given back at the next read (or the end), not as soon as it is
    cut: its copy is on its way to the client meanwhile, and a stream reads on only once
    the client's buffer has room (`ChunkBatches`), so a client that takes a large event
    slowly holds its share until it has. An event that comes whole in one read (at most
    a socket read: 256 KiB) is not held, and not charged."""

    __slots__ = ("_buffer", "_charged", "_cr", "_cut", "_memory", "_searched")

    def __init__(self, memory: EventMemory | None = None) -> None:
        self._buffer = bytearray()
        self._searched = 0  # the buffer holds no event end before here
        self._cr = False  # the previous read ended in "\r": its "\n" may come next
        self._memory = memory
        self._charged = 0  # what `memory` was last told the buffer takes
        self._cut = False  # events were cut since: give back what they took at the next read

    def feed(self, chunk: bytes) -> list[Event]:
        """The events `chunk` completes (maybe none)."""
        if self._cut:
            self._given_back()
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
                event = _event(chunk, chunk, start, end)
                if event is not None:
                    batch.append(event)
                start = end + 2
            return batch
        buffer += chunk
        if self._memory is not None and (self._charged or len(buffer) > UNCHARGED_EVENT_BYTES):
            self._grown(chunk)
        start = 0
        with memoryview(buffer) as view:  # released before the buffer is cut
            while (end := buffer.find(b"\n\n", max(start, self._searched))) >= 0:
                event = _event(buffer, view, start, end)
                if event is not None:
                    batch.append(event)
                start = end + 2
        if start:
            del buffer[:start]
        self._searched = max(0, len(buffer) - 1)  # an end may straddle this read and the next
        if start and self._charged:
            self._cut = True
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
        event = _parse(bytes(buffer)) if buffer.strip() else None
        self._release()
        return [] if event is None else [event]

    def _grown(self, chunk: bytes) -> None:
        """Tell `memory` what the buffer takes now that `chunk` is in it, before any event
        is cut from it: estimated from `chunk` alone once the buffer is charged."""
        if self._charged:
            size = self._charged + len(chunk) + parsed_size(chunk)
        else:
            size = len(self._buffer) + parsed_size(self._buffer)
        assert self._memory is not None
        try:
            self._memory(size)  # NoMemory: the stream fails, and the request gives it back
        except BaseException:
            # Emptied, in place, before it propagates: the error's traceback keeps the
            # frames of `feed` (its `buffer`) and this one for as long as anything holds
            # the error (a cycle, freed only by the collector's rare oldest-generation
            # pass): 137 refused streams of a bench kept 490 MB that way.
            self._buffer.clear()
            self._cut = False
            raise
        self._charged = size

    def _given_back(self) -> None:
        """Tell `memory` what is left of the buffer since events were cut from it (at most
        a read's bytes; never more than it was told before)."""
        self._cut = False
        buffer = self._buffer
        size = len(buffer) + parsed_size(buffer) if len(buffer) > UNCHARGED_EVENT_BYTES else 0
        size = min(size, self._charged)
        if size != self._charged:
            assert self._memory is not None
            self._memory(size)
            self._charged = size

    def _release(self) -> None:
        """Empty the buffer (in place: a raised error's frames may hold it), and give
        back what it was charged."""
        self._buffer.clear()
        self._cut = False
        if self._charged and self._memory is not None:
            self._charged = 0
            self._memory(0)

    def _too_large(self) -> NoReturn:
        self._release()
        raise InvalidResponse(f"upstream sent a stream event larger than {MAX_EVENT_BYTES} bytes")


async def iter_event_batches(
    chunks: AsyncIterator[bytes], memory: EventMemory | None = None
) -> AsyncIterator[list[Event]]:
    """Yield the events each network read completes, together (never an empty list):
    the gateway then writes them to its client at once instead of one write each."""
    splitter = EventSplitter(memory)
    async for chunk in chunks:
        batch = splitter.feed(chunk)
        if batch:
            yield batch
    last = splitter.end()
    if last:
        yield last


def chunk_batches(
    stream: ChunkStream,
    upstream: UpstreamStream,
    read: Callable[[list[Event], list[T]], bool],
    provider: str,
    ended: Callable[[], None],
    memory: EventMemory | None = None,
) -> ChunkBatches[T]:
    """A provider's `batches()`: `read` turns each read's events into chunks and says
    whether the stream properly ended; at the upstream's end before that, `ended()`
    says what that means (raises, or accepts it). A failure of the network is
    `provider`'s. An event not yet whole is charged to `memory` (the call's
    `event_memory`) once it is large."""
    return ChunkBatches(stream, upstream, read, provider, ended, memory)


# What a relay's sink returns: None, or what to await before it can take more.
Sink = Callable[[list[T]], Awaitable[None] | None]


class ChunkBatches(Generic[T]):
    """A stream's batches, the one place where its every event passes: it cuts the
    events itself (`EventSplitter`) and hands each read's batch out, pulled (`async
    for`) or pushed (`relay`).

    Why both: pulled, every upstream read wakes the reading task and resumes the
    generators between the socket and the client, once per event of a long stream;
    `relay` hands the batches to a sink from the socket's own callback instead
    (upstreams that can push: `UpstreamStream.pushes`), which is most of what a
    forwarded event costs above copying its bytes (bench/README.md, Long streams)."""

    __slots__ = (
        "_ended", "_error", "_provider", "_pull", "_read", "_sink", "_splitter", "_state",
        "_stream", "_upstream", "_wake",
    )  # fmt: skip

    def __init__(
        self,
        stream: ChunkStream,
        upstream: UpstreamStream,
        read: Callable[[list[Event], list[T]], bool],
        provider: str,
        ended: Callable[[], None],
        memory: EventMemory | None = None,
    ) -> None:
        self._stream = stream
        self._upstream = upstream
        self._read = read
        self._provider = provider
        self._ended = ended
        self._splitter = EventSplitter(memory)
        self._pull: AsyncIterator[bytes] | None = None
        self._error: BaseException | None = None  # raised after the batch before it
        self._state = _OPEN
        self._sink: Sink[T] = _nowhere
        self._wake: asyncio.Future[Awaitable[None] | None] | None = None

    def __aiter__(self) -> ChunkBatches[T]:
        return self

    async def __anext__(self) -> list[T]:
        while True:
            if self._error is not None:
                error, self._error = self._error, None
                self._state = _DONE
                raise error
            if self._state is _DONE:
                raise StopAsyncIteration
            if self._state is _EOF:  # the upstream's end came, and its last batch went
                self._state = _DONE
                if not self._stream.complete:
                    self._ended()
                raise StopAsyncIteration
            if self._pull is None:
                self._pull = self._upstream.aiter_bytes()
            try:
                data = await anext(self._pull)
            except StopAsyncIteration:
                self._state = _EOF
                batch = self._batch(self._splitter.end())
            except (TransportError, ResponseTooLarge) as exc:
                self._state = _DONE
                raise exc.prefixed(f"{self._provider}: stream broke") from None
            else:
                batch = self._batch(self._splitter.feed(data))
            if batch:
                return batch

    def _batch(self, events: list[Event]) -> list[T]:
        """The chunks of `events`; a failure is raised at once, or kept for the next
        call when chunks came before it (they still reach the client)."""
        batch: list[T] = []
        if not events:
            return batch
        try:
            done = self._read(events, batch)
        except ProviderError as exc:
            if not batch:
                self._state = _DONE
                raise
            self._error = exc
            return batch
        self._stream.complete = done
        if done:
            self._state = _DONE
        return batch

    async def relay(self, sink: Sink[T]) -> None:
        """Hand the rest of the batches to `sink` as they arrive, and return at the
        stream's end (raising what broke it). When `sink` returns an awaitable, reading
        pauses until it is done. From an upstream that cannot push, the batches are
        pulled as before."""
        upstream = self._upstream
        if not upstream.pushes or self._state is not _OPEN or self._error is not None:
            async for batch in self:
                wait = sink(batch)
                if wait is not None:
                    await wait
            return
        if self._pull is not None:
            # Pulled so far (the first batch, read while fallback was possible). The
            # pull waits at a `yield`: what is read and not yet pulled is still the
            # upstream's to hand out.
            pull, self._pull = self._pull, None
            await pull.aclose()  # type: ignore[attr-defined]
        loop = asyncio.get_running_loop()
        self._sink = sink
        try:
            while True:
                wake = self._wake = loop.create_future()
                upstream.listen(self._pushed, self._pushed_end)
                wait = await wake
                if wait is not None:
                    await wait
                if self._state is not _OPEN:
                    return
        finally:
            self._wake = None
            self._sink = _nowhere
            upstream.hold()
            if self._state is _OPEN:
                self._state = _DONE

    def _pushed(self, data: bytes) -> None:
        """One upstream read, from the socket's callback."""
        wait = None
        try:
            batch = self._batch(self._splitter.feed(data))
            if batch:
                wait = self._sink(batch)
            if self._error is not None:
                error, self._error = self._error, None
                raise error
        except Exception as exc:
            self._stop(exc, wait)
            return
        if self._state is _DONE:
            self._stop(None, wait)
        elif wait is not None:  # the sink is full: read on once it has drained
            self._upstream.hold()
            wake = self._wake
            if wake is not None and not wake.done():
                wake.set_result(wait)

    def _pushed_end(self, exc: BaseException | None) -> None:
        """The upstream's end (exc None) or failure, from the socket's callback."""
        if exc is not None:
            if isinstance(exc, TransportError | ResponseTooLarge):
                exc = exc.prefixed(f"{self._provider}: stream broke")
            self._stop(exc, None)
            return
        wait = None
        try:
            self._state = _EOF
            batch = self._batch(self._splitter.end())
            if batch:
                wait = self._sink(batch)
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            if not self._stream.complete:
                self._ended()
        except Exception as error:
            self._stop(error, wait)
            return
        self._stop(None, wait)

    def _stop(self, exc: BaseException | None, wait: Awaitable[None] | None) -> None:
        """The relay ends: with `exc`, or once the sink's `wait` is done."""
        self._state = _DONE
        self._upstream.hold()
        wake = self._wake
        if wake is not None and not wake.done():
            if exc is None:
                wake.set_result(wait)
                return
            wake.set_exception(exc)
        close = getattr(wait, "close", None)
        if close is not None:  # a coroutine nobody will await now
            close()


def _nowhere(batch: list[Any]) -> None:
    """The sink while nothing relays."""


_OPEN, _EOF, _DONE = "open", "eof", "done"  # ChunkBatches' states: reading, at the end, over


def _event(data: bytes | bytearray, view: bytes | memoryview, start: int, end: int) -> Event | None:
    """The event in `data[start:end]`, copied once out of `view` (the bytes themselves,
    or a view of the buffer): a slice, bytes of it, then its data past "data: " took
    three copies, and an 8 MiB event twice its size above itself as it was cut."""
    if data.startswith(b"data: ", start) and data.find(b"\n", start, end) < 0:
        return None, bytes(view[start + 6 : end])  # the common framing
    return _parse(bytes(view[start:end]))


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
