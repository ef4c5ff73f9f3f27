"""Anthropic's Messages API served by an OpenAI-compatible upstream.

A client that speaks Anthropic (`POST /v1/messages`) may be routed to any model. An
Anthropic upstream takes its body as it is (`providers.anthropic`); every other
provider serves it through its chat completions: the request becomes a chat body, the
answer becomes a Message, and a streamed answer becomes Anthropic's event sequence
(message_start, content_block_start/delta/stop, message_delta, message_stop). The
translation is the reverse of `providers.anthropic`'s and lives beside it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from providers.base import (
    Call,
    Chunk,
    ChunkStream,
    Endpoint,
    Provider,
    Reply,
    Usage,
    estimate_prompt,
    listed,
)
from providers.errors import BadRequest, InvalidResponse, encodable, request_json

__all__ = [
    "STOP_REASONS",
    "MessageEvents",
    "message_usage",
    "messages_via_chat",
    "stream_via_chat",
    "to_chat",
    "to_message",
]

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


def _bad(message: str, param: str | None = None) -> BadRequest:
    return BadRequest(message, status=400, param=param)


# --- the provider's side: a Messages call served through chat completions ----------------


async def messages_via_chat(provider: Provider, call: Call) -> Reply:
    """A Messages call answered by `provider`'s chat completions, as a Message."""
    if call.endpoint is Endpoint.COUNT_TOKENS:
        # A budget hint: the guess an uncounted answer is charged by serves it.
        return Reply({"input_tokens": estimate_prompt(call.body)})
    if call.endpoint is not Endpoint.MESSAGES:
        raise provider.unsupported(call.endpoint)
    chat = Call(
        Endpoint.CHAT, to_chat(call.body), call.upstream_model, headers=call.headers,
        trace=call.trace, memory=call.memory,
    )  # fmt: skip
    reply = await provider.send(chat)
    message = to_message(reply.body, call.upstream_model)
    if message is None:
        raise InvalidResponse(f"{provider.name} returned an unexpected body")
    return Reply(message, reply.usage, reply.status)


async def stream_via_chat(provider: Provider, call: Call) -> ChunkStream:
    """A streamed Messages call answered by `provider`'s streamed chat completions."""
    chat = Call(
        Endpoint.CHAT, to_chat(call.body), call.upstream_model, True, headers=call.headers,
        trace=call.trace, event_memory=call.event_memory,
    )  # fmt: skip
    return MessageEvents(await provider.stream(chat), call.upstream_model)


