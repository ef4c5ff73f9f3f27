"""Anthropic's Messages event stream, re-emitted as OpenAI `chat.completion.chunk` dicts.

Kept apart from `providers.anthropic` so the request/response translation and the
event-by-event state machine can each be read on their own.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import AsyncIterator, Sequence
from typing import Any

from providers.anthropic_inbound import message_usage
from providers.base import Chunk, ChunkStream, Piece, RawChunk, Usage
from providers.errors import (
    InvalidResponse,
    UpstreamServerError,
    redact,
    upstream_json,
)
from providers.splice import frame, plain_text
from providers.sse import Event, chunk_batches
from providers.transport import EventMemory, UpstreamStream

__all__ = [
    "FINISH_REASONS",
    "AnthropicChunks",
    "MessageStream",
    "finish_reason",
    "prompt_tokens",
]

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def finish_reason(stop_reason: Any) -> str:
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def prompt_tokens(usage: dict[str, Any]) -> int:
    """Anthropic counts cached prompt tokens apart; OpenAI's prompt_tokens includes them."""
    total = 0
    for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
        value = usage.get(key)
        if isinstance(value, int):
            total += value
    return total


class _EventStream(ChunkStream):
    """An upstream Messages stream read event by event: `_read` (each subclass's)
    turns events into chunks; a stream that breaks or ends before message_stop fails."""

    _upstream: UpstreamStream
    _provider: str
    _memory: EventMemory | None = None  # the call's event_memory

    def batches(self) -> AsyncIterator[list[Chunk]]:
        return chunk_batches(
            self, self._upstream, self._read, self._provider, self._ended, self._memory
        )

    def _ended(self) -> None:
        raise InvalidResponse(f"{self._provider} stream ended before message_stop")

    @abstractmethod
    def _read(self, events: list[tuple[str | None, bytes]], batch: list[Chunk]) -> bool:
        """Translate `events` into `batch`; True at message_stop."""

    async def aclose(self) -> None:
        await self._upstream.aclose()


class AnthropicChunks(_EventStream):
    """Translates one upstream Messages stream; iterate it once."""

    def __init__(
        self,
        upstream: UpstreamStream,
        provider: str,
        model: str,
        include_usage: bool,
        secrets: tuple[str, ...] = (),
        memory: EventMemory | None = None,
    ) -> None:
        self._upstream = upstream
        self._memory = memory
        self._provider = provider
        self._model = model
        self._include_usage = include_usage
        self._secrets = secrets
        self._id = ""
        self._created = int(time.time())
        self._prompt = 0
        self._completion = 0
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool_calls index

    def _read(self, events: list[tuple[str | None, bytes]], batch: list[Chunk]) -> bool:
        """Translate `events` into `batch`; True at message_stop."""
        for _name, data in events:
            event = upstream_json(data, f"a stream event from {self._provider}")
            kind = event.get("type")
            if kind == "message_stop":
                if self._include_usage:
                    batch.append((None, self._usage_chunk()))
                return True
            chunk = self._translate(kind, event)
            if chunk is not None:
                batch.append((None, chunk))
        return False

    def _translate(self, kind: Any, event: dict[str, Any]) -> dict[str, Any] | None:
        """Update state from one event; return the chunk to emit, if any."""
        if kind == "message_start":
            message = event.get("message")
            if not isinstance(message, dict):
                raise InvalidResponse(f"{self._provider} sent a bad message_start")
            self._id = str(message.get("id") or "")
            self._record(message.get("usage"))
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            block = event.get("content_block")
            if not isinstance(block, dict):
                return None
            if block.get("type") == "tool_use":
                position = len(self._tools)
                self._tools[event.get("index", position)] = position
                call = {
                    "index": position,
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""},
                }
                return self._chunk({"tool_calls": [call]})
            if block.get("type") == "text" and block.get("text"):
                return self._chunk({"content": block["text"]})
            return None
        if kind == "content_block_delta":
            delta = event.get("delta")
            if not isinstance(delta, dict):
                return None
            if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
                return self._chunk({"content": delta["text"]})
            if delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                position = self._tools.get(event.get("index", -1), max(len(self._tools) - 1, 0))
                args = {"index": position, "function": {"arguments": delta["partial_json"]}}
                return self._chunk({"tool_calls": [args]})
            return None  # thinking, signature and citation deltas have no OpenAI chunk
        if kind == "message_delta":
            self._record(event.get("usage"))
            delta = event.get("delta")
            stop = delta.get("stop_reason") if isinstance(delta, dict) else None
            self.finish_reason = finish_reason(stop)
            return self._chunk({}, self.finish_reason)
        if kind == "error":
            err = event.get("error")
            detail = err.get("message", "") if isinstance(err, dict) else str(err or "")
            detail = redact(str(detail), self._secrets)
            raise UpstreamServerError(f"{self._provider} stream error: {detail}")
        return None  # ping, content_block_stop and event types added later

    def _record(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        if any(key in usage for key in ("input_tokens", "cache_read_input_tokens")):
            self._prompt = prompt_tokens(usage)
        if isinstance(usage.get("output_tokens"), int):
            self._completion = usage["output_tokens"]
        self.usage = Usage(self._prompt, self._completion)

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self._include_usage:
            chunk["usage"] = None
        return chunk

    def _usage_chunk(self) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [],
            "usage": {
                "prompt_tokens": self._prompt,
                "completion_tokens": self._completion,
                "total_tokens": self._prompt + self._completion,
            },
        }


