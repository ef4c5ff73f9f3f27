"""The OpenAI stream's fast path (`pieces()`, plain content chunks forwarded as bytes)
against its full parse (`batches()`): for every stream, however its bytes are cut, the
client must read the same chunks, and the gateway must see the same usage, finish
reason, end and errors. Adversarial streams try to make the two disagree."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.base import Call, Endpoint, RawChunk
from providers.errors import ProviderError
from providers.openai import OpenAIProvider
from providers.transport import Transport, UpstreamResponse, UpstreamStream

RID = 'chatcmpl-gw"1'  # escaped on the way out, like any id or name could need
MODEL = "gpt/é"
HEAD = b'{"id":"chatcmpl-9x","object":"chat.completion.chunk","created":1700000000,'
HEAD += b'"model":"gpt-4o-2024","system_fingerprint":"fp_44709d6fcb","choices":'


def content(text: bytes, tail: bytes = b',"usage":null}') -> bytes:
    """An OpenAI content chunk with `text` as its (already escaped) content."""
    choice = b'[{"index":0,"delta":{"content":"' + text
    return HEAD + choice + b'"},"logprobs":null,"finish_reason":null}]' + tail


ROLE = HEAD + (
    b'[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},'
    b'"logprobs":null,"finish_reason":null}],"usage":null}'
)
FINISH = HEAD + b'[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}'
USAGE = HEAD + b'[],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}'


def sse(*events: bytes, done: bool = True) -> bytes:
    out = b"".join(b"data: " + e + b"\n\n" for e in events)
    return out + (b"data: [DONE]\n\n" if done else b"")


class _Reads:
    def __init__(self, reads: list[bytes]) -> None:
        self._reads = iter(reads)

    def __aiter__(self) -> _Reads:
        return self

    async def __anext__(self) -> bytes:
        try:
            return next(self._reads)
        except StopIteration:
            raise StopAsyncIteration from None


class _Upstream(UpstreamStream):
    def __init__(self, reads: list[bytes]) -> None:
        self.status = 200
        self.headers: Mapping[str, str] = {"content-type": "text/event-stream"}
        self._reads = reads

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        # A plain iterator, not an async generator: a stream a test leaves unfinished
        # (an error mid-way) has nothing to finalize once its event loop is closed.
        return _Reads(self._reads)

    async def aread(self) -> bytes:
        return b"".join(self._reads)

    async def aclose(self) -> None:
        pass


class _Transport(Transport):
    """Answers every stream with the same reads."""

    def __init__(self, reads: list[bytes]) -> None:
        self.reads = reads

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> UpstreamResponse:
        raise AssertionError("not used")

    async def stream(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> UpstreamStream:
        return _Upstream(self.reads)


def cut(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def _outcome(reads: list[bytes], fast: bool, client_usage: bool) -> dict[str, Any]:
    """What the client reads and the gateway sees, by one path."""
    provider = OpenAIProvider("up", "http://upstream.test/v1", _Transport(reads))
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    if client_usage:
        body["stream_options"] = {"include_usage": True}
    stream = await provider.stream(Call(Endpoint.CHAT, body, "up", True))
    chunks: list[Any] = []
    texts: list[str] = []
    raw = 0
    error = None
    try:
        batches = stream.pieces(RID, MODEL) if fast else stream.batches()
        async for batch in batches:
            for piece in batch:
                if isinstance(piece, RawChunk):
                    raw += 1
                    assert piece.sse.startswith(b"data: ") and piece.sse.endswith(b"\n\n")
                    data = orjson.loads(piece.sse[6:-2])
                    texts.append(orjson.loads(b'"' + piece.text + b'"'))
                else:
                    event, data = piece
                    assert event is None
                    data["id"], data["model"] = RID, MODEL  # what the gateway does
                    choices = data.get("choices")
                    if choices and (choices[0].get("delta") or {}).get("content"):
                        texts.append(choices[0]["delta"]["content"])
                chunks.append(data)
    except ProviderError as exc:
        error = (type(exc), exc.message)
    usage = stream.usage
    return {
        "chunks": chunks,
        "texts": "".join(texts),
        "usage": (usage.prompt_tokens, usage.completion_tokens) if usage else None,
        "finish": stream.finish_reason,
        "complete": stream.complete,
        "error": error,
        "raw": raw,
    }


async def same(reads: list[bytes], client_usage: bool = False) -> dict[str, Any]:
    """Both paths' outcome, asserted equal; the fast path's."""
    fast = await _outcome(reads, True, client_usage)
    full = await _outcome(reads, False, client_usage)
    assert {**fast, "raw": 0} == full
    return fast


async def test_a_common_openai_stream_is_forwarded_as_bytes_but_what_it_must_read() -> None:
    texts = [b"Hello", b", wor", b"ld", b"!"]
    stream = sse(ROLE, *(content(t) for t in texts), FINISH, USAGE)
    out = await same([stream])
    # The role chunk and the first content chunk are parsed (each a new template);
    # the three content chunks after it are not; finish and usage are.
    assert out["raw"] == 3
    assert out["texts"] == "Hello, world!"
    assert out["usage"] == (9, 3) and out["finish"] == "stop" and out["complete"]
    assert all("usage" not in c for c in out["chunks"])  # the client did not ask for it
    assert all(c["id"] == RID and c["model"] == MODEL for c in out["chunks"])


async def test_a_client_that_asked_for_usage_keeps_the_null_usage_and_the_usage_chunk() -> None:
    stream = sse(ROLE, content(b"a"), content(b"b"), content(b"c"), FINISH, USAGE)
    out = await same([stream], client_usage=True)
    assert out["raw"] == 2
    assert [c.get("usage", "absent") for c in out["chunks"]][:4] == [None] * 4
    assert out["chunks"][-1]["usage"]["total_tokens"] == 12


@pytest.mark.parametrize(
    "text",
    [
        rb"say \"hi\"",  # escaped quotes
        rb"a\\",  # a content that ends in an escaped backslash
        rb"line\nbreak\ttab\/slash\u00e9\ud83d\ude00",  # every escape, a surrogate pair
        "déjà vu 🙂".encode(),  # raw UTF-8
        b"",
    ],
)
async def test_escapes_and_unicode_in_the_content_take_the_fast_path(text: bytes) -> None:
    stream = sse(ROLE, content(b"x"), content(text), content(text), FINISH, USAGE)
    out = await same([stream])
    assert out["raw"] == 2
    assert out["texts"] == "x" + 2 * orjson.loads(b'"' + text + b'"')


@pytest.mark.parametrize(
    "smuggled",
    [
        # an unescaped quote ends the content early: the rest are keys of the chunk
        b'x","usage":{"prompt_tokens":1,"completion_tokens":1},"y":"',
        b'x"},"logprobs":null,"finish_reason":"length"}],"z":[{"a":{"b":"',
        b'x","id":"evil","model":"evil',
        b'x\\\\","error":{"message":"boom"},"q":"',  # an escaped backslash, then a quote
    ],
)
async def test_content_that_would_add_keys_is_parsed(smuggled: bytes) -> None:
    stream = sse(ROLE, content(b"a"), content(b"b"), content(smuggled), FINISH, USAGE)
    out = await same([stream])
    assert out["raw"] == 1  # only "b"


@pytest.mark.parametrize(
    "bad",
    [
        b"tab\there",  # a raw control character
        rb"\ud800 alone",  # a lone surrogate
        b"\xff\xfe",  # not UTF-8
        rb"\x41",  # not a JSON escape
        rb"\u12",  # a short one
    ],
)
async def test_content_the_parser_refuses_is_refused_by_both_paths(bad: bytes) -> None:
    stream = sse(ROLE, content(b"a"), content(b"b"), content(bad), FINISH, USAGE)
    out = await same([stream])
    assert out["error"] is not None and out["chunks"][-1]["choices"][0]["delta"]["content"] == "b"


@pytest.mark.parametrize(
    "chunk",
    [
        # fields in another order: the model before the id
        b'{"model":"m","id":"c","object":"chat.completion.chunk","created":1,"choices":'
        b'[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}',
        # whitespace between tokens
        b'{"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",'
        b' "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": null}]}',
        # a key twice: the parser keeps the last
        b'{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","model":"n",'
        b'"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}',
        # a usage given twice, the null last
        b'{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":'
        b'[{"index":0,"delta":{"content":"hi"},"finish_reason":null}],'
        b'"usage":{"prompt_tokens":1,"completion_tokens":1},"usage":null}',
        # an escaped id
        b'{"id":"c\\"d","object":"chat.completion.chunk","created":1,"model":"m","choices":'
        b'[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}',
        # two choices
        b'{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":'
        b'[{"index":0,"delta":{"content":"hi"},"finish_reason":null},'
        b'{"index":1,"delta":{"content":"ho"},"finish_reason":null}]}',
        # a tool call
        b'{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":'
        b'[{"index":0,"delta":{"content":"","tool_calls":[{"index":0,"function":'
        b'{"arguments":"{}"}}]},"finish_reason":null}]}',
        # a nested "model" key in an extra field, after a comma
        b'{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","meta":'
        b'{"a":1,"model":"x"},"choices":[{"index":0,"delta":{"content":"hi"},'
        b'"finish_reason":null}]}',
    ],
)
async def test_unusual_chunks_are_parsed_every_time(chunk: bytes) -> None:
    out = await same([sse(chunk, chunk, chunk, FINISH)])
    assert out["raw"] == 0


async def test_a_nested_model_key_is_left_alone() -> None:
    chunk = (
        b'{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","meta":'
        b'{"model":"x"},"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}'
    )
    out = await same([sse(chunk, chunk, chunk, FINISH)])
    assert out["raw"] == 2 and all(c["meta"] == {"model": "x"} for c in out["chunks"][:3])


async def test_a_chunk_that_differs_from_the_template_outside_its_content_is_parsed() -> None:
    def other(text: bytes) -> bytes:
        return content(text).replace(b"chatcmpl-9x", b"chatcmpl-9y")

    with_usage = other(b"d").replace(
        b',"usage":null', b',"usage":{"prompt_tokens":2,"completion_tokens":2}'
    )
    stream = sse(ROLE, content(b"a"), content(b"b"), other(b"c"), other(b"e"), with_usage, FINISH)
    out = await same([stream])
    assert out["raw"] == 2  # "b" (template "a") and "e" (template "c")
    assert out["usage"] == (2, 2) and out["texts"] == "abced"


async def test_an_upstream_error_event_after_plain_chunks_fails_the_stream() -> None:
    error = b'{"error":{"message":"overloaded","type":"server_error"}}'
    out = await same([sse(ROLE, content(b"a"), content(b"b"), error, done=False)])
    assert out["error"] is not None and "overloaded" in out["error"][1] and out["raw"] == 1


async def test_a_stream_cut_at_every_byte_reads_the_same() -> None:
    stream = sse(ROLE, content(rb"a\"b"), content("é".encode()), content(b"c"), FINISH, USAGE)
    whole = await same([stream])
    for at in range(1, len(stream)):
        assert await same([stream[:at], stream[at:]]) == whole
    for size in (1, 2, 3, 5, 64):
        assert await same(cut(stream, size)) == whole
    crlf = stream.replace(b"\n", b"\r\n")
    for size in (1, 7, 1000):
        assert (await same(cut(crlf, size)))["chunks"] == whole["chunks"]


_TEXT = st.text(max_size=12).map(lambda s: orjson.dumps(s)[1:-1])
_ODD = st.sampled_from(
    [b'"', b"\\", b'\\"', b'","usage":{"prompt_tokens":5},"k":"', b"\x01", b"\xc3", b"\n"]
)


@settings(max_examples=150, deadline=None)
@given(
    texts=st.lists(
        st.one_of(_TEXT, _TEXT.flatmap(lambda t: _ODD.map(lambda o: t + o))), max_size=6
    ),
    size=st.integers(1, 400),
    client_usage=st.booleans(),
)
async def test_any_content_and_any_cuts_read_the_same(
    texts: list[bytes], size: int, client_usage: bool
) -> None:
    stream = sse(ROLE, *(content(t) for t in texts), FINISH, USAGE)
    await same(cut(stream, size), client_usage)


async def test_a_stream_of_unusual_chunks_stops_looking_for_a_template() -> None:
    tool = HEAD + (
        b'[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]},'
        b'"logprobs":null,"finish_reason":null}],"usage":null}'
    )
    plain = [content(b"a"), content(b"b")]
    few = await same([sse(*[tool] * 3, *plain, FINISH)])
    assert few["raw"] == 1  # a template was still looked for after 3 misses
    # Eight chunks that cannot be templates (each carries a usage): no more looking.
    with_usage = content(b"x", b',"usage":{"prompt_tokens":1}}')
    many = await same([sse(*[with_usage] * 8, *plain)])
    assert many["raw"] == 0 and many["texts"] == "x" * 8 + "ab"  # parsed, all the same
