"""The answers `providers.mock.provider` sends, in OpenAI's exact shapes.

Kept apart from the provider so its fate-rolling (latency, failures, truncation) reads
on its own. Everything here is deterministic and cheap: the binary payloads are built
once at import, answer texts and embedding vectors are cached, and the rest is a few
small dicts per call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from providers.base import Chunk, Endpoint

__all__ = [
    "Answer",
    "Script",
    "answer_text",
    "chat_body",
    "chat_script",
    "completion_body",
    "completion_script",
    "estimate_tokens",
    "forced_tool",
    "json_format",
    "response_body",
    "response_script",
    "split_text",
    "token_cap",
]


# ---------------------------------------------------------------- request reading


def _chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, int):  # a token id
        return 4
    if isinstance(value, list):
        return sum(_chars(item) for item in value)
    if isinstance(value, dict):
        return sum(_chars(value[key]) for key in ("content", "text") if key in value)
    return 0


def estimate_tokens(body: dict[str, Any]) -> int:
    """About four characters a token over every text the request carries."""
    chars = sum(
        _chars(body[key]) for key in ("messages", "prompt", "input", "instructions") if key in body
    )
    return chars // 4 + 1


def token_cap(body: dict[str, Any], endpoint: Endpoint) -> int | None:
    keys = {
        Endpoint.CHAT: ("max_completion_tokens", "max_tokens"),
        Endpoint.COMPLETIONS: ("max_tokens",),
        Endpoint.RESPONSES: ("max_output_tokens",),
    }.get(endpoint, ())
    for key in keys:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def forced_tool(body: dict[str, Any]) -> str | None:
    """The function a chat request forces the model to call, if any."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        return None
    choice = body.get("tool_choice")
    if choice == "required":
        first = tools[0]
        function = first.get("function") if isinstance(first, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        return name if isinstance(name, str) else "tool"
    if isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        return name if isinstance(name, str) else None
    return None


def json_format(body: dict[str, Any], endpoint: Endpoint) -> dict[str, Any] | None:
    """The JSON schema the answer must follow ({} for any JSON object); None for free text."""
    if endpoint is Endpoint.CHAT:
        fmt = body.get("response_format")
    elif endpoint is Endpoint.RESPONSES:
        text = body.get("text")
        fmt = text.get("format") if isinstance(text, dict) else None
    else:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") not in ("json_object", "json_schema"):
        return None
    holder = fmt.get("json_schema", {}) if endpoint is Endpoint.CHAT else fmt
    schema = holder.get("schema") if isinstance(holder, dict) else None
    return schema if isinstance(schema, dict) else {}


# ---------------------------------------------------------------- answer text

_FILLER = (
    "lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "do",
    "eiusmod", "tempor", "incididunt", "ut", "labore", "et", "dolore", "magna", "aliqua",
)  # fmt: skip
_SCALARS: dict[Any, Any] = {"integer": 0, "number": 0.0, "boolean": True, "null": None}


@dataclass(slots=True, frozen=True)
class Answer:
    """What one text call produces; `tool` names the function of a forced tool call."""

    text: str
    finish: str
    prompt: int
    completion: int
    tool: str | None = None
    call_id: str = ""

    def usage(self) -> dict[str, int]:
        total = self.prompt + self.completion
        return {
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": total,
        }


@lru_cache(maxsize=1024)
def _words(model: str, count: int) -> tuple[str, ...]:
    words = ("Mock", "answer", "from", f"{model}:")
    filler = (_FILLER * (count // len(_FILLER) + 1))[: max(0, count - len(words))]
    return (words + filler)[:count]


@lru_cache(maxsize=1024)
def _plain(model: str, total: int, kept: int, cut: bool) -> str:
    text = " ".join(_words(model, total)[:kept])
    return text if cut else text + "."


def _fill(schema: Any, text: str, root: dict[str, Any], depth: int = 0) -> Any:
    """A value that satisfies a (simple) JSON schema: the answer in every string."""
    if not isinstance(schema, dict) or depth > 8:
        return text
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        return _fill(target, text, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            real = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return _fill((real or options)[0], text, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    properties = schema.get("properties")
    if isinstance(properties, dict) and properties:
        return {name: _fill(sub, text, root, depth + 1) for name, sub in properties.items()}
    if kind == "object":
        return {"answer": text}
    if kind == "array":
        return [_fill(schema.get("items"), text, root, depth + 1)]
    return _SCALARS.get(kind, text)


def answer_text(model: str, total: int, kept: int, cut: bool, schema: dict[str, Any] | None) -> str:
    """`kept` of `total` words; JSON when `schema` is given, cut short (so invalid) if `cut`."""
    if schema is None:
        return _plain(model, total, kept, cut)
    sentence = _plain(model, total, total, False)
    full = orjson.dumps(
        _fill(schema, sentence, schema) if schema else {"answer": sentence}
    ).decode()
    if not cut:
        return full
    return full[: max(1, min(len(full) - 1, len(full) * kept // total))]


def split_text(text: str, pieces: int = 6) -> list[str]:
    """At most `pieces` parts of a few words each that concatenate back to `text`."""
    words = text.split(" ")
    size = max(1, math.ceil(len(words) / pieces))
    parts = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    return [part + " " for part in parts[:-1]] + parts[-1:]


# ---------------------------------------------------------------- text endpoints


@dataclass(slots=True)
class Script:
    """A stream's events; `count` content events start at `first`, `settle` ends the answer."""

    events: list[Chunk]
    first: int
    count: int
    settle: int


def chat_body(chat_id: str, created: int, model: str, answer: Answer) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None if answer.tool else answer.text,
        "refusal": None,
        "annotations": [],
    }
    if answer.tool:
        function = {"name": answer.tool, "arguments": "{}"}
        message["tool_calls"] = [{"id": answer.call_id, "type": "function", "function": function}]
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": answer.finish}
    return {
        "id": chat_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": answer.usage(),
    }


def chat_script(
    chat_id: str, created: int, model: str, answer: Answer, include_usage: bool
) -> Script:
    base = {"id": chat_id, "object": "chat.completion.chunk", "created": created, "model": model}
    extra = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> Chunk:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return None, {**base, "choices": [choice], **extra}

    if answer.tool:
        call = {"index": 0, "id": answer.call_id, "type": "function"}
        call["function"] = {"name": answer.tool, "arguments": ""}
        events = [
            chunk({"role": "assistant", "content": None, "tool_calls": [call]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
        ]
    else:
        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": piece}) for piece in split_text(answer.text)]
    settle = len(events)
    events.append(chunk({}, answer.finish))
    if include_usage:
        events.append((None, {**base, "choices": [], "usage": answer.usage()}))
    return Script(events, 1, settle - 1, settle)


def completion_body(cmpl_id: str, created: int, model: str, answer: Answer) -> dict[str, Any]:
    choice = {"text": answer.text, "index": 0, "logprobs": None, "finish_reason": answer.finish}
    return {
        "id": cmpl_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": answer.usage(),
    }


def completion_script(
    cmpl_id: str, created: int, model: str, answer: Answer, include_usage: bool
) -> Script:
    base = {"id": cmpl_id, "object": "text_completion", "created": created, "model": model}
    extra = {"usage": None} if include_usage else {}

    def chunk(text: str, finish: str | None = None) -> Chunk:
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
        return None, {**base, "choices": [choice], **extra}

    events = [chunk(piece) for piece in split_text(answer.text)]
    settle = len(events)
    events.append(chunk("", answer.finish))
    if include_usage:
        events.append((None, {**base, "choices": [], "usage": answer.usage()}))
    return Script(events, 0, settle, settle)


def response_body(
    resp_id: str, msg_id: str, created: int, model: str, answer: Answer, body: dict[str, Any]
) -> dict[str, Any]:
    done = answer.finish == "stop"
    status = "completed" if done else "incomplete"
    part = {"type": "output_text", "text": answer.text, "annotations": [], "logprobs": []}
    message = {
        "type": "message",
        "id": msg_id,
        "status": status,
        "role": "assistant",
        "content": [part],
    }
    text = body.get("text")
    return {
        "id": resp_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "completed_at": created if done else None,
        "error": None,
        "incomplete_details": None if done else {"reason": "max_output_tokens"},
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model,
        "output": [message],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": None,
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": text if isinstance(text, dict) else {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []),
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": {
            "input_tokens": answer.prompt,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": answer.completion,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": answer.prompt + answer.completion,
        },
        "user": None,
        "metadata": body.get("metadata") or {},
    }


def response_script(final: dict[str, Any]) -> Script:
    """The Responses event sequence that builds up `final` (a `response_body`)."""
    message = final["output"][0]
    part = message["content"][0]
    item = {"item_id": message["id"], "output_index": 0, "content_index": 0}
    pending = {**final, "status": "in_progress", "output": [], "usage": None}
    pending.update(completed_at=None, incomplete_details=None)
    events: list[Chunk] = [
        ("response.created", {"response": pending}),
        ("response.in_progress", {"response": pending}),
        (
            "response.output_item.added",
            {"output_index": 0, "item": {**message, "status": "in_progress", "content": []}},
        ),
        ("response.content_part.added", {**item, "part": {**part, "text": ""}}),
    ]
    pieces = split_text(part["text"])
    events += [("response.output_text.delta", {**item, "delta": p, "logprobs": []}) for p in pieces]
    events += [
        ("response.output_text.done", {**item, "text": part["text"], "logprobs": []}),
        ("response.content_part.done", {**item, "part": part}),
        ("response.output_item.done", {"output_index": 0, "item": message}),
    ]
    settle = len(events)
    name = "response.completed" if final["status"] == "completed" else "response.incomplete"
    events.append((name, {"response": final}))
    for number, (event, data) in enumerate(events):
        data["type"] = event
        data["sequence_number"] = number
    return Script(events, 4, len(pieces), settle)