_DELTA = "content_block_delta"
_DELTA_SSE = b"event: content_block_delta\ndata: "
_TEXT = b'"text":"'
# A stream whose deltas are rarely plain text (tool input) stops looking for a template
# after this many: its deltas are parsed, as they would be anyway.
_MAX_MISSES = 8


class MessageStream(_EventStream):
    """An Anthropic upstream's Messages stream for an Anthropic client: every event
    passes as it came (named as it came); usage is read on the way, for pricing. Text
    deltas like the last one parsed, but for their text, pass as their bytes
    (`pieces`; providers/splice.py)."""

    def __init__(
        self,
        upstream: UpstreamStream,
        provider: str,
        secrets: tuple[str, ...] = (),
        memory: EventMemory | None = None,
    ) -> None:
        self._upstream = upstream
        self._memory = memory
        self._provider = provider
        self._secrets = secrets
        self._usage: dict[str, Any] = {}
        self._plain: tuple[bytes, bytes] | None = None  # the last text delta's head, tail
        self._misses = 0

    def pieces(self, response_id: str, model: str) -> AsyncIterator[Sequence[Piece]]:
        return chunk_batches(
            self, self._upstream, self._read_pieces, self._provider, self._ended, self._memory
        )

    def _read_pieces(self, events: list[Event], batch: list[Piece]) -> bool:
        """Like `_read`, but a text delta that matches the last one parsed in every byte
        but its text is passed on as bytes (`RawChunk`)."""
        plain = self._plain
        for event in events:
            name, data = event
            if plain is not None and name == _DELTA:
                text = plain_text(data, *plain)
                if text is not None:
                    batch.append(RawChunk(_DELTA_SSE + data + b"\n\n", text))
                    continue
            parsed: list[Chunk] = []
            done = self._read([event], parsed)
            batch.extend(parsed)
            if done:
                return True
            if name == _DELTA and parsed and self._misses < _MAX_MISSES:
                plain = self._plain = _text_delta(data, parsed[0][1])
                self._misses += plain is None
        return False

    def _read(self, events: list[tuple[str | None, bytes]], batch: list[Chunk]) -> bool:
        for name, data in events:
            event = upstream_json(data, f"a stream event from {self._provider}")
            kind = event.get("type")
            if kind == "error":
                err = event.get("error")
                detail = err.get("message", "") if isinstance(err, dict) else str(err or "")
                detail = redact(str(detail), self._secrets)
                raise UpstreamServerError(f"{self._provider} stream error: {detail}")
            if kind == "message_start":
                message = event.get("message")
                if isinstance(message, dict):
                    self._count(message.get("usage"))
            elif kind == "message_delta":
                self._count(event.get("usage"))
                delta = event.get("delta")
                stop = delta.get("stop_reason") if isinstance(delta, dict) else None
                self.finish_reason = finish_reason(stop)
            batch.append((name or (kind if isinstance(kind, str) else None), event))
            if kind == "message_stop":
                return True
        return False

    def _count(self, usage: Any) -> None:
        """message_delta's counts are cumulative: the latest of each is the answer's."""
        if isinstance(usage, dict):
            self._usage.update((k, v) for k, v in usage.items() if isinstance(v, int))
            self.usage = message_usage(self._usage)


def _text_delta(data: bytes, event: dict[str, Any]) -> tuple[bytes, bytes] | None:
    """`data`, parsed as `event`, as a template for the text deltas after it: None unless
    it is a text delta and nothing else (providers/splice.py checks its bytes)."""
    if event.get("type") != _DELTA or not isinstance(event.get("index"), int):
        return None
    delta = event.get("delta")
    if not isinstance(delta, dict) or delta.get("type") != "text_delta":
        return None
    if not isinstance(delta.get("text"), str) or len(delta) != 2 or len(event) != 3:
        return None
    return frame(data, _TEXT, event)
