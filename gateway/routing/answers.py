"""What an answer said, pulled out of OpenAI-shaped bodies and streams for evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from providers.anthropic_stream import finish_reason
from providers.base import Endpoint, listed

__all__ = ["Answer", "StreamAnswer", "answer_from_body"]

_MAX_TEXT = 64 * 1024  # enough to judge JSON validity; bounded per response


@dataclass(slots=True)
class Answer:
    text: str = ""
    finish_reason: str | None = None
    refusal: str | None = None
    tool_arguments: list[str] = field(default_factory=list)


def answer_from_body(endpoint: Endpoint, body: dict[str, Any]) -> Answer | None:
    if endpoint is Endpoint.CHAT:
        choice = _first_choice(body)
        if choice is None:
            return None
        message = _dict(choice.get("message"))
        content = message.get("content")
        calls = listed(message.get("tool_calls"))
        return Answer(
            content if isinstance(content, str) else "",
            choice.get("finish_reason"),
            message.get("refusal") if isinstance(message.get("refusal"), str) else None,
            [_arguments(c) for c in calls if isinstance(c, dict)],
        )
    if endpoint is Endpoint.COMPLETIONS:
        choice = _first_choice(body)
        if choice is None:
            return None
        text = choice.get("text")
        return Answer(text if isinstance(text, str) else "", choice.get("finish_reason"))
    if endpoint is Endpoint.RESPONSES:
        return _responses_answer(body)
    if endpoint is Endpoint.MESSAGES:
        return _message_answer(body)
    return None


def _message_answer(body: dict[str, Any]) -> Answer:
    """An Anthropic Message; its stop reason as a chat finish_reason."""
    texts: list[str] = []
    arguments: list[str] = []
    for block in listed(body.get("content")):
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block.get("type") == "tool_use":
            arguments.append(orjson.dumps(block.get("input")).decode())
    return Answer("".join(texts), finish_reason(body.get("stop_reason")), None, arguments)


def _dict(value: Any) -> dict[str, Any]:
    """`value` where an upstream's body should hold an object, or an empty one (`listed`'s
    twin for objects): judging an odd body never fails."""
    return value if isinstance(value, dict) else {}


def _first_choice(body: dict[str, Any]) -> dict[str, Any] | None:
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return None


def _arguments(call: dict[str, Any]) -> str:
    function = call.get("function")
    args = function.get("arguments") if isinstance(function, dict) else None
    return args if isinstance(args, str) else ""


def _responses_answer(body: dict[str, Any]) -> Answer:
    parts: list[str] = []
    refusals: list[str] = []
    arguments: list[str] = []
    for item in listed(body.get("output")):
        if not isinstance(item, dict):
            continue
        if item.get("type") == "function_call" and isinstance(item.get("arguments"), str):
            arguments.append(item["arguments"])
        for content in listed(item.get("content")):
            if not isinstance(content, dict):
                continue
            if isinstance(content.get("text"), str):
                parts.append(content["text"])
            elif content.get("type") == "refusal" and isinstance(content.get("refusal"), str):
                refusals.append(content["refusal"])
    return Answer("".join(parts), _responses_finish(body), "".join(refusals) or None, arguments)


def _responses_finish(body: dict[str, Any]) -> str | None:
    """The Responses API status as a chat finish_reason."""
    status = body.get("status")
    if status == "completed":
        return "stop"
    if status == "incomplete":
        details = body.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        return "content_filter" if reason == "content_filter" else "length"
    return None


class StreamAnswer:
    """Accumulates a streamed answer chunk by chunk, bounded in size."""

    __slots__ = ("_args", "_parts", "_size", "finish_reason", "length", "refusal")

    def __init__(self) -> None:
        # Text as it came: parsed (str) or still JSON-escaped (bytes, from chunks the
        # gateway forwarded unparsed), decoded only if the answer is judged.
        self._parts: list[str | bytes] = []
        self._args: dict[int, list[str]] = {}
        self._size = 0
        # How much it said in all, kept past the bound (characters, or escaped bytes):
        # what it is charged when the upstream never counts it (providers.estimate_usage).
        self.length = 0
        self.finish_reason: str | None = None
        self.refusal: str | None = None

    def add(self, event: str | None, data: dict[str, Any]) -> None:
        if event is not None:
            if event == "response.output_text.delta":
                self._text(data.get("delta"))
            elif event == "response.refusal.delta" and isinstance(data.get("delta"), str):
                self.refusal = (self.refusal or "") + data["delta"]
            elif event == "response.function_call_arguments.done":
                self._args.setdefault(len(self._args), []).append(str(data.get("arguments", "")))
            elif event in ("response.completed", "response.incomplete"):
                response = data.get("response")
                self.finish_reason = _responses_finish(
                    response if isinstance(response, dict) else {"status": event[9:]}
                )
            elif event == "content_block_delta":  # Anthropic's Messages stream
                self._message_delta(data)
            elif event == "message_delta":
                delta = data.get("delta")
                stop = delta.get("stop_reason") if isinstance(delta, dict) else None
                self.finish_reason = finish_reason(stop)
            return
        choice = _first_choice(data)
        if choice is None:
            return
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        delta = choice.get("delta")
        if isinstance(delta, dict):
            self._text(delta.get("content"))
            if isinstance(delta.get("refusal"), str):
                self.refusal = (self.refusal or "") + delta["refusal"]
            for call in listed(delta.get("tool_calls")):
                if isinstance(call, dict):
                    index = call.get("index", 0)
                    index = index if isinstance(index, int) else 0
                    self._args.setdefault(index, []).append(_arguments(call))
        else:
            self._text(choice.get("text"))

    def _message_delta(self, data: dict[str, Any]) -> None:
        delta = data.get("delta")
        if not isinstance(delta, dict):
            return
        if delta.get("type") == "text_delta":
            self._text(delta.get("text"))
        elif delta.get("type") == "input_json_delta" and isinstance(delta.get("partial_json"), str):
            index = data.get("index", 0)
            self._args.setdefault(index if isinstance(index, int) else 0, []).append(
                delta["partial_json"]
            )

    def add_escaped(self, text: bytes) -> None:
        """Content text still JSON-escaped (a `RawChunk`'s)."""
        self.length += len(text)
        if text and self._size < _MAX_TEXT:
            self._parts.append(text)
            self._size += len(text)

    def spoken(self) -> int:
        """Everything it said, in characters (or escaped bytes): text, tool calls'
        arguments and a refusal."""
        calls = sum(len(part) for parts in self._args.values() for part in parts)
        return self.length + calls + len(self.refusal or "")

    def _text(self, piece: Any) -> None:
        if not isinstance(piece, str):
            return
        self.length += len(piece)
        if self._size < _MAX_TEXT:
            self._parts.append(piece)
            self._size += len(piece)

    def result(self) -> Answer:
        args = ["".join(parts) for _, parts in sorted(self._args.items())]
        return Answer(_joined(self._parts), self.finish_reason, self.refusal, args)


def _joined(parts: list[str | bytes]) -> str:
    """The parts' text, each run of escaped ones decoded in one go."""
    out: list[str] = []
    escaped: list[bytes] = []
    for part in parts:
        if isinstance(part, bytes):
            escaped.append(part)
            continue
        if escaped:
            out.append(orjson.loads(b'"' + b"".join(escaped) + b'"'))
            escaped.clear()
        out.append(part)
    if escaped:
        out.append(orjson.loads(b'"' + b"".join(escaped) + b'"'))
    return "".join(out)
