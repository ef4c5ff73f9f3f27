"""Reading and checking client request bodies, cheaply, before any upstream is called.

Only the fields the gateway itself relies on are checked; everything else passes
through untouched so that new OpenAI parameters keep working.

The bodies a worker holds are bounded all together (`BodyBudget`), not only one by
one: a body is held for its request's whole life (a stream's: minutes), and parsed
JSON can take many times its bytes (a 10 MiB array of `{}` is 250 MB of dicts), so a
client with a key and `max_body_bytes` alone could have a worker hold gigabytes with a
few dozen requests. The whole answers read for them count too (`Held.take_answer`), piece
by piece as they arrive: a client shapes those as well (`n`, images, embeddings); and a
stream's event while it is read, once it is large (`Held.hold_event`: streamed images).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from gateway.core.errors import InvalidRequest, LengthRequired, MemoryBusy, RequestTooLarge
from gateway.core.logs import SummaryLog
from gateway.http.inbound import Inbound
from providers.base import Endpoint
from providers.errors import NoMemory, ResponseTooLarge
from providers.json_memory import parsed_size

__all__ = ["BodyBudget", "Held", "check_body", "check_message_body", "read_json"]


class BodyBudget:
    """The bodies one worker holds, all its requests together, in bytes of memory
    (`providers.json_memory.parsed_size`, an upper estimate): `server.max_body_memory`.
    A request takes its share as its body arrives and before it is parsed, and gives it
    back when its answer ends; one that does not fit now is refused (503, retry), one
    that could never fit is too large (413). A whole answer takes its share, raw and
    parsed, piece by piece as it arrives; one that does not fit is dropped (503, retry).
    A stream's pieces pass on as they come, but a large event is held until it is whole:
    it takes its share as it grows, and gives it back once cut."""

    __slots__ = ("answers_refused", "held", "limit", "log", "refused")

    def __init__(self, limit: int, log: SummaryLog | None = None) -> None:
        self.limit = limit
        self.held = 0
        self.refused = 0  # requests refused for want of room, since start (for /metrics)
        self.answers_refused = 0  # answers dropped for want of room, since start
        self.log = log  # refusals, once per episode with counts (as the inbound limits)

    def hold(self) -> Held:
        """A request's share, empty until its body is read; `release()` it at the end."""
        return Held(self)

    def full(self, cause: str, what: str, then: str) -> None:
        """Log that `what` held reached the limit, and `then` what happened (`cause`:
        the log's, once per episode with counts)."""
        if self.log is not None:
            self.log.record(
                cause,
                f"{what} held reached max_body_memory ({self.limit:,} bytes); {then}",
                held=self.held,
            )


class Held:
    """One request's share of a BodyBudget."""

    __slots__ = ("_budget", "event", "size")

    def __init__(self, budget: BodyBudget) -> None:
        self._budget = budget
        self.size = 0  # all it holds: its body, its answer, and `event`
        self.event = 0  # what its stream's event not yet whole holds

    def take(self, size: int) -> None:
        """`size` bytes more for this request, or MemoryBusy / RequestTooLarge."""
        budget = self._budget
        if self.size + size > budget.limit:
            raise RequestTooLarge(
                "The request body would take more memory once parsed than this gateway "
                f"holds for all requests together ({budget.limit:,} bytes, "
                "server.max_body_memory)."
            )
        if budget.held + size > budget.limit:
            budget.refused += 1
            budget.full("body_memory", "request bodies", "new requests are told to retry")
            raise MemoryBusy(
                "The gateway holds as many request bodies as it may right now; retry shortly."
            )
        budget.held += size
        self.size += size

    def take_answer(self, piece: bytes) -> None:
        """What a piece of this request's answer takes, raw and parsed (estimated), as it
        arrives (`providers.transport.TakeMemory`); or NoMemory: the answer is dropped. An
        answer that could never fit is the upstream's ResponseTooLarge."""
        self._answer(len(piece) + parsed_size(piece))

    def hold_event(self, size: int) -> None:
        """What this request's stream holds now of an event not yet whole, raw and parsed
        (`providers.transport.EventMemory`): more than before is taken as a piece of an
        answer is, less is given back."""
        more = size - self.event
        if more > 0:
            self._answer(more)
        else:
            self._budget.held += more
            self.size += more
        self.event = size

    def _answer(self, size: int) -> None:
        budget = self._budget
        if self.size + size > budget.limit:
            # Could never fit: the upstream's answer is too large, as one past
            # max_response_bytes is (the next model is tried).
            raise ResponseTooLarge(
                "upstream answer would take more memory once parsed than this gateway holds "
                f"for all bodies together ({budget.limit:,} bytes, server.max_body_memory)"
            )
        if budget.held + size > budget.limit:
            budget.answers_refused += 1
            then = "an answer was dropped and its client told to retry"
            budget.full("answer_memory", "bodies", then)
            raise NoMemory(
                "The gateway holds as many bodies as it may right now, and could not hold "
                "this answer; retry shortly.",
                status=503,
                retry_after=1.0,
            )
        budget.held += size
        self.size += size

    def release(self) -> None:
        self._budget.held -= self.size
        self.size = self.event = 0


