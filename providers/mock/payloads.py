"""The answers `providers.mock.provider` sends, in OpenAI's exact shapes.

Kept apart from the provider so its fate-rolling (latency, failures, truncation) reads
on its own. Everything here is deterministic and cheap: the binary payloads are built
once at import, answer texts and embedding vectors are cached, and the rest is a few
small dicts per call.
"""

from __future__ import annotations

import math
import re
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
    "choice_count",
    "completion_body",
    "completion_script",
    "json_format",
    "logprobs_asked",
    "response_body",
    "response_script",
    "split_text",
    "token_cap",
    "tool_arguments",
    "tool_call",
]


# ---------------------------------------------------------------- request reading


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


def _named(value: Any) -> dict[str, Any] | None:
    """A function's description: chat's {"function": {...}} or the Responses' flat shape."""
    if not isinstance(value, dict):
        return None
    function = value.get("function", value)
    return (
        function if isinstance(function, dict) and isinstance(function.get("name"), str) else None
    )


def _functions(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = body.get("tools")
    if not isinstance(tools, list):
        return []
    return [
        f
        for tool in tools
        if isinstance(tool, dict)
        and tool.get("type", "function") == "function"
        and (f := _named(tool)) is not None
    ]


def _last_message(body: dict[str, Any]) -> dict[str, Any]:
    """The conversation's last turn: a tool's result reads as role "tool" in both APIs."""
    turns = body.get("messages", body.get("input"))
    if isinstance(turns, str):
        return {"role": "user", "content": turns}
    last = turns[-1] if isinstance(turns, list) and turns else None
    if not isinstance(last, dict):
        return {}
    if last.get("type") == "function_call_output":
        return {"role": "tool"}
    return last


def tool_call(body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The function a chat request has the model call, and its parameters' schema.

    As a real model does: the one `tool_choice` names, any under "required", and under
    "auto" (the default when tools are offered) the tool the last message names, else
    the first one, unless that message is a tool's result: then it answers in words,
    so that an agent's loop ends.
    """
    functions = _functions(body)
    if not functions:
        return None
    choice = body.get("tool_choice", "auto")
    chosen: dict[str, Any] | None = None
    if isinstance(choice, dict):
        named = _named(choice)
        name = named["name"] if named is not None else None
        chosen = next((f for f in functions if f["name"] == name), None)
        if chosen is None:
            return (name, {}) if isinstance(name, str) else None
    elif choice == "required":
        chosen = functions[0]
    elif choice == "auto":
        last = _last_message(body)
        if last.get("role") in ("tool", "function"):
            return None
        said = str(last.get("content") or "").lower()
        chosen = next(
            (f for f in functions if f["name"].lower().replace("_", " ") in said),
            next((f for f in functions if f["name"].lower() in said), functions[0]),
        )
    if chosen is None:
        return None
    schema = chosen.get("parameters")
    return chosen["name"], schema if isinstance(schema, dict) else {}


def choice_count(body: dict[str, Any]) -> int:
    """OpenAI's `n`: how many choices to answer with (1 to 128)."""
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 128:
        return n
    return 1


def logprobs_asked(body: dict[str, Any], endpoint: Endpoint) -> int | None:
    """How many alternatives per token the request wants log probabilities for; None when
    it wants none (chat: `logprobs: true` and `top_logprobs`; completions: `logprobs: k`)."""
    if endpoint is Endpoint.CHAT:
        if body.get("logprobs") is not True:
            return None
        top = body.get("top_logprobs")
    elif endpoint is Endpoint.COMPLETIONS:
        top = body.get("logprobs")
        if top is None or top is False:
            return None
    else:
        return None
    if isinstance(top, int) and not isinstance(top, bool):
        return max(0, min(20, top))
    return 0


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
    """What one text call produces: `choices` alike (`completion` counts all of them); a
    tool call names its function in `tool` and carries `text` as its JSON arguments;
    `top_logprobs` is None unless log probabilities were asked for."""

    text: str
    finish: str
    prompt: int
    completion: int
    tool: str | None = None
    call_id: str = ""
    choices: int = 1
    top_logprobs: int | None = None

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


_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00Z",
    "email": "mock@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def _string(schema: dict[str, Any], text: str) -> str:
    value = _FORMATS.get(str(schema.get("format")), text)
    low, high = schema.get("minLength"), schema.get("maxLength")
    if isinstance(low, int) and len(value) < low:
        value = value + "x" * (low - len(value))
    if isinstance(high, int) and len(value) > high:
        value = value[: max(high, 0)]
    return value


def _number(schema: dict[str, Any], kind: str) -> int | float:
    """The bound the schema sets (nudged inside an exclusive one), else 0."""
    value: float = 0
    for key, step in (("minimum", 0), ("exclusiveMinimum", 1)):
        bound = schema.get(key)
        if isinstance(bound, int | float) and not isinstance(bound, bool) and value < bound + step:
            value = bound + (step if kind == "integer" else step / 2)
    for key, step in (("maximum", 0), ("exclusiveMaximum", 1)):
        bound = schema.get(key)
        if isinstance(bound, int | float) and not isinstance(bound, bool) and value > bound - step:
            value = bound - (step if kind == "integer" else step / 2)
    return int(value) if kind == "integer" else float(value)


def _fill(schema: Any, text: str, root: dict[str, Any], depth: int = 0) -> Any:
    """A value that satisfies a JSON schema as client libraries write them (pydantic's
    included: `$defs`, `anyOf` for optionals, bounds, formats): `text` in every string."""
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
    if "default" in schema and schema["default"] is not None:
        return schema["default"]
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
        return {"answer": text} if schema.get("additionalProperties") is not False else {}
    if kind == "array":
        least = schema.get("minItems")
        count = max(1, least if isinstance(least, int) else 1)
        return [_fill(schema.get("items"), text, root, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        return _number(schema, kind)
    if kind == "string" or kind is None:
        return _string(schema, text)
    return _SCALARS.get(kind, text)


def tool_arguments(schema: dict[str, Any]) -> str:
    """A tool call's arguments: a JSON object that validates against the tool's schema."""
    if not isinstance(schema.get("properties"), dict):
        return "{}"  # no parameters described: an empty object is what they allow
    value = _fill(schema, "example", schema)
    return orjson.dumps(value if isinstance(value, dict) else {}).decode()


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


_TOKEN = re.compile(r"\s*\S+|\s+")


def _tokens(text: str) -> list[str]:
    """The "tokens" log probabilities are given for: words, each with the space before it."""
    return _TOKEN.findall(text)


def _logprob(index: int) -> float:
    return -0.01 * (1 + index % 7)


def _chat_logprobs(text: str, top: int, offset: int = 0) -> dict[str, Any]:
    content = []
    for number, token in enumerate(_tokens(text), offset):
        logprob = _logprob(number)
        alternatives = [{"token": token, "logprob": logprob, "bytes": list(token.encode())}]
        alternatives += [
            {"token": f" alt{k}", "logprob": logprob - k, "bytes": list(f" alt{k}".encode())}
            for k in range(1, top)
        ]
        content.append({**alternatives[0], "top_logprobs": alternatives[:top]})
    return {"content": content, "refusal": None}


def _completion_logprobs(text: str, top: int, start: int = 0) -> dict[str, Any]:
    tokens = _tokens(text)
    offsets, at = [], start
    for token in tokens:
        offsets.append(at)
        at += len(token)
    values = [_logprob(start + i) for i in range(len(tokens))]
    return {
        "tokens": tokens,
        "token_logprobs": values,
        "top_logprobs": [
            {token: value, **{f" alt{k}": value - k for k in range(1, top)}}
            for token, value in zip(tokens, values, strict=True)
        ],
        "text_offset": offsets,
    }


def _call_id(answer: Answer, index: int) -> str:
    return answer.call_id if index == 0 else f"{answer.call_id}_{index}"


def chat_body(chat_id: str, created: int, model: str, answer: Answer) -> dict[str, Any]:
    choices = []
    for index in range(answer.choices):
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None if answer.tool else answer.text,
            "refusal": None,
            "annotations": [],
        }
        if answer.tool:
            function = {"name": answer.tool, "arguments": answer.text}
            call = {"id": _call_id(answer, index), "type": "function", "function": function}
            message["tool_calls"] = [call]
        logprobs = None
        if answer.top_logprobs is not None and not answer.tool:
            logprobs = _chat_logprobs(answer.text, answer.top_logprobs)
        choices.append(
            {
                "index": index,
                "message": message,
                "logprobs": logprobs,
                "finish_reason": answer.finish,
            }
        )
    return {
        "id": chat_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": answer.usage(),
    }


def chat_script(
    chat_id: str, created: int, model: str, answer: Answer, include_usage: bool
) -> Script:
    """Each choice's events in turn (role, then content or a tool call's arguments), then
    every choice's finish, then the usage when asked for."""
    base = {"id": chat_id, "object": "chat.completion.chunk", "created": created, "model": model}
    extra = {"usage": None} if include_usage else {}

    def chunk(
        index: int,
        delta: dict[str, Any],
        finish: str | None = None,
        logprobs: dict[str, Any] | None = None,
    ) -> Chunk:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return None, {**base, "choices": [choice], **extra}

    events: list[Chunk] = []
    for index in range(answer.choices):
        if answer.tool:
            call = {"index": 0, "id": _call_id(answer, index), "type": "function"}
            call["function"] = {"name": answer.tool, "arguments": ""}
            events.append(
                chunk(index, {"role": "assistant", "content": None, "tool_calls": [call]})
            )
            events += [
                chunk(index, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                for piece in split_text(answer.text, 3)
            ]
            continue
        events.append(chunk(index, {"role": "assistant", "content": ""}))
        done = 0
        for piece in split_text(answer.text):
            logprobs = None
            if answer.top_logprobs is not None:
                logprobs = _chat_logprobs(piece, answer.top_logprobs, done)
                done += len(logprobs["content"])
            events.append(chunk(index, {"content": piece}, logprobs=logprobs))
    settle = len(events)
    events += [chunk(index, {}, answer.finish) for index in range(answer.choices)]
    if include_usage:
        events.append((None, {**base, "choices": [], "usage": answer.usage()}))
    return Script(events, 1, settle - 1, settle + answer.choices - 1)


def completion_body(cmpl_id: str, created: int, model: str, answer: Answer) -> dict[str, Any]:
    logprobs = None
    if answer.top_logprobs is not None:
        logprobs = _completion_logprobs(answer.text, answer.top_logprobs)
    choices = [
        {"text": answer.text, "index": index, "logprobs": logprobs, "finish_reason": answer.finish}
        for index in range(answer.choices)
    ]
    return {
        "id": cmpl_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": answer.usage(),
    }


def completion_script(
    cmpl_id: str, created: int, model: str, answer: Answer, include_usage: bool
) -> Script:
    base = {"id": cmpl_id, "object": "text_completion", "created": created, "model": model}
    extra = {"usage": None} if include_usage else {}

    def chunk(index: int, text: str, finish: str | None = None, at: int = 0) -> Chunk:
        logprobs = None
        if answer.top_logprobs is not None:
            logprobs = _completion_logprobs(text, answer.top_logprobs, at)
        choice = {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish}
        return None, {**base, "choices": [choice], **extra}

    events: list[Chunk] = []
    for index in range(answer.choices):
        at = 0
        for piece in split_text(answer.text):
            events.append(chunk(index, piece, at=at))
            at += len(piece)
    settle = len(events)
    events += [chunk(index, "", answer.finish) for index in range(answer.choices)]
    if include_usage:
        events.append((None, {**base, "choices": [], "usage": answer.usage()}))
    return Script(events, 0, settle, settle + answer.choices - 1)


def response_body(
    resp_id: str, msg_id: str, created: int, model: str, answer: Answer, body: dict[str, Any]
) -> dict[str, Any]:
    done = answer.finish != "length"
    status = "completed" if done else "incomplete"
    part = {"type": "output_text", "text": answer.text, "annotations": [], "logprobs": []}
    message: dict[str, Any] = {
        "type": "message",
        "id": msg_id,
        "status": status,
        "role": "assistant",
        "content": [part],
    }
    if answer.tool:
        message = {
            "type": "function_call",
            "id": msg_id.replace("msg_", "fc_", 1),
            "call_id": answer.call_id,
            "name": answer.tool,
            "arguments": answer.text,
            "status": "completed",
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


def _function_call_script(final: dict[str, Any], pending: dict[str, Any]) -> Script:
    call = final["output"][0]
    item = {"item_id": call["id"], "output_index": 0}
    pieces = split_text(call["arguments"], 3)
    events: list[Chunk] = [
        ("response.created", {"response": pending}),
        ("response.in_progress", {"response": pending}),
        (
            "response.output_item.added",
            {"output_index": 0, "item": {**call, "arguments": "", "status": "in_progress"}},
        ),
    ]
    events += [("response.function_call_arguments.delta", {**item, "delta": p}) for p in pieces]
    events += [
        (
            "response.function_call_arguments.done",
            {**item, "name": call["name"], "arguments": call["arguments"]},
        ),
        ("response.output_item.done", {"output_index": 0, "item": call}),
    ]
    settle = len(events)
    events.append(("response.completed", {"response": final}))
    for number, (event, data) in enumerate(events):
        data["type"] = event
        data["sequence_number"] = number
    return Script(events, 3, len(pieces), settle)


def response_script(final: dict[str, Any]) -> Script:
    """The Responses event sequence that builds up `final` (a `response_body`)."""
    if final["output"][0]["type"] == "function_call":
        pending = {**final, "status": "in_progress", "output": [], "usage": None}
        pending.update(completed_at=None, incomplete_details=None)
        return _function_call_script(final, pending)
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
