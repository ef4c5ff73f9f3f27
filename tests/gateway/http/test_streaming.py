"""The streamed response: the whole body when the client stays, a clean stop when it goes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from starlette.types import Message

from gateway.http.disconnect import WATCH
from gateway.http.streaming import StreamingResponse

SCOPE = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}}


class Client:
    """receive() and send() of one connection; `leave()` disconnects it. `watched`: the
    gateway's own server, which offers a DisconnectWatch in the scope (then nothing may
    call receive() to hear the client leave)."""

    def __init__(self, watched: bool = False) -> None:
        self.sent: list[Message] = []
        self.left = asyncio.Event()
        self.listening = 0
        self.watched = watched
        self.armed: Callable[[], None] | None = None
        self.lost = False

    @property
    def scope(self) -> dict[str, Any]:
        if not self.watched:
            return SCOPE
        return {**SCOPE, "extensions": {WATCH: {"watch": self}}}

    async def receive(self) -> Message:
        self.listening += 1
        await self.left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            self.left.set()  # as uvicorn does: receive() answers disconnect once complete

    def arm(self, gone: Callable[[bool], None]) -> bool:
        if self.lost:
            return False
        self.armed = gone
        return True

    def disarm(self) -> None:
        self.armed = None

    def leave(self) -> None:
        self.lost = True
        self.left.set()
        if self.armed is not None:
            self.armed(False)

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


@pytest.fixture(params=[True, False], ids=["server-watch", "receive"])
def client(request: pytest.FixtureRequest) -> Client:
    return Client(watched=request.param)


def heard_without_a_task(client: Client) -> None:
    """Under the gateway's server, the watch was armed and is disarmed; no receive()."""
    if client.watched:
        assert client.listening == 0
        assert client.armed is None


async def test_a_staying_client_gets_every_chunk_and_the_end(client: Client) -> None:

    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"data: 1\n\n", b"data: 2\n\n"):
            await asyncio.sleep(0)
            yield part

    await StreamingResponse(chunks(), media_type="text/event-stream")(
        client.scope, client.receive, client.send
    )
    assert client.sent[0]["type"] == "http.response.start"
    assert client.body == b"data: 1\n\ndata: 2\n\n"
    assert client.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    for _ in range(3):
        await asyncio.sleep(0)  # the listener hears the end: it must not cancel anything
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    heard_without_a_task(client)


async def test_a_client_leaving_mid_wait_stops_the_body_at_once(client: Client) -> None:
    waiting, closed = asyncio.Event(), asyncio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        try:
            yield b"data: 1\n\n"
            waiting.set()
            await asyncio.Event().wait()  # an upstream that never sends again
            yield b"never"
        finally:
            closed.set()

    async def leave_when_waiting() -> None:
        await waiting.wait()
        client.leave()

    leaver = asyncio.ensure_future(leave_when_waiting())
    await StreamingResponse(chunks())(client.scope, client.receive, client.send)  # returns
    await leaver
    assert closed.is_set()  # the body's finally ran (where the gateway closes the upstream)
    assert client.body == b"data: 1\n\n"  # no end marker: nobody is there
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the cancellation was taken back
    heard_without_a_task(client)


async def test_a_client_gone_before_the_body_starts_gets_nothing(client: Client) -> None:
    closed = asyncio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        try:
            await asyncio.sleep(0)
            yield b"data: 1\n\n"
        finally:
            closed.set()

    client.leave()
    body = chunks()
    await StreamingResponse(body)(client.scope, client.receive, client.send)
    await body.aclose()  # what the event loop's finalizer does for a dropped generator
    assert closed.is_set()
    if client.watched:  # told before the first await; a listener task hears it later
        assert client.body == b""
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    heard_without_a_task(client)


async def test_a_cancellation_from_elsewhere_still_cancels(client: Client) -> None:
    started = asyncio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        started.set()
        await asyncio.Event().wait()
        yield b""

    serving = asyncio.ensure_future(
        StreamingResponse(chunks())(client.scope, client.receive, client.send)
    )
    await started.wait()
    serving.cancel()  # e.g. the server shutting down
    with pytest.raises(asyncio.CancelledError):
        await serving
    assert serving.cancelled()
    heard_without_a_task(client)
