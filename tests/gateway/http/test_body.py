"""Client bodies: read with a size limit, parsed as a JSON object, known fields type-checked."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import orjson
import pytest
from starlette.requests import Request

from gateway.core.errors import GatewayError, InvalidRequest, MemoryBusy, RequestTooLarge
from gateway.http.body import BodyBudget, check_body, check_message_body, read_json
from gateway.http.errors import status_of
from gateway.http.inbound import Inbound
from providers.base import Endpoint
from providers.errors import NoMemory, ResponseTooLarge
from providers.json_memory import parsed_size

VALID: dict[Endpoint, dict[str, Any]] = {
    Endpoint.CHAT: {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    Endpoint.COMPLETIONS: {"model": "m", "prompt": "Say hi"},
    Endpoint.EMBEDDINGS: {"model": "m", "input": ["a", "b"]},
    Endpoint.IMAGES: {"model": "m", "prompt": "a cat"},
    Endpoint.SPEECH: {"model": "m", "input": "hello", "voice": "alloy"},
    Endpoint.VIDEOS: {"model": "m", "prompt": "a wave"},
    Endpoint.RESPONSES: {"model": "m", "input": "hi"},
}
REQUIRED: dict[Endpoint, tuple[str, ...]] = {
    Endpoint.CHAT: ("model", "messages"),
    Endpoint.COMPLETIONS: ("model", "prompt"),
    Endpoint.EMBEDDINGS: ("model", "input"),
    Endpoint.IMAGES: ("model", "prompt"),
    Endpoint.SPEECH: ("model", "input", "voice"),
    Endpoint.VIDEOS: ("model", "prompt"),
    Endpoint.RESPONSES: ("model", "input"),
}
# A wrong value for each required field, per endpoint.
WRONG: dict[str, Any] = {
    "model": 42,
    "messages": "hi",
    "prompt": {"text": "x"},
    "input": 7,
    "voice": 3,
}
ENDPOINTS = list(VALID)
CASES = [(e, f) for e in ENDPOINTS for f in REQUIRED[e]]


def raises(endpoint: Endpoint, body: dict[str, Any]) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        check_body(endpoint, body)
    assert status_of(info.value)[0] == 400
    return info.value


def test_every_body_endpoint_is_covered() -> None:
    # a GET (no body), and Anthropic's Messages API (check_message_body, below)
    unchecked = {Endpoint.VIDEO_STATUS, Endpoint.MESSAGES, Endpoint.COUNT_TOKENS}
    assert set(Endpoint) - set(VALID) == unchecked


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_valid_bodies_pass_and_unknown_fields_are_untouched(endpoint: Endpoint) -> None:
    body = {**VALID[endpoint], "brand_new_param": {"nested": [1, 2]}, "seed": "anything"}
    before = copy.deepcopy(body)
    check_body(endpoint, body)
    assert body == before


@pytest.mark.parametrize(("endpoint", "field"), CASES)
def test_missing_required_field(endpoint: Endpoint, field: str) -> None:
    body = {k: v for k, v in VALID[endpoint].items() if k != field}
    err = raises(endpoint, body)
    assert err.param == field
    assert err.code == "missing_required_parameter"
    assert f"'{field}'" in err.message


@pytest.mark.parametrize(("endpoint", "field"), CASES)
def test_null_required_field_counts_as_missing(endpoint: Endpoint, field: str) -> None:
    err = raises(endpoint, {**VALID[endpoint], field: None})
    assert err.code == "missing_required_parameter"


@pytest.mark.parametrize(("endpoint", "field"), CASES)
def test_wrong_type_of_required_field_names_the_param(endpoint: Endpoint, field: str) -> None:
    err = raises(endpoint, {**VALID[endpoint], field: WRONG[field]})
    assert err.param == field
    assert err.code == "invalid_type"
    assert f"Invalid type for '{field}'" in err.message


def test_accepted_alternative_types() -> None:
    check_body(Endpoint.COMPLETIONS, {"model": "m", "prompt": ["a", "b"]})
    check_body(Endpoint.EMBEDDINGS, {"model": "m", "input": "one"})
    check_body(Endpoint.RESPONSES, {"model": "m", "input": [{"role": "user", "content": "x"}]})
    check_body(Endpoint.VIDEOS, {"model": "m", "prompt": "x", "seconds": 4})
    check_body(Endpoint.VIDEOS, {"model": "m", "prompt": "x", "seconds": "4"})
    check_body(Endpoint.CHAT, {**VALID[Endpoint.CHAT], "temperature": 1, "top_p": 0.5})


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("max_tokens", "10", "expected an integer, but got a string"),
        ("max_tokens", 1.5, "expected an integer, but got a number"),
        ("n", [1], "expected an integer, but got an array"),
        ("stream", "yes", "expected a boolean, but got a string"),
        ("stream", 1, "expected a boolean, but got a number"),
        ("user", 5, "expected a string, but got a number"),
        ("stream_options", True, "expected an object, but got a boolean"),
        ("tools", {}, "expected an array, but got an object"),
    ],
)
def test_wrong_optional_type_names_the_param(field: str, value: Any, expected: str) -> None:
    err = raises(Endpoint.CHAT, {**VALID[Endpoint.CHAT], field: value})
    assert err.param == field
    assert err.code == "invalid_type"
    assert err.message == f"Invalid type for '{field}': {expected}."


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens", "n", "dimensions"])
def test_bool_is_not_an_integer(field: str) -> None:
    err = raises(Endpoint.CHAT, {**VALID[Endpoint.CHAT], field: True})
    assert err.param == field
    assert "but got a boolean" in err.message


@pytest.mark.parametrize("field", ["temperature", "top_p", "presence_penalty"])
def test_bool_is_not_a_number(field: str) -> None:
    err = raises(Endpoint.CHAT, {**VALID[Endpoint.CHAT], field: False})
    assert err.param == field


def test_number_fields_are_described_as_numbers() -> None:
    err = raises(Endpoint.CHAT, {**VALID[Endpoint.CHAT], "temperature": "hot"})
    assert "expected a number" in err.message


def test_speech_accepts_a_custom_voice_object() -> None:
    check_body(Endpoint.SPEECH, {"model": "m", "input": "x", "voice": {"id": "voice_1234"}})


def test_speech_voice_of_wrong_type_names_both_shapes() -> None:
    err = raises(Endpoint.SPEECH, {"model": "m", "input": "x", "voice": 3})
    assert err.param == "voice"
    assert "expected a string or an object" in err.message


@pytest.mark.parametrize(
    ("endpoint", "good", "bad"),
    [
        (Endpoint.CHAT, {"type": "json_object"}, "json_object"),
        (Endpoint.IMAGES, "b64_json", {"type": "b64_json"}),
        (Endpoint.SPEECH, "wav", {"type": "wav"}),
    ],
)
def test_response_format_has_the_shape_of_its_endpoint(
    endpoint: Endpoint, good: object, bad: object
) -> None:
    check_body(endpoint, {**VALID[endpoint], "response_format": good})
    err = raises(endpoint, {**VALID[endpoint], "response_format": bad})
    assert err.param == "response_format"


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([], "messages"),
        (["hi"], "messages[0]"),
        ([{"role": "user", "content": "a"}, {"content": "b"}], "messages[1].role"),
        ([{"role": 1, "content": "b"}], "messages[0].role"),
        ([{"role": "user", "content": 5}], "messages[0].content"),
    ],
)
def test_chat_messages_are_checked(messages: list[Any], param: str) -> None:
    err = raises(Endpoint.CHAT, {"model": "m", "messages": messages})
    assert err.param == param


def test_chat_message_content_may_be_null_or_parts() -> None:
    messages = [
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "user", "content": [{"type": "text", "text": "x"}]},
    ]
    check_body(Endpoint.CHAT, {"model": "m", "messages": messages})


# -- read_json -------------------------------------------------------------------------


def make_request(
    chunks: Iterable[bytes],
    content_length: int | None = None,
    content_type: str = "application/json",
) -> Request:
    headers = [(b"content-type", content_type.encode())]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    messages = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
    messages.append({"type": "http.request", "body": b"", "more_body": False})
    received: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        message = messages.pop(0)
        received.append(message)
        return message

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": headers,
        "query_string": b"",
    }
    request = Request(scope, receive)
    request.state.received = received
    return request


async def test_read_json_returns_the_object() -> None:
    raw = b'{"model": "m", "messages": [], "extra": {"x": 1}}'
    request = make_request([raw[:10], raw[10:]], content_length=len(raw))
    assert await read_json(request, 1000) == {"model": "m", "messages": [], "extra": {"x": 1}}


async def test_body_exactly_at_the_limit_is_accepted() -> None:
    raw = b'{"a": "' + b"x" * 20 + b'"}'
    assert await read_json(make_request([raw], len(raw)), len(raw)) == {"a": "x" * 20}


async def test_declared_length_over_the_limit_is_413_without_reading() -> None:
    request = make_request([b"{}"], content_length=5000)
    with pytest.raises(GatewayError) as info:
        await read_json(request, 100)
    assert status_of(info.value)[0] == 413
    assert info.value.code == "request_too_large"
    assert "100 bytes" in info.value.message
    assert request.state.received == []


@pytest.mark.parametrize("declared", [None, 10])
async def test_streamed_size_over_the_limit_is_413(declared: int | None) -> None:
    chunks = [b'{"a": "', b"x" * 60, b"x" * 60, b'"}']
    request = make_request(chunks, content_length=declared)
    with pytest.raises(GatewayError) as info:
        await read_json(request, 100)
    assert status_of(info.value)[0] == 413
    assert info.value.code == "request_too_large"


@pytest.mark.parametrize("reader", ["starlette", "inbound"])
@pytest.mark.parametrize("pieces", [0, 1, 2])
async def test_a_body_cut_short_by_a_disconnect_is_not_read_as_whole(
    reader: str, pieces: int
) -> None:
    """The connection ends (or the server's body_timeout ends it) after part of the body:
    what arrived is never taken for the body, even when it parses on its own."""
    parts = [b'{"model": "m", "messages": []}', b" " * 10][:pieces]
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": part, "more_body": True} for part in parts
    ]
    messages.append({"type": "http.disconnect"})

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b""}
    request = Request(scope, receive) if reader == "starlette" else Inbound(scope, receive)
    with pytest.raises(InvalidRequest) as info:
        await read_json(request, 1000)
    assert info.value.code == "incomplete_body"
    assert status_of(info.value)[0] == 400


@pytest.mark.parametrize("raw", [b"{not json", b'{"a": 1', b"\xff\xfe"])
async def test_malformed_json_is_400(raw: bytes) -> None:
    with pytest.raises(GatewayError) as info:
        await read_json(make_request([raw]), 1000)
    assert status_of(info.value)[0] == 400
    assert info.value.code == "invalid_json"
    assert "parse the JSON body" in info.value.message


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"text"', b"42", b"null", b"true"])
async def test_non_object_json_is_400(raw: bytes) -> None:
    with pytest.raises(GatewayError) as info:
        await read_json(make_request([raw]), 1000)
    assert status_of(info.value)[0] == 400
    assert info.value.code == "invalid_json"
    assert "must be a JSON object" in info.value.message


async def test_empty_body_is_400() -> None:
    with pytest.raises(GatewayError) as info:
        await read_json(make_request([]), 1000)
    assert status_of(info.value)[0] == 400
    assert "empty" in info.value.message


async def test_multipart_form_fields_become_a_body() -> None:
    boundary = "XyZ"
    raw = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nm\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="n"\r\n\r\n2\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    request = make_request([raw], len(raw), f"multipart/form-data; boundary={boundary}")
    assert await read_json(request, 10_000) == {"model": "m", "n": 2}


async def test_multipart_without_content_length_is_411() -> None:
    request = make_request([b"--b--\r\n"], None, "multipart/form-data; boundary=b")
    with pytest.raises(GatewayError) as info:
        await read_json(request, 1000)
    assert status_of(info.value)[0] == 411


# -- Anthropic's Messages API ------------------------------------------------------------

MESSAGE = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


def test_a_valid_message_body_passes_with_its_unknown_fields() -> None:
    check_message_body({**MESSAGE, "system": [{"type": "text", "text": "x"}], "thinking": {}})
    check_message_body({"model": "m", "messages": []}, counting=True)


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"model": 3}, "model"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages.0"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages.0.content"),
        ({"stream": "yes"}, "stream"),
        ({"stop_sequences": "END"}, "stop_sequences"),
    ],
)
def test_a_bad_message_body_names_the_field(change: dict[str, Any], param: str) -> None:
    body = {k: v for k, v in {**MESSAGE, **change}.items() if v is not None}
    with pytest.raises(InvalidRequest) as info:
        check_message_body(body)
    assert info.value.param == param


# -- the memory the bodies a worker holds take (BodyBudget) -----------------------------


def test_a_budget_refuses_what_does_not_fit_now_and_what_never_could() -> None:
    budget = BodyBudget(1000)
    first, second = budget.hold(), budget.hold()
    first.take(600)
    with pytest.raises(MemoryBusy) as busy:
        second.take(500)
    assert status_of(busy.value) == (503, "server_error")
    assert busy.value.retry_after == 1.0 and busy.value.code == "gateway_overloaded"
    assert (budget.held, budget.refused, second.size) == (600, 1, 0)
    with pytest.raises(RequestTooLarge) as never:
        second.take(1001)
    assert status_of(never.value)[0] == 413 and "max_body_memory" in never.value.message
    first.release()
    first.release()  # twice gives back nothing more
    assert budget.held == 0
    second.take(1000)
    assert budget.held == 1000


def test_an_answer_takes_from_the_same_budget_and_is_dropped_when_it_does_not_fit() -> None:
    """A whole answer read for a request (providers.transport.TakeMemory) counts with
    the bodies, piece by piece, raw and parsed: refused with NoMemory, the provider's
    error, which dispatch turns into a 503 to retry; given back with the request's."""
    piece = b'{"data": [{"embedding": [0.0123, -0.0456, 0.0789]}, '
    cost = len(piece) + parsed_size(piece)
    budget = BodyBudget(500 + 100 + 2 * cost)
    other, held = budget.hold(), budget.hold()
    other.take(500)
    held.take(100)  # the request's body
    held.take_answer(piece)  # its answer, as it arrives
    held.take_answer(piece)
    assert (budget.held, held.size) == (600 + 2 * cost, 100 + 2 * cost)
    with pytest.raises(NoMemory) as dropped:
        held.take_answer(b"1")
    assert dropped.value.blames_model is False
    assert (dropped.value.status, dropped.value.retry_after) == (503, 1.0)
    assert (budget.held, budget.answers_refused, budget.refused) == (budget.limit, 1, 0)
    held.release()
    assert budget.held == 500
    with pytest.raises(ResponseTooLarge) as never:  # alone more than all bodies may take
        budget.hold().take_answer(b"x" * budget.limit)
    assert never.value.blames_model  # the upstream's answer: the next model is tried
    assert "max_body_memory" in str(never.value)
    assert budget.held == 500


def test_a_streams_open_event_takes_what_it_holds_now_and_gives_back_the_rest() -> None:
    """A stream's event not yet whole (providers.transport.EventMemory) is told as what
    it holds now: growth is taken as an answer's piece is, and a cut gives it back."""
    budget = BodyBudget(10_000)
    other, held = budget.hold(), budget.hold()
    other.take(4_000)
    held.take(1_000)  # the request's body
    held.hold_event(3_000)
    held.hold_event(5_000)
    assert (budget.held, held.size, held.event) == (10_000, 6_000, 5_000)
    with pytest.raises(NoMemory):
        held.hold_event(5_001)
    assert (budget.held, budget.answers_refused) == (10_000, 1)
    held.hold_event(0)  # cut
    assert (budget.held, held.size, held.event) == (5_000, 1_000, 0)
    with pytest.raises(ResponseTooLarge):  # alone more than all bodies may take
        held.hold_event(9_001)
    held.hold_event(2_000)
    held.release()
    assert (budget.held, held.event) == (4_000, 0)
    held.hold_event(0)  # the stream's last word after its request ended: nothing more
    assert budget.held == 4_000


@pytest.mark.parametrize("pieces", [1, 3])
async def test_read_json_takes_the_bytes_and_the_parsed_size_from_the_budget(pieces: int) -> None:
    raw = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    cut = len(raw) // pieces
    parts = [raw[i * cut : (i + 1) * cut if i < pieces - 1 else None] for i in range(pieces)]
    budget = BodyBudget(10_000)
    held = budget.hold()
    assert await read_json(make_request(parts), 1000, held) == orjson.loads(raw)
    assert held.size == budget.held == len(raw) + parsed_size(raw)
    held.release()
    assert budget.held == 0


async def test_a_body_arriving_in_pieces_is_refused_once_the_pieces_fill_the_budget() -> None:
    budget = BodyBudget(1000)
    budget.hold().take(750)  # another request's
    held = budget.hold()
    request = make_request([b'{"a": "' + b"x" * 100, b"x" * 100, b"x" * 100, b'"}'])
    with pytest.raises(MemoryBusy):
        await read_json(request, 1000, held)
    assert request.state.received[-1]["body"] == b"x" * 100  # the third piece: not the end
    assert (budget.held, held.size) == (957, 207)  # what it holds when refused, until released
    held.release()
    assert budget.held == 750
