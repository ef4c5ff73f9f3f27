"""The provider interface: one OpenAI-shaped call in, one OpenAI-shaped result out.

Every upstream protocol implements `Provider`. The gateway speaks only OpenAI
shapes to providers; translation to anything else happens inside the provider. The
one exception is Anthropic's Messages API (`Endpoint.MESSAGES`, `COUNT_TOKENS`): its
calls and results are in Anthropic's shape, so that an Anthropic upstream gets the
client's body untouched and the others translate (`providers.anthropic_inbound`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from providers.errors import UnsupportedRequest
from providers.transport import EventMemory, TakeMemory

__all__ = [
    "MAX_COUNT",
    "MAX_SECONDS",
    "NO_HEADERS",
    "TOKEN_PRICED",
    "BinaryReply",
    "Call",
    "Chunk",
    "ChunkStream",
    "Endpoint",
    "Piece",
    "Provider",
    "RawChunk",
    "Reply",
    "Usage",
    "answer_chars",
    "estimate_prompt",
    "estimate_usage",
    "json_text",
    "listed",
    "request_chars",
]


class Endpoint(StrEnum):
    """An OpenAI API operation; each provider says which it supports."""

    CHAT = "chat.completions"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"
    IMAGES = "images.generations"
    SPEECH = "audio.speech"
    VIDEOS = "videos"
    VIDEO_STATUS = "videos.retrieve"
    RESPONSES = "responses"
    MESSAGES = "messages"  # Anthropic's Messages API, in Anthropic's shape both ways
    COUNT_TOKENS = "messages.count_tokens"


# The largest count, and the most seconds, an upstream may report and be believed: more
# than any answer takes, and what a 64-bit column and a float hold exactly. An upstream's
# number past them, below 0, or not a number at all ("nan", "1e400") is taken as 0, as a
# missing one is: it was stored as NULL or refused by the store (stopping every write
# after it) and billed as infinity.
MAX_COUNT = 1 << 53
MAX_SECONDS = 1e6
_COUNTS = ("prompt_tokens", "completion_tokens", "images", "cached_tokens", "cache_write_tokens")


@dataclass(slots=True)
class Usage:
    """What an answer consumed. `prompt_tokens` counts every input token, cached ones
    included (OpenAI's sense); `cached_tokens` and `cache_write_tokens` say how many of
    them were read from or written to a prompt cache, which upstreams price apart. Every
    figure is an upstream's, so it is checked as it is made (MAX_COUNT, MAX_SECONDS)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    images: int = 0
    seconds: float = 0.0
    cached_tokens: int = 0
    cache_write_tokens: int = 0

    def __post_init__(self) -> None:
        for name in _COUNTS:
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= MAX_COUNT:
                setattr(self, name, 0)
        seconds = self.seconds
        if type(seconds) not in (int, float) or not 0 <= seconds <= MAX_SECONDS:
            self.seconds = 0.0

    @classmethod
    def from_openai(cls, usage: Any) -> Usage | None:
        if not isinstance(usage, dict):
            return None
        prompt = usage.get("prompt_tokens", usage.get("input_tokens", 0))
        completion = usage.get("completion_tokens", usage.get("output_tokens", 0))
        return cls(
            prompt if isinstance(prompt, int) else 0,
            completion if isinstance(completion, int) else 0,
        )


def request_chars(body: Mapping[str, Any]) -> int:
    """The characters of text a request carries, in any of the APIs' shapes (chat
    messages, a prompt, Responses input and instructions, Anthropic's system), and its
    tools' definitions as JSON (a model reads them as prompt): what a count of its tokens
    is guessed from."""
    chars = _chars([body[key] for key in _TEXT_KEYS if key in body])
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        try:
            chars += len(orjson.dumps(tools))
        except orjson.JSONEncodeError:  # nested too deep to pass on: refused when sent
            chars += _said(tools)
    return chars


def estimate_usage(body: Mapping[str, Any], said: int, known: Usage | None = None) -> Usage:
    """What an answer is charged when its upstream never said: about four characters a
    token over the request's text (unless `known` has its prompt's count) and the `said`
    characters of the answer. A stream cut before its usage came (the client leaving,
    the upstream breaking) was charged nothing, so a client that left just before each
    end used the upstream for free as far as its budget could tell."""
    prompt = known.prompt_tokens if known is not None else 0
    return Usage(prompt or estimate_prompt(body), -(-said // 4))


def estimate_prompt(body: Mapping[str, Any]) -> int:
    """A request's prompt tokens, guessed as four characters a token (at least one): for
    charging an answer whose upstream never counted, and for Anthropic's count_tokens
    on an upstream that cannot count."""
    return max(1, -(-request_chars(body) // 4))


# The operations priced by tokens of text: one whose reply does not count its tokens is
# charged an estimate, not nothing (an upstream that omits `usage` would otherwise serve
# a budgeted key for free).
TOKEN_PRICED = frozenset(
    {
        Endpoint.CHAT,
        Endpoint.COMPLETIONS,
        Endpoint.RESPONSES,
        Endpoint.MESSAGES,
        Endpoint.EMBEDDINGS,
    }
)


def answer_chars(body: Mapping[str, Any]) -> int:
    """The characters an answer says, in any of the APIs' shapes (chat choices, completion
    text, Anthropic content blocks, Responses output; tool calls' names and arguments
    included, labels such as roles and finish reasons not): what its completion tokens are
    guessed from when the upstream did not count them. An embedding says nothing."""
    return _said([body[key] for key in _ANSWER_KEYS if key in body])


_TEXT_KEYS = ("messages", "prompt", "input", "instructions", "system")
_ANSWER_KEYS = ("choices", "content", "output")
_LABELS = frozenset(
    {"id", "index", "logprobs", "object", "role", "status", "type", "finish_reason", "stop_reason"}
)


def listed(value: Any) -> list[Any]:
    """`value` where an upstream's body should hold a list, or an empty one where it holds
    anything else: reading an odd body never fails."""
    return value if isinstance(value, list) else []


# The two walks below take bodies from strangers (a client's request, an upstream's
# reply), nested up to the 1,024 levels orjson parses: loops over a stack, not recursion,
# which Python stops at 1,000 frames.


def _said(value: Any) -> int:
    """The characters of every string in `value`, but under the keys in _LABELS."""
    total, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(v for k, v in item.items() if k not in _LABELS)
    return total


def _chars(value: Any) -> int:
    """The characters of text in `value`: strings, lists of them, a dict's "content" and
    "text"; a token id counts as four."""
    total, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, int):  # a token id
            total += 4
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item[key] for key in ("content", "text") if key in item)
    return total


class _NoHeaders(Mapping[str, str]):
    """Empty and immutable (and hashable, so a dataclass may default to it): one shared
    instance instead of a dict per call."""

    __slots__ = ()

    def __getitem__(self, key: str) -> str:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __hash__(self) -> int:
        return 0

    def get(self, key: str, default: Any = None) -> Any:
        return default


NO_HEADERS: Mapping[str, str] = _NoHeaders()


@dataclass(slots=True)
class Call:
    """One attempt's request, in OpenAI shape. `body` is the client's; never mutate it."""

    endpoint: Endpoint
    body: dict[str, Any]
    upstream_model: str
    stream: bool = False
    resource_id: str | None = None
    headers: Mapping[str, str] = NO_HEADERS  # client headers the provider may pass on
    trace: Mapping[str, str] = NO_HEADERS  # sent to every upstream: the trace context
    memory: TakeMemory | None = None  # a whole answer's bodies are charged to it
    event_memory: EventMemory | None = None  # and a streamed event not yet whole


@dataclass(slots=True)
class Reply:
    body: dict[str, Any]
    usage: Usage | None = None
    status: int = 200


# One server-sent event: (event name or None, parsed JSON data).
Chunk = tuple[str | None, dict[str, Any]]


class RawChunk:
    """A chunk as its client will read it, never parsed: the upstream's bytes with the
    id and model replaced (`sse`, a whole `data: ...` event, after an `event:` line if
    it has a name), and its text still JSON-escaped (`text`, for the evaluator). A
    provider hands one out only for a chunk whose every other byte matches one it has
    parsed and checked to be a plain text chunk (providers/splice.py); `chunk()` is
    what a full parse gives."""

    __slots__ = ("sse", "text")

    def __init__(self, sse: bytes, text: bytes) -> None:
        self.sse = sse
        self.text = text

    def chunk(self) -> Chunk:
        if self.sse.startswith(b"event: "):
            name, _, data = self.sse[7:].partition(b"\ndata: ")
            return name.decode(), orjson.loads(data[:-2])
        return None, orjson.loads(self.sse[6:-2])


def json_text(value: str) -> bytes:
    """`value` as the inside of a JSON string: escaped, without its quotes."""
    return orjson.dumps(value)[1:-1]


# What a stream hands out: a parsed chunk, or a checked one left as bytes.
Piece = Chunk | RawChunk


class ChunkStream(ABC):
    """A streamed answer as OpenAI-shaped chunks. Usage is filled in as it arrives."""

    usage: Usage | None = None
    finish_reason: str | None = None
    complete = False  # set before the last batch is handed out

    @abstractmethod
    def batches(self) -> AsyncIterator[list[Chunk]]:
        """The chunks grouped as they arrived (each group non-empty), so the gateway
        writes a group to its client in one go rather than one write per chunk."""

    def pieces(self, response_id: str, model: str) -> AsyncIterator[Sequence[Piece]]:
        """Like `batches()`, but a stream that can may hand out chunks as `RawChunk`s,
        already under `response_id` and `model`: the gateway's path to its client, which
        then writes them as they are. Streams that read the chunks use `batches()`."""
        return self.batches()

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        async for batch in self.batches():
            for chunk in batch:
                yield chunk

    @abstractmethod
    async def aclose(self) -> None: ...


class BinaryReply(ABC):
    """A binary answer (audio) passed through as it arrives."""

    media_type: str = "application/octet-stream"
    usage: Usage | None = None

    @abstractmethod
    def __aiter__(self) -> AsyncIterator[bytes]: ...

    @abstractmethod
    async def aclose(self) -> None: ...


class Provider:
    """An upstream protocol. Subclasses set `endpoints` and implement what they support."""

    endpoints: frozenset[Endpoint] = frozenset()

    def __init__(self, name: str) -> None:
        self.name = name

    def supports(self, endpoint: Endpoint) -> bool:
        return endpoint in self.endpoints

    async def send(self, call: Call) -> Reply:
        raise self.unsupported(call.endpoint)

    async def stream(self, call: Call) -> ChunkStream:
        raise self.unsupported(call.endpoint)

    async def binary(self, call: Call) -> BinaryReply:
        raise self.unsupported(call.endpoint)

    async def aclose(self) -> None:
        pass

    def unsupported(self, endpoint: Endpoint) -> UnsupportedRequest:
        return UnsupportedRequest(
            f"provider '{self.name}' cannot serve {endpoint.value}", status=400
        )
