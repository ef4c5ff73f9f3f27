"""providers/sse.py: server-sent events parsed incrementally, however the bytes are cut;
a stream's batches pulled, or pushed from the socket's callback (`ChunkBatches.relay`)."""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import AsyncIterator, Awaitable, Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.base import Chunk, ChunkStream
from providers.errors import InvalidResponse, NoMemory, UpstreamConnectionError
from providers.http1.connection import NativeStream
from providers.http1.pool import NativeTransport
from providers.json_memory import parsed_size
from providers.sse import (
    UNCHARGED_EVENT_BYTES,
    ChunkBatches,
    EventSplitter,
    chunk_batches,
    iter_event_batches,
)
from providers.transport import Timeout, UpstreamStream
from tests.providers.http1.native_helpers import Server, chunked, serving, until

Event = tuple[str | None, bytes]

SAMPLE = (
    b": keep-alive comment\n\n"
    b'data: {"id":1,"text":"h\xc3\xa9llo"}\n\n'
    b"event: response.output_text.delta\n"
    b'data: {"delta":"x"}\n\n'
    b"data: first line\n"
    b"data: second line\n\n"
    b":ping\n\n"
    b"id: 7\nretry: 100\ndata:no-space\n\n"
    b"\n\n"
    b"data: [DONE]\n\n"
)
SAMPLE_EVENTS: list[Event] = [
    (None, b'{"id":1,"text":"h\xc3\xa9llo"}'),
    ("response.output_text.delta", b'{"delta":"x"}'),
    (None, b"first line\nsecond line"),
    (None, b"no-space"),
    (None, b"[DONE]"),
]