async def read_bytes(request: Request | Inbound, limit: int, held: Held | None = None) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    if isinstance(request, Inbound):
        # the hot path: no async generator
        return await _receive_all(request.receive, limit, held)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            if held is not None:
                held.take(len(chunk))
            chunks.append(chunk)
    except ClientDisconnect:
        raise _incomplete() from None
    return b"".join(chunks)


def _incomplete() -> InvalidRequest:
    """The connection ended, or was ended (`server.body_timeout`), before the body was
    whole: the request is not served on what arrived of it."""
    return InvalidRequest("The request body ended before it was complete.", code="incomplete_body")


async def _receive_all(receive: Receive, limit: int, held: Held | None) -> bytes:
    message = await receive()
    if message["type"] == "http.disconnect":
        raise _incomplete()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):  # almost every request: one message
        if len(body) > limit:
            raise _too_large(limit)
        return body
    if held is not None:  # what arrives is held while the rest comes: counted as it does
        held.take(len(body))
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _incomplete()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        if held is not None:
            held.take(len(chunk))
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(
    request: Request | Inbound, limit: int, held: Held | None = None
) -> dict[str, Any]:
    """The body as a JSON object, at most `limit` bytes; with `held`, its memory (raw
    and parsed) is taken from the worker's BodyBudget first."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        return await _read_form(request, limit, held)
    raw = await read_bytes(request, limit, held)
    if not raw:
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    if held is not None:  # what parsing will take, before it takes it
        held.take(parsed_size(raw) + len(raw) - held.size)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request: {exc}", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    return body


async def _read_form(request: Request | Inbound, limit: int, held: Held | None) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit():
        raise LengthRequired("Multipart requests need a Content-Length header.")
    if int(declared) > limit:
        raise _too_large(limit)
    if held is not None:  # its fields as strings, four bytes a character at most
        held.take(4 * int(declared))
    try:
        form = await request.form(max_part_size=limit)
    except Exception:
        raise InvalidRequest("We could not parse the multipart body of your request.") from None
    body: dict[str, Any] = {}
    for key, value in form.multi_items():
        if not isinstance(value, str):
            raise InvalidRequest(
                f"File uploads ('{key}') are not supported by this gateway.", param=key
            )
        body[key] = int(value) if key == "n" and value.isdigit() else value
    return body


def _too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(
        f"The request body is larger than this gateway's limit of {limit} bytes."
    )


_STRING = (str,)
_NUMBER = (int, float)
_BOOL = (bool,)
_INT = (int,)
_OPTIONAL = {
    "stream": _BOOL,
    "temperature": _NUMBER,
    "top_p": _NUMBER,
    "max_tokens": _INT,
    "max_completion_tokens": _INT,
    "n": _INT,
    "user": _STRING,
    "presence_penalty": _NUMBER,
    "frequency_penalty": _NUMBER,
    "stream_options": (dict,),
    "tools": (list,),
    "response_format": (dict,),
    "dimensions": _INT,
    "encoding_format": _STRING,
    "voice": (str, dict),
    "size": _STRING,
    "seconds": _STRING + _INT,
}
# Where one name means another thing: `response_format` is an object for chat
# (json_object, json_schema) and a format name for images (url, b64_json) and speech
# (mp3, opus, aac, flac, wav, pcm).
_OPTIONAL_BY_ENDPOINT: dict[Endpoint, dict[str, tuple[type, ...]]] = {
    endpoint: {**_OPTIONAL, "response_format": _STRING}
    for endpoint in (Endpoint.IMAGES, Endpoint.SPEECH)
}
_REQUIRED: dict[Endpoint, dict[str, tuple[type, ...]]] = {
    Endpoint.CHAT: {"model": _STRING, "messages": (list,)},
    Endpoint.COMPLETIONS: {"model": _STRING, "prompt": (str, list)},
    Endpoint.EMBEDDINGS: {"model": _STRING, "input": (str, list)},
    Endpoint.IMAGES: {"model": _STRING, "prompt": _STRING},
    Endpoint.SPEECH: {"model": _STRING, "input": _STRING, "voice": (*_STRING, dict)},
    Endpoint.VIDEOS: {"model": _STRING, "prompt": _STRING},
    Endpoint.RESPONSES: {"model": _STRING, "input": (str, list)},
}
_NAMES = {
    str: "a string",
    list: "an array",
    dict: "an object",
    bool: "a boolean",
    int: "an integer",
}


def check_body(endpoint: Endpoint, body: dict[str, Any]) -> None:
    """Reject a body whose known fields have the wrong type, naming the field."""
    for name, types in _REQUIRED[endpoint].items():
        value = body.get(name)
        if value is None:
            raise InvalidRequest(
                f"Missing required parameter: '{name}'.",
                param=name,
                code="missing_required_parameter",
            )
        _expect(name, value, types)
    optional = _OPTIONAL_BY_ENDPOINT.get(endpoint, _OPTIONAL)
    for name, value in body.items():  # bodies carry a handful of keys: walk those
        expected = optional.get(name)
        if expected is not None and value is not None:
            _expect(name, value, expected)
    if endpoint is Endpoint.CHAT:
        _check_messages(body["messages"])


# Anthropic's Messages API (`check_message_body`): the same rule, its own fields.
_MESSAGE_REQUIRED: dict[str, tuple[type, ...]] = {
    "model": _STRING,
    "messages": (list,),
    "max_tokens": _INT,
}
_MESSAGE_OPTIONAL: dict[str, tuple[type, ...]] = {
    "stream": _BOOL,
    "system": (str, list),
    "temperature": _NUMBER,
    "top_p": _NUMBER,
    "top_k": _INT,
    "stop_sequences": (list,),
    "tools": (list,),
    "tool_choice": (dict,),
    "metadata": (dict,),
}
_COUNT_REQUIRED = {"model": _STRING, "messages": (list,)}


def check_message_body(body: dict[str, Any], *, counting: bool = False) -> None:
    """A Messages (or count_tokens) body: its known fields, and its messages' roles."""
    for name, types in (_COUNT_REQUIRED if counting else _MESSAGE_REQUIRED).items():
        value = body.get(name)
        if value is None:
            raise InvalidRequest(f"{name}: Field required", param=name)
        _expect(name, value, types)
    for name, value in body.items():
        expected = _MESSAGE_OPTIONAL.get(name)
        if expected is not None and value is not None:
            _expect(name, value, expected)
    messages = body["messages"]
    if not messages and not counting:
        raise InvalidRequest("messages: at least one message is required", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise InvalidRequest(
                f"messages.{i}: expected an object with role 'user' or 'assistant'",
                param=f"messages.{i}",
            )
        if not isinstance(message.get("content"), str | list):
            raise InvalidRequest(
                f"messages.{i}.content: expected a string or a list of content blocks",
                param=f"messages.{i}.content",
            )


def _expect(name: str, value: Any, types: tuple[type, ...]) -> None:
    # bool is an int in Python, but not in JSON
    if isinstance(value, bool) and bool not in types:
        ok = False
    else:
        ok = isinstance(value, types) or (float in types and isinstance(value, int))
    if not ok:
        wanted = (
            "a number"
            if float in types and len(types) == 2
            else " or ".join(_NAMES.get(t, "a number") for t in types)
        )
        raise InvalidRequest(
            f"Invalid type for '{name}': expected {wanted}, but got {_json_kind(value)}.",
            param=name,
            code="invalid_type",
        )


def _check_messages(messages: list[Any]) -> None:
    if not messages:
        raise InvalidRequest("'messages' must contain at least one message.", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequest(
                f"Invalid type for 'messages[{i}]': expected an object.",
                param=f"messages[{i}]",
                code="invalid_type",
            )
        role = message.get("role")
        if not isinstance(role, str):
            raise InvalidRequest(
                f"Missing or invalid 'messages[{i}].role': expected a string.",
                param=f"messages[{i}].role",
                code="invalid_type",
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise InvalidRequest(
                f"Invalid type for 'messages[{i}].content': expected a string or an array, "
                f"but got {_json_kind(content)}.",
                param=f"messages[{i}].content",
                code="invalid_type",
            )


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return _NAMES.get(type(value), "null" if value is None else "something else")
