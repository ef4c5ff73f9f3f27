"""Waiting for an answer only while the client is there (gateway/http/disconnect.py), both
ways a leaving is heard: the gateway's server protocol's watch, and any server's
`http.disconnect` message."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from starlette.types import Message, Scope

from gateway.core.errors import ShuttingDown
from gateway.http.disconnect import WATCH, ClientLeft, unless_client_leaves
from providers import stopped


class Client:
    """A client connection as either kind of server reports it."""

    def __init__(self, watched: bool) -> None:
        self.watched = watched
        self.gone = asyncio.Event()
        self.listening = 0
        self.armed: Callable[[bool], None] | None = None
        self.lost = False

    @property
    def scope(self) -> Scope:
        return {"extensions": {WATCH: {"watch": self}}} if self.watched else {}

    # any server: the receive channel
    async def receive(self) -> Message:
        self.listening += 1
        try:
            await self.gone.wait()
        finally:
            self.listening -= 1
        return {"type": "http.disconnect"}

    # the gateway's server: its DisconnectWatch
    def arm(self, gone: Callable[[bool], None]) -> bool:
        if self.lost:
            return False
        self.armed = gone
        return True

    def disarm(self) -> None:
        self.armed = None

    def leave(self) -> None:
        self.lost = True
        self.gone.set()
        if self.armed is not None:
            self.armed(False)

    @property
    def idle(self) -> bool:
        return self.listening == 0 and self.armed is None


@pytest.fixture(params=[True, False], ids=["server-watch", "receive"])
def client(request: pytest.FixtureRequest) -> Client:
    return Client(watched=request.param)


async def forever(began: asyncio.Event, cancelled: list[bool]) -> str:
    began.set()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        cancelled.append(True)
        raise
    return "never"


async def test_the_work_is_cancelled_when_the_client_leaves_first(client: Client) -> None:
    began, cancelled = asyncio.Event(), []
    work = forever(began, cancelled)
    waiting = asyncio.ensure_future(unless_client_leaves(client.scope, client.receive, work))
    await began.wait()
    client.leave()
    with pytest.raises(ClientLeft):
        await waiting
    assert cancelled == [True]
    assert not waiting.cancelled()  # the handler goes on: it only has nobody to answer
    await asyncio.sleep(0)
    assert client.idle


async def test_the_answer_comes_back_and_the_watch_ends_with_it(client: Client) -> None:
    async def work() -> str:
        await asyncio.sleep(0)
        return "answer"

    assert await unless_client_leaves(client.scope, client.receive, work()) == "answer"
    await asyncio.sleep(0)
    assert client.idle  # nothing is left listening


async def test_a_cancellation_from_elsewhere_is_not_taken_for_the_client_leaving(
    client: Client,
) -> None:
    began, cancelled = asyncio.Event(), []
    work = forever(began, cancelled)
    waiting = asyncio.ensure_future(unless_client_leaves(client.scope, client.receive, work))
    await began.wait()
    waiting.cancel()  # uvicorn's own deadline
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert client.idle


async def test_a_connection_lost_before_the_wait_begins_is_heard_too(client: Client) -> None:
    client.leave()
    began, cancelled = asyncio.Event(), []
    with pytest.raises(ClientLeft):
        await unless_client_leaves(client.scope, client.receive, forever(began, cancelled))


async def test_the_servers_deadline_answers_shutting_down_and_tells_the_work_why() -> None:
    """The server's watch says it stops waiting (its shutdown deadline): the work is
    cancelled with the reason it records, and the handler answers 503 to retry."""
    client = Client(watched=True)
    began, seen = asyncio.Event(), []

    async def work() -> str:
        began.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError as exc:
            seen.append(stopped(exc))
            raise
        return "never"

    waiting = asyncio.ensure_future(unless_client_leaves(client.scope, client.receive, work()))
    await began.wait()
    assert client.armed is not None
    client.armed(True)
    with pytest.raises(ShuttingDown) as refused:
        await waiting
    assert refused.value.retry_after == 1.0
    assert seen == [True]  # a client's leaving would be False
    assert not waiting.cancelled()  # the handler goes on to answer
