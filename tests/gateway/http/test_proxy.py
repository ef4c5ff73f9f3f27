"""The proxy routes as ASGI: what reaches the client, and when the bookkeeping runs."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest

from gateway.core.config import parse_config
from gateway.http.proxy import FastEndpoint, stream_failure
from gateway.server.app import Gateway, create_app
from providers.errors import ProviderError, UpstreamServerError

AUTH = (b"authorization", b"Bearer test-key")


def config(latency_ms: float) -> dict[str, Any]:
    mock = {"latency_ms": latency_ms, "completion_tokens": 5}
    return {
        "server": {"api_keys": ["test-key"]},
        "providers": [{"name": "sim", "type": "mock"}],
        "models": [{"name": "m1", "provider": "sim", "mock": mock}],
        "storage": {"url": "memory://"},
    }


@pytest.fixture
async def app() -> AsyncIterator[Any]:
    app = create_app(parse_config(config(0)))
    gw: Gateway = app.state.gateway
    await gw.start()
    yield app
    await gw.stop()


async def post(
    app: Any, body: dict[str, Any], on_send: Callable[[dict[str, Any]], None]
) -> list[bytes]:
    """Drive the ASGI app directly and return every body message it sent."""
    payload = orjson.dumps(body)
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [AUTH, (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": payload, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        on_send(message)
        sent.append(message)

    await app(scope, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    return [m["body"] for m in sent[1:] if m["type"] == "http.response.body" and m["body"]]


async def test_chunks_that_arrive_together_leave_in_one_write_with_the_end_marker(app) -> None:
    body = {"model": "m1", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    writes = await post(app, body, on_send=lambda m: None)
    assert len(writes) == 1  # the mock without latency hands out its whole script at once
    events = writes[0].split(b"\n\n")
    assert events[-2:] == [b"data: [DONE]", b""]
    chunks = [orjson.loads(e.removeprefix(b"data: ")) for e in events[:-2]]
    assert len(chunks) >= 3  # role, content..., finish: several chunks in that one write
    assert {c["model"] for c in chunks} == {"m1"}
    assert len({c["id"] for c in chunks}) == 1


async def test_the_attempt_is_recorded_once_the_answer_is_sent(app) -> None:
    gw: Gateway = app.state.gateway
    seen_at_send: list[int] = []

    def on_send(message: dict[str, Any]) -> None:
        stats = gw.tracker.stats("m1", "text-to-text")
        seen_at_send.append(stats.requests if stats else 0)

    body = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}
    [answer] = await post(app, body, on_send)
    assert seen_at_send == [0, 0]  # headers and body went out before any bookkeeping
    stats = gw.tracker.stats("m1", "text-to-text")
    assert stats is not None and stats.successes == 1
    assert gw.index.get(orjson.loads(answer)["id"]) is not None  # feedback can find it


@pytest.mark.parametrize(
    ("path", "shape"),
    [("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic")],
)
async def test_an_unforeseen_failure_is_a_500_in_the_shape_of_the_api_asked(
    path: str, shape: str
) -> None:
    """An Anthropic client's 500 came in OpenAI's shape, which its SDK reads as no error
    type at all."""

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("a bug")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "POST", "path": path, "headers": [], "state": {}}
    await FastEndpoint(broken)(scope, receive, send)
    assert sent[0]["status"] == 500
    body = orjson.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    if shape == "anthropic":
        assert body == {
            "type": "error",
            "error": {"type": "api_error", "message": "The gateway hit an internal error."},
        }
    else:
        assert body["error"]["code"] == "internal_error"
        assert body["error"]["type"] == "server_error"


def test_a_streams_failure_is_kept_without_the_frames_it_passed_through() -> None:
    """The handler keeps what broke its stream (and the recorder, its outcome); with its
    traceback, the error would keep the reader's frames, and their buffers, in a cycle
    only a full collection frees: 137 streams refused midway kept theirs after a bench."""

    class Buffer(bytearray):
        pass

    def read() -> None:
        held = Buffer(b"x" * 1_000_000)  # noqa: F841 - what the frame keeps
        raise UpstreamServerError("up: stream broke")

    gc.disable()
    try:
        try:
            read()
        except ProviderError as exc:
            error = stream_failure(None, exc)  # type: ignore[arg-type]
        assert error.message == "up: stream broke"
        assert error.__traceback__ is None
        # Freed by reference counting, with no collection run.
        assert not [o for o in gc.get_objects() if type(o) is Buffer]
    finally:
        gc.enable()
