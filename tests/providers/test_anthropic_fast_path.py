"""The Anthropic Messages stream's fast path (`MessageStream.pieces()`, text deltas
forwarded as their bytes) against its full parse (`batches()`): however the bytes are
cut, the client must read the same events, and the gateway must see the same usage,
finish reason, end and errors. Adversarial deltas try to make the two disagree."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.anthropic_stream import MessageStream
from providers.base import RawChunk
from providers.errors import ProviderError
from tests.providers.test_openai_fast_path import _Upstream, cut

START = (
    b'{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant",'
    b'"model":"claude","content":[],"usage":{"input_tokens":9,"output_tokens":1}}}'
)
BLOCK = b'{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}'
STOP_BLOCK = b'{"type":"content_block_stop","index":0}'
DELTA_END = (
    b'{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":4}}'
)
STOP = b'{"type":"message_stop"}'


def delta(text: bytes, index: int = 0) -> bytes:
    """A text delta with `text` (already escaped) as its text."""
    head = b'{"type":"content_block_delta","index":%d,"delta":{"type":"text_delta","text":"' % index
    return head + text + b'"}}'


def sse(*events: bytes) -> bytes:
    out = b""
    for data in events:
        start = len(b'{"type":"')  # named by its leading type, as Anthropic names them
        name = data[start : data.index(b'"', start)] if data.startswith(b'{"type":"') else b"x"
        out += b"event: " + name + b"\ndata: " + data + b"\n\n"
    return out


def stream_of(*deltas: bytes) -> bytes:
    return sse(START, BLOCK, *deltas, STOP_BLOCK, DELTA_END, STOP)


async def _outcome(reads: list[bytes], fast: bool) -> dict[str, Any]:
    """What the client reads and the gateway sees, by one path."""
    stream = MessageStream(_Upstream(reads), "anthropic")
    events: list[tuple[str | None, Any]] = []
    texts: list[str] = []
    raw = 0
    error = None
    try:
        batches = stream.pieces("msg_gw", "claude") if fast else stream.batches()
        async for batch in batches:
            for piece in batch:
                if isinstance(piece, RawChunk):
                    raw += 1
                    assert piece.sse.startswith(b"event: content_block_delta\ndata: ")
                    assert piece.sse.endswith(b"\n\n")
                    event, data = piece.chunk()
                    texts.append(orjson.loads(b'"' + piece.text + b'"'))
                else:
                    event, data = piece
                    if event == "content_block_delta" and data["delta"].get("type") == "text_delta":
                        texts.append(data["delta"]["text"])
                events.append((event, data))
    except ProviderError as exc:
        error = (type(exc), exc.message)
    usage = stream.usage
    return {
        "events": events,
        "texts": "".join(texts),
        "usage": (usage.prompt_tokens, usage.completion_tokens) if usage else None,
        "finish": stream.finish_reason,
        "complete": stream.complete,
        "error": error,
        "raw": raw,
    }


async def same(reads: list[bytes]) -> dict[str, Any]:
    """Both paths' outcome, asserted equal; the fast path's."""
    fast = await _outcome(reads, True)
    full = await _outcome(reads, False)
    assert {**fast, "raw": 0} == full
    return fast


async def test_text_deltas_after_the_first_are_forwarded_as_bytes() -> None:
    out = await same([stream_of(delta(b"Hello"), delta(b", wor"), delta(b"ld"), delta(b"!"))])
    assert out["raw"] == 3  # the first delta is parsed (the template), the rest are not
    assert out["texts"] == "Hello, world!"
    assert out["usage"] == (9, 4) and out["finish"] == "stop" and out["complete"]
    assert [e for e, _ in out["events"]][:2] == ["message_start", "content_block_start"]


@pytest.mark.parametrize(
    "text",
    [
        rb"say \"hi\"",
        rb"a\\",
        rb"line\nbreak\ttab\/slash\u00e9\ud83d\ude00",
        "déjà vu 🙂".encode(),
        b"",
    ],
)
async def test_escapes_and_unicode_in_the_text_take_the_fast_path(text: bytes) -> None:
    out = await same([stream_of(delta(b"x"), delta(text), delta(text))])
    assert out["raw"] == 2
    assert out["texts"] == "x" + 2 * orjson.loads(b'"' + text + b'"')


@pytest.mark.parametrize(
    "smuggled",
    [
        b'x"},"usage":{"output_tokens":99},"y":{"z":"',  # a quote ends the text early
        b'x","type":"input_json_delta","q":"',
        b'x\\\\"}},"index":3,"w":{"v":"',  # an escaped backslash, then a quote
    ],
)
async def test_text_that_would_add_keys_is_parsed(smuggled: bytes) -> None:
    out = await same([stream_of(delta(b"a"), delta(b"b"), delta(smuggled))])
    assert out["raw"] == 1  # only "b"


@pytest.mark.parametrize("bad", [b"tab\there", rb"\ud800 alone", b"\xff\xfe", rb"\x41"])
async def test_text_the_parser_refuses_is_refused_by_both_paths(bad: bytes) -> None:
    out = await same([stream_of(delta(b"a"), delta(b"b"), delta(bad))])
    assert out["error"] is not None and out["texts"] == "ab"


@pytest.mark.parametrize(
    "event",
    [
        # whitespace between tokens
        b'{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta",'
        b' "text": "hi"}}',
        # a key twice: the parser keeps the last
        b'{"type":"content_block_delta","index":0,"index":1,"delta":{"type":"text_delta","text":"hi"}}',
        # tool input, not text
        b'{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",'
        b'"partial_json":"{\\"a\\":"}}',
        # an extra key
        b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi",'
        b'"extra":1}}',
    ],
)
async def test_unusual_deltas_are_parsed_every_time(event: bytes) -> None:
    out = await same([stream_of(event, event, event)])
    assert out["raw"] == 0


async def test_a_delta_of_another_block_is_parsed_and_becomes_the_template() -> None:
    out = await same([stream_of(delta(b"a"), delta(b"b"), delta(b"c", 1), delta(b"d", 1))])
    assert out["raw"] == 2 and out["texts"] == "abcd"  # "b" and "d"


async def test_an_error_event_after_plain_deltas_fails_the_stream() -> None:
    error = b'{"type":"error","error":{"type":"overloaded_error","message":"overloaded"}}'
    out = await same([sse(START, BLOCK, delta(b"a"), delta(b"b"), error)])
    assert out["error"] is not None and "overloaded" in out["error"][1] and out["raw"] == 1


async def test_a_stream_cut_at_every_byte_reads_the_same() -> None:
    stream = stream_of(delta(rb"a\"b"), delta("é".encode()), delta(b"c"))
    whole = await same([stream])
    assert whole["raw"] == 2
    for at in range(1, len(stream)):
        assert await same([stream[:at], stream[at:]]) == whole
    for size in (1, 2, 3, 5, 64):
        assert await same(cut(stream, size)) == whole


_TEXT = st.text(max_size=12).map(lambda s: orjson.dumps(s)[1:-1])
_ODD = st.sampled_from([b'"', b"\\", b'\\"', b'"},"usage":{"output_tokens":5},"k":{"j":"', b"\x01"])


@settings(max_examples=150, deadline=None)
@given(
    texts=st.lists(
        st.one_of(_TEXT, _TEXT.flatmap(lambda t: _ODD.map(lambda o: t + o))), max_size=6
    ),
    size=st.integers(1, 400),
)
async def test_any_text_and_any_cuts_read_the_same(texts: list[bytes], size: int) -> None:
    await same(cut(stream_of(*(delta(t) for t in texts)), size))
