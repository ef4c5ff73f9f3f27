"""An Anthropic client's stream: after its first write, the rest of an Anthropic upstream's
events go from the upstream socket's callback through the server's BodyWriter, and say
what the pulled stream would have said."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from types import SimpleNamespace
from typing import Any, cast

import orjson

from gateway.http import messages
from gateway.routing.answers import StreamAnswer
from providers.anthropic_stream import MessageStream
from providers.base import Piece, RawChunk
from providers.http1.pool import NativeTransport
from providers.transport import Timeout
from tests.providers.http1.native_helpers import serving
from tests.providers.test_sse import _scripted

EVENTS = [
    ("message_start", {"type": "message_start", "message": {
        "id": "msg_up", "type": "message", "role": "assistant", "model": "claude-up",
        "content": [], "usage": {"input_tokens": 9, "output_tokens": 1}}}),
    ("content_block_start", {"type": "content_block_start", "index": 0,
                             "content_block": {"type": "text", "text": ""}}),
    *[("content_block_delta", {"type": "content_block_delta", "index": 0,
                               "delta": {"type": "text_delta", "text": f"word{i} "}})
      for i in range(4)],
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                       "usage": {"output_tokens": 5}}),
    ("message_stop", {"type": "message_stop"}),
]  # fmt: skip
READS = [  # the first read is the first batch; each later one its own
    b"".join(b"event: %s\ndata: %s\n\n" % (n.encode(), orjson.dumps(d)) for n, d in EVENTS[:2]),
    *(b"event: %s\ndata: %s\n\n" % (n.encode(), orjson.dumps(d)) for n, d in EVENTS[2:]),
]


class Writer:
    """The server's BodyWriter: what was written, in order."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write_body(self, data: bytes) -> Awaitable[None] | None:
        self.written.append(data)
        return None


class Exchange(SimpleNamespace):
    """What `_sse` reads of a streaming exchange, and what it tells it."""

    def observe(self, batch: Sequence[Piece]) -> None:
        self.observed.extend(batch)
        for piece in batch:  # as Streaming.observe keeps it for the evaluator
            if isinstance(piece, RawChunk):
                self.said.add_escaped(piece.text)
            else:
                self.said.add(*piece)

    def close(self, error: Exception | None = None, client_gone: bool = False) -> None:
        self.closed = (error, client_gone)


async def streamed(writer: Writer | None, parsed: bool = False) -> tuple[list[bytes], Exchange]:
    """`_sse` over a real upstream stream, as the dispatcher opens it (`pieces`: text
    deltas as bytes) or parsed throughout: what it yielded, and its exchange."""
    transport = NativeTransport(Timeout(total=5, connect=5))
    try:
        async with serving(_scripted(READS, {})) as srv:
            upstream = await transport.stream("POST", srv.url(), {}, b"{}")
            stream = MessageStream(upstream, "anthropic")
            batches = stream.batches() if parsed else stream.pieces("msg_gw", "claude")
            first = await anext(batches)  # as the dispatcher reads it
            exchange = Exchange(
                result=upstream, first=first, rest=batches, observed=[], closed=None,
                said=StreamAnswer(),
                job=SimpleNamespace(response_id="msg_gw"), model=SimpleNamespace(name="claude"),
            )  # fmt: skip
            yielded = [piece async for piece in messages._sse(cast(Any, exchange), writer)]
    finally:
        await transport.aclose()
    return yielded, exchange


async def test_the_rest_of_an_anthropic_stream_is_written_from_the_socket() -> None:
    pulled, pulled_exchange = await streamed(None)
    assert pulled == (await streamed(None, parsed=True))[0]  # bytes or parsed, the same
    writer = Writer()
    yielded, exchange = await streamed(writer)
    assert len(yielded) == 1  # the first batch went through the response; the rest pushed
    assert len(writer.written) == len(READS) - 1
    assert yielded + writer.written == pulled  # the same bytes either way
    assert b'"id":"msg_gw"' in pulled[0] and b'"model":"claude"' in pulled[0]
    assert pulled[-1] == b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    assert len(exchange.observed) == len(pulled_exchange.observed) == len(EVENTS)
    assert sum(isinstance(p, RawChunk) for p in exchange.observed) == 3  # deltas 2-4
    answer = exchange.said.result()  # what the evaluator judges
    assert answer.text == "word0 word1 word2 word3 " and answer.finish_reason == "stop"
    assert exchange.closed == (None, False)