async def feed(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def collect(chunks: Iterable[bytes]) -> list[Event]:
    return [event async for batch in iter_event_batches(feed(chunks)) for event in batch]


async def test_whole_sample() -> None:
    assert await collect([SAMPLE]) == SAMPLE_EVENTS


@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
async def test_every_split_point_gives_identical_events(crlf: bool) -> None:
    sample = SAMPLE.replace(b"\n", b"\r\n") if crlf else SAMPLE
    for i in range(len(sample) + 1):
        assert await collect([sample[:i], sample[i:]]) == SAMPLE_EVENTS, f"split at {i}"


@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
async def test_every_pair_of_split_points_gives_identical_events(crlf: bool) -> None:
    sample = SAMPLE.replace(b"\n", b"\r\n") if crlf else SAMPLE
    for i in range(0, len(sample) + 1, 3):
        for j in range(i, len(sample) + 1, 5):
            chunks = [sample[:i], sample[i:j], sample[j:]]
            assert await collect(chunks) == SAMPLE_EVENTS, f"split at {i}, {j}"


async def test_one_byte_at_a_time() -> None:
    chunks = [SAMPLE[i : i + 1] for i in range(len(SAMPLE))]
    assert await collect(chunks) == SAMPLE_EVENTS


async def test_crlf_line_endings() -> None:
    raw = b"event: a\r\ndata: 1\r\n\r\ndata: 2\r\ndata: 3\r\n\r\n"
    assert await collect([raw]) == [("a", b"1"), (None, b"2\n3")]


async def test_comments_and_keep_alives_are_skipped() -> None:
    raw = b": hello\n\n:\n\n: another\ndata: kept\n\n\n\n\n"
    assert await collect([raw]) == [(None, b"kept")]


async def test_block_without_data_is_skipped() -> None:
    assert await collect([b"event: lonely\n\nid: 3\n\ndata: x\n\n"]) == [(None, b"x")]


async def test_multi_line_data_is_joined_with_newlines() -> None:
    raw = b'data: {\ndata:   "a": 1\ndata: }\n\n'
    assert await collect([raw]) == [(None, b'{\n  "a": 1\n}')]


async def test_event_names_apply_to_their_own_event_only() -> None:
    raw = (
        b"event: response.created\ndata: {}\n\n"
        b"data: plain\n\n"
        b"event:response.completed\ndata: {}\n\n"
    )
    assert await collect([raw]) == [
        ("response.created", b"{}"),
        (None, b"plain"),
        ("response.completed", b"{}"),
    ]


async def test_only_one_leading_space_is_removed() -> None:
    assert await collect([b"data:  two spaces\n\n"]) == [(None, b" two spaces")]


async def test_colons_in_the_value_are_kept() -> None:
    assert await collect([b'data: {"url": "http://x"}\n\n']) == [(None, b'{"url": "http://x"}')]


@pytest.mark.parametrize(
    "tail", [b"data: last", b"data: last\n", b"data: last\r\n", b"event: e\ndata: last"]
)
async def test_trailing_event_without_final_blank_line(tail: bytes) -> None:
    events = await collect([b"data: first\n\n", tail])
    assert events[0] == (None, b"first")
    assert events[1][1] == b"last"
    assert len(events) == 2


async def test_trailing_whitespace_only_yields_nothing() -> None:
    assert await collect([b"data: a\n\n", b"\n", b"  "]) == [(None, b"a")]


async def test_empty_stream() -> None:
    assert await collect([]) == []
    assert await collect([b"", b""]) == []


async def batches(chunks: Iterable[bytes]) -> list[list[Event]]:
    return [batch async for batch in iter_event_batches(feed(chunks))]


async def test_events_of_one_read_come_as_one_batch() -> None:
    assert await batches([SAMPLE]) == [SAMPLE_EVENTS]


async def test_each_read_gives_the_events_it_completes_and_no_empty_batches() -> None:
    one, two = b'data: {"n":1}\n\n', b'data: {"n":2}\n\n'
    reads = [one + two[:5], two[5:], b": comment only\n\n", b"data: [DO", b"NE]\n\n"]
    assert await batches(reads) == [
        [(None, b'{"n":1}')],
        [(None, b'{"n":2}')],
        [(None, b"[DONE]")],
    ]


# -- an event not yet whole, charged to the request's memory (EventMemory) ---------------


def _big_event(size: int) -> bytes:
    """One event of about `size` bytes, as a streamed image's partial frame is."""
    return b'data: {"type":"image_generation.partial_image","b64_json":"' + b"A" * size + b'"}'


def test_a_large_event_is_charged_as_it_grows_and_given_back_at_the_next_read() -> None:
    """Given back at the next read, not as it is cut: its copy is on its way to the
    client until then (a stream reads on only once the client's buffer has room)."""
    told: list[int] = []
    splitter = EventSplitter(told.append)
    event = _big_event(300_000)
    reads = [event[i : i + 16_384] for i in range(0, len(event), 16_384)]
    for read in reads:
        assert splitter.feed(read) == []
    # Nothing while it was small; then, read by read, what it holds, raw and parsed.
    assert told and told == sorted(told)
    assert told[-1] == len(event) + parsed_size(event)
    first = next(i for i in range(len(reads)) if sum(map(len, reads[: i + 1])) > 65_536)
    assert len(told) == len(reads) - first
    ending = b"\n\ndata: {}\n\n"
    assert splitter.feed(ending) == [(None, event[6:]), (None, b"{}")]
    assert told[-1] == len(event + ending) + parsed_size(event) + parsed_size(ending)  # held
    assert splitter.feed(b'data: {"n":1}\n\n') == [(None, b'{"n":1}')]
    assert told[-1] == 0  # the next read: given back


def test_small_events_never_call_the_memory() -> None:
    told: list[int] = []
    splitter = EventSplitter(told.append)
    for i in range(1000):
        splitter.feed(b'data: {"n":%d}\n\ndata: {"n' % i)
        splitter.feed(b'":1}\n\n')
    small = b"data: " + b"x" * (UNCHARGED_EVENT_BYTES - 8)  # with its blank line: all it may
    assert splitter.feed(small) == [] and splitter.feed(b"\n\n") == [(None, small[6:])]
    assert told == []


def test_an_event_cut_after_a_large_one_is_charged_for_what_is_left() -> None:
    told: list[int] = []
    splitter = EventSplitter(told.append)
    splitter.feed(_big_event(100_000))
    rest = b"data: " + b"B" * 70_000  # the next event begins in the same read
    assert len(splitter.feed(b"\n\n" + rest)) == 1
    assert splitter.feed(b"B") == []
    assert told[-2:] == [len(rest) + parsed_size(rest), len(rest) + 1 + parsed_size(rest + b"B")]
    assert splitter.end() == [(None, rest[6:] + b"B")]  # the stream ended without a blank line
    assert told[-1] == 0


def test_an_event_with_no_room_fails_the_stream_with_the_memory_error() -> None:
    def full(size: int) -> None:
        if size > 200_000:
            raise NoMemory("no room", status=503, retry_after=1.0)

    splitter = EventSplitter(full)
    with pytest.raises(NoMemory) as refused:
        for i in range(40):
            splitter.feed(b"data: " + b"C" * 10_000 if i == 0 else b"C" * 10_000)
    # Emptied in place before the error left: its traceback keeps feed's frame, and the
    # buffer in it, alive for as long as anything holds the error.
    held = [
        len(frame.f_locals["buffer"])
        for frame, _ in traceback.walk_tb(refused.value.__traceback__)
        if frame.f_code.co_name == "feed"
    ]
    assert held == [0]
    assert splitter.end() == []


def test_an_event_past_the_limit_gives_back_what_it_was_charged() -> None:
    told: list[int] = []
    splitter = EventSplitter(told.append)
    splitter.feed(b"data: " + b"D" * 100_000)
    assert told[-1] > 0
    with pytest.raises(InvalidResponse):
        for _ in range(400):
            splitter.feed(b"D" * (128 * 1024))
    assert told[-1] == 0


@settings(derandomize=True, max_examples=60, deadline=None, database=None)
@given(
    sizes=st.lists(st.sampled_from([0, 10, 60_000, 65_530, 70_000, 200_000]), max_size=6),
    cuts=st.lists(st.integers(1, 90_000), min_size=1, max_size=12),
    crlf=st.booleans(),
    ends_open=st.booleans(),
)
def test_whatever_the_cuts_the_events_are_the_same_and_every_charge_is_given_back(
    sizes: list[int], cuts: list[int], crlf: bool, ends_open: bool
) -> None:
    """Events of every size around the allowance, cut anywhere: charging changes no
    event, never goes below 0, and ends at 0 once the stream has."""
    stream = b"".join(b"data: " + b"E" * size + b"\n\n" for size in sizes)
    if ends_open:
        stream += b"data: tail"
    if crlf:
        stream = stream.replace(b"\n", b"\r\n")
    reads, at = [], 0
    while at < len(stream):
        step = cuts[len(reads) % len(cuts)]
        reads.append(stream[at : at + step])
        at += step
    told: list[int] = []
    plain, charged = EventSplitter(), EventSplitter(told.append)
    expected = [e for read in reads for e in plain.feed(read)] + plain.end()
    got = [e for read in reads for e in charged.feed(read)] + charged.end()
    assert got == expected
    assert all(size >= 0 for size in told)
    assert not told or told[-1] == 0
    if 200_000 in sizes:
        assert told  # an event larger than any two reads was held, and charged


# -- ChunkBatches: pulled, and pushed from the socket's callback (relay) -------------------


class _Answer(ChunkStream):
    """The stream whose batches are cut: `complete` is all ChunkBatches touches."""

    def batches(self) -> AsyncIterator[list[Chunk]]:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


def _until_done(events: list[Event], batch: list[Event]) -> bool:
    for event in events:
        if event[1] == b"[DONE]":
            return True
        batch.append(event)
    return False


def _never_ends() -> None:
    raise InvalidResponse("the stream ended before it was complete")


def _scripted(reads: list[bytes], gates: dict[int, asyncio.Event], close: bool = False):
    """An SSE server writing `reads` as chunks, each flushed; before read i it waits for
    gates[i]; `close`: drop the socket instead of ending the body."""

    async def handler(srv: Server, reader, writer) -> None:
        await srv.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i, read in enumerate(reads):
            if i in gates:
                await gates[i].wait()
            writer.write(chunked(read)[: -len(b"0\r\n\r\n")])
            await writer.drain()
        if close:
            writer.transport.abort()
            return
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await reader.read()

    return handler


async def _open(srv: Server, transport: NativeTransport) -> ChunkBatches[Event]:
    upstream = await transport.stream("POST", srv.url(), {"content-type": "text/plain"}, b"{}")
    return chunk_batches(_Answer(), upstream, _until_done, "up", _never_ends)


READS = [
    b'data: {"n":1}\n\ndata: {"n":2}\n\ndata: {"n',
    b'":3}\n\n',
    b'data: {"n":4}\n\n',
    b'data: {"n":5}\n\ndata: [DONE]\n\n',
]
BATCHES = [
    [(None, b'{"n":1}'), (None, b'{"n":2}')],
    [(None, b'{"n":3}')],
    [(None, b'{"n":4}')],
    [(None, b'{"n":5}')],
]


async def test_relay_hands_out_the_batches_pulling_gives_after_the_first_was_pulled() -> None:
    gates = {1: asyncio.Event()}
    transport = NativeTransport(Timeout(total=5, connect=5))
    async with serving(_scripted(READS, {})) as srv:
        pulled = await _open(srv, transport)
        assert [b async for b in pulled] == BATCHES  # the same script, pulled throughout
    async with serving(_scripted(READS, gates)) as srv:
        batches = await _open(srv, transport)
        got = [await anext(batches)]  # the first, as the dispatcher reads it
        gates[1].set()
        upstream = batches._upstream
        assert isinstance(upstream, NativeStream)
        await until(lambda: upstream._chunks)  # read, not yet handed out: not to be lost
        await batches.relay(lambda batch: got.append(batch))
    await transport.aclose()
    assert got == BATCHES


async def test_relay_stops_reading_while_the_sink_cannot_take_more() -> None:
    gates = {1: asyncio.Event()}
    transport = NativeTransport(Timeout(total=5, connect=5))
    busy: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    got: list[list[Event]] = []

    def sink(batch: list[Event]) -> asyncio.Future[None] | None:
        got.append(batch)
        return busy if len(got) == 1 else None

    async with serving(_scripted(READS, gates)) as srv:
        batches = await _open(srv, transport)
        relay = asyncio.ensure_future(batches.relay(sink))
        await until(lambda: got)
        gates[1].set()
        for _ in range(20):  # the loop goes round; nothing more is handed out meanwhile
            await asyncio.sleep(0)
        assert got == BATCHES[:1]
        busy.set_result(None)
        await relay
    await transport.aclose()
    assert got == BATCHES


async def test_a_large_event_stays_charged_while_the_client_has_not_taken_it() -> None:
    """Its copy waits in the client's buffer until the sink's wait is done; the stream
    reads on only then, and the next read gives the event's share back."""
    big = b'data: {"n":"' + b"L" * 300_000 + b'"}\n\n'
    reads = [b'data: {"n":0}\n\n', big[:100_000], big[100_000:], b"data: [DONE]\n\n"]
    gates = {3: asyncio.Event()}
    transport = NativeTransport(Timeout(total=5, connect=5))
    slow: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    told: list[int] = []
    got: list[list[Event]] = []

    def sink(batch: list[Event]) -> asyncio.Future[None] | None:
        got.append(batch)
        return slow if len(got) == 2 else None  # the large one fills the client's buffer

    async with serving(_scripted(reads, gates)) as srv:
        upstream = await transport.stream("POST", srv.url(), {}, b"{}")
        batches = chunk_batches(_Answer(), upstream, _until_done, "up", _never_ends, told.append)
        relay = asyncio.ensure_future(batches.relay(sink))
        await until(lambda: len(got) == 2)
        gates[3].set()  # the next read is there, but not read while the client is slow
        for _ in range(20):
            await asyncio.sleep(0)
        assert told[-1] > 2 * 300_000  # raw and parsed, still held
        slow.set_result(None)
        await relay
    await transport.aclose()
    assert told[-1] == 0
    assert [len(e[1]) for batch in got for e in batch] == [7, 300_008]


async def test_relay_raises_what_broke_the_stream_after_the_batches_before_it() -> None:
    transport = NativeTransport(Timeout(total=5, connect=5))
    got: list[list[Event]] = []
    async with serving(_scripted(READS[:1], {}, close=True)) as srv:
        batches = await _open(srv, transport)
        with pytest.raises(UpstreamConnectionError, match="up: stream broke"):
            await batches.relay(got.append)
    await transport.aclose()
    assert got == BATCHES[:1]


async def test_relay_says_what_an_end_before_done_means() -> None:
    transport = NativeTransport(Timeout(total=5, connect=5))
    got: list[list[Event]] = []
    async with serving(_scripted(READS[:3], {})) as srv:
        batches = await _open(srv, transport)
        with pytest.raises(InvalidResponse, match="ended before it was complete"):
            await batches.relay(got.append)
    await transport.aclose()
    assert got == BATCHES[:3]


class _PullOnly(UpstreamStream):
    status = 200
    headers: dict[str, str] = {}

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        for read in READS:
            yield read

    async def aread(self) -> bytes:
        return b"".join(READS)

    async def aclose(self) -> None:
        pass


async def test_relay_pulls_from_an_upstream_that_cannot_push() -> None:
    got: list[list[Event]] = []
    busy = 0

    async def wait() -> None:
        nonlocal busy
        busy += 1

    def sink(batch: list[Event]) -> Awaitable[None]:
        got.append(batch)
        return wait()

    batches = chunk_batches(_Answer(), _PullOnly(), _until_done, "up", _never_ends)
    await batches.relay(sink)
    assert got == BATCHES
    assert busy == len(BATCHES)  # what the sink asked to await was awaited


async def test_relay_returns_once_the_sink_has_taken_the_last_batch() -> None:
    transport = NativeTransport(Timeout(total=5, connect=5))
    busy: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    got: list[list[Event]] = []

    def sink(batch: list[Event]) -> asyncio.Future[None] | None:
        got.append(batch)
        return busy if len(got) == len(BATCHES) else None

    async with serving(_scripted(READS, {})) as srv:
        batches = await _open(srv, transport)
        relay = asyncio.ensure_future(batches.relay(sink))
        await until(lambda: len(got) == len(BATCHES))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not relay.done()  # the stream is over, but its last batch is not out yet
        busy.set_result(None)
        await relay
    await transport.aclose()
    assert got == BATCHES