# --- request: Anthropic Messages body -> OpenAI chat body --------------------------------


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """Build a chat body from a Messages body; `body` is left untouched."""
    messages: list[dict[str, Any]] = []
    system = _system_text(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    raw = body.get("messages")
    if not isinstance(raw, list):
        raise _bad("'messages' must be a list", "messages")
    for i, message in enumerate(raw):
        if not isinstance(message, dict):
            raise _bad(f"messages.{i}: expected an object", "messages")
        role = message.get("role")
        if role == "user":
            messages += _user(message.get("content"), i)
        elif role == "assistant":
            messages.append(_assistant(message.get("content"), i))
        else:
            raise _bad(f"messages.{i}.role: expected 'user' or 'assistant'", "messages")
    out: dict[str, Any] = {"messages": messages}
    if isinstance(body.get("max_tokens"), int):
        out["max_tokens"] = body["max_tokens"]
    stop = body.get("stop_sequences")
    if isinstance(stop, list) and stop:
        out["stop"] = stop
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    tools = body.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise _bad("'tools' must be a list", "tools")
        out["tools"] = [_tool(tool) for tool in tools]
    _tool_choice(body.get("tool_choice"), out)
    return out


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "\n\n".join(
            b["text"]
            for b in system
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        )
    return ""


def _user(content: Any, i: int) -> list[dict[str, Any]]:
    """A user turn; its tool results become `tool` messages, ahead of the rest (OpenAI
    wants them right after the assistant's tool calls)."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    if not isinstance(content, list):
        raise _bad(f"messages.{i}.content: expected a string or a list of blocks", "messages")
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            results.append(_tool_result(block, i))
        elif kind == "text":
            parts.append({"type": "text", "text": block.get("text") or ""})
        elif kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block, i)}})
        else:
            raise _bad(
                f"messages.{i}: content block type {kind!r} cannot be sent to this model",
                "messages",
            )
    if parts:
        if all(p["type"] == "text" for p in parts):
            results.append({"role": "user", "content": "".join(p["text"] for p in parts)})
        else:
            results.append({"role": "user", "content": parts})
    return results


def _image_url(block: dict[str, Any], i: int) -> str:
    source = block.get("source")
    if isinstance(source, dict):
        if source.get("type") == "base64" and source.get("media_type") and source.get("data"):
            return f"data:{source['media_type']};base64,{source['data']}"
        if source.get("type") == "url" and isinstance(source.get("url"), str):
            return str(source["url"])
    raise _bad(f"messages.{i}: an image needs a base64 or url source", "messages")


def _tool_result(block: dict[str, Any], i: int) -> dict[str, Any]:
    content = block.get("content")
    if isinstance(content, list):
        text = "".join(
            b.get("text") or "" for b in content if isinstance(b, dict) and b.get("type") == "text"
        )
    elif isinstance(content, str):
        text = content
    elif content is None:
        text = ""
    else:
        raise _bad(f"messages.{i}: tool_result content must be a string or blocks", "messages")
    if block.get("is_error") is True:
        text = f"Error: {text}"
    return {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text}


def _assistant(content: Any, i: int) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    if not isinstance(content, list):
        raise _bad(f"messages.{i}.content: expected a string or a list of blocks", "messages")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            arguments = request_json(block.get("input") or {}).decode()
            function = {"name": block.get("name"), "arguments": arguments}
            calls.append({"id": block.get("id"), "type": "function", "function": function})
        elif kind in ("thinking", "redacted_thinking"):
            continue  # another model's reasoning: nothing an OpenAI upstream takes
        else:
            raise _bad(
                f"messages.{i}: content block type {kind!r} cannot be sent to this model",
                "messages",
            )
    out: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        out["tool_calls"] = calls
    return out


def _tool(tool: Any) -> dict[str, Any]:
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        raise _bad("each tool needs a name", "tools")
    if tool.get("type") not in (None, "custom"):
        raise _bad(f"tool type {tool['type']!r} is served by Anthropic only", "tools")
    function: dict[str, Any] = {
        "name": tool["name"],
        "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
    }
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _tool_choice(choice: Any, out: dict[str, Any]) -> None:
    if choice is None:
        return
    if not isinstance(choice, dict):
        raise _bad("'tool_choice' must be an object", "tool_choice")
    kind = choice.get("type")
    if kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif isinstance(kind, str) and kind in _TOOL_CHOICES:
        out["tool_choice"] = _TOOL_CHOICES[kind]
    else:
        raise _bad(f"unknown tool_choice type {kind!r}", "tool_choice")
    if choice.get("disable_parallel_tool_use") is True and "tools" in out:
        out["parallel_tool_calls"] = False


# --- answer: OpenAI chat.completion -> Anthropic Message ---------------------------------


def to_message(data: Any, model: str) -> dict[str, Any] | None:
    """Translate a chat completion; None when it is not one."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    if not isinstance(message, dict):
        return None
    content: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in listed(message.get("tool_calls")):
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            content.append(
                {
                    "type": "tool_use",
                    "id": call.get("id"),
                    "name": function.get("name"),
                    "input": _arguments(function.get("arguments")),
                }
            )
    usage = Usage.from_openai(data.get("usage")) or Usage()
    return {
        "id": data.get("id"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _stop_reason(choices[0].get("finish_reason")),
        "stop_sequence": None,
        "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens},
    }


def _arguments(arguments: Any) -> Any:
    """A tool call's arguments as Anthropic's `input` object (an upstream that sent
    broken JSON gets it back as a string under "arguments", not a failed answer)."""
    if not isinstance(arguments, str) or not arguments:
        return {}
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {"arguments": arguments}
    if not encodable(arguments, parsed):  # could not be passed on: as broken as the above
        return {"arguments": arguments}
    return parsed if isinstance(parsed, dict) else {"arguments": parsed}


def _stop_reason(finish: Any) -> str:
    return STOP_REASONS.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"


def message_usage(usage: Any) -> Usage | None:
    """Anthropic's usage as the gateway's: prompt_tokens counts cached tokens too."""
    if not isinstance(usage, dict):
        return None
    counts = [
        value if isinstance(value, int) else 0
        for value in (
            usage.get("input_tokens"),
            usage.get("output_tokens"),
            usage.get("cache_read_input_tokens"),
            usage.get("cache_creation_input_tokens"),
        )
    ]
    fresh, output, read, write = counts
    return Usage(fresh + read + write, output, cached_tokens=read, cache_write_tokens=write)


# --- stream: OpenAI chat.completion.chunk -> Anthropic events ----------------------------


class MessageEvents(ChunkStream):
    """Anthropic's event sequence from a streamed chat completion; iterate it once."""

    def __init__(self, chat: ChunkStream, model: str) -> None:
        self._chat = chat
        self._model = model
        self._started = False
        self._index = -1  # the open content block's index (-1: none open)
        self._open: str | None = None  # its type: "text", or a tool call's OpenAI index
        self._stop: str | None = None

    async def batches(self) -> AsyncIterator[list[Chunk]]:
        async for chunks in self._chat.batches():
            out: list[Chunk] = []
            for _event, chunk in chunks:
                self._translate(chunk, out)
            if out:
                yield out
        self.usage = self._chat.usage
        self.finish_reason = self._chat.finish_reason
        end: list[Chunk] = []
        self._start(end)
        self._close(end)
        usage = self.usage or Usage()
        delta = {"stop_reason": self._stop or "end_turn", "stop_sequence": None}
        counts = {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens}
        end.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": counts}))
        end.append(("message_stop", {"type": "message_stop"}))
        self.complete = True
        yield end

    async def aclose(self) -> None:
        await self._chat.aclose()

    def _translate(self, chunk: dict[str, Any], out: list[Chunk]) -> None:
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return
        self._start(out)
        choice = choices[0]
        if choice.get("finish_reason"):
            self._stop = _stop_reason(choice["finish_reason"])
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return
        text = delta.get("content")
        if isinstance(text, str) and text:
            if self._open != "text":
                self._block(out, {"type": "text", "text": ""}, "text")
            out.append(self._delta({"type": "text_delta", "text": text}))
        for call in listed(delta.get("tool_calls")):
            if not isinstance(call, dict):
                continue
            key = f"tool{call.get('index', 0)}"
            function = call.get("function")
            function = function if isinstance(function, dict) else {}
            if self._open != key:
                block: dict[str, Any] = {
                    "type": "tool_use",
                    "id": call.get("id"),
                    "name": function.get("name"),
                    "input": {},
                }
                self._block(out, block, key)
            arguments = function.get("arguments")
            if isinstance(arguments, str) and arguments:
                out.append(self._delta({"type": "input_json_delta", "partial_json": arguments}))

    def _start(self, out: list[Chunk]) -> None:
        if self._started:
            return
        self._started = True
        message: dict[str, Any] = {
            "id": "",
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # The input count comes with the chat stream's last chunk: message_delta has it.
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        out.append(("message_start", {"type": "message_start", "message": message}))

    def _block(self, out: list[Chunk], block: dict[str, Any], key: str) -> None:
        self._close(out)
        self._index += 1
        self._open = key
        start = {"type": "content_block_start", "index": self._index, "content_block": block}
        out.append(("content_block_start", start))

    def _delta(self, delta: dict[str, Any]) -> Chunk:
        return (
            "content_block_delta",
            {"type": "content_block_delta", "index": self._index, "delta": delta},
        )

    def _close(self, out: list[Chunk]) -> None:
        if self._open is not None:
            out.append(("content_block_stop", {"type": "content_block_stop", "index": self._index}))
            self._open = None
