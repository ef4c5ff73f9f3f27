"""iter_event_batches: server-sent events parsed incrementally, however the bytes are cut."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import pytest

from providers.sse import iter_event_batches

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
