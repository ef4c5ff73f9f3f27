"""Waiting for an answer only while the client is there (gateway/http/disconnect.py)."""

from __future__ import annotations

import asyncio

import pytest
from starlette.types import Message

from gateway.http.disconnect import ClientLeft, unless_client_leaves


class Channel:
    """An ASGI receive channel whose disconnect the test sends."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()
        self.waiting = 0

    async def receive(self) -> Message:
        self.waiting += 1
        try:
            await self.gone.wait()
        finally:
            self.waiting -= 1
        return {"type": "http.disconnect"}


async def test_the_work_is_cancelled_when_the_client_leaves_first() -> None:
    channel = Channel()
    began = asyncio.Event()
    cancelled = False

    async def work() -> str:
        nonlocal cancelled
        began.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled = True
            raise
        return "never"

    waiting = asyncio.ensure_future(unless_client_leaves(channel.receive, work()))
    await began.wait()
    channel.gone.set()
    with pytest.raises(ClientLeft):
        await waiting
    assert cancelled
    assert not waiting.cancelled()  # the handler goes on: it only has nobody to answer


async def test_the_answer_comes_back_and_the_watch_ends_with_it() -> None:
    channel = Channel()

    async def work() -> str:
        await asyncio.sleep(0)
        return "answer"

    assert await unless_client_leaves(channel.receive, work()) == "answer"
    await asyncio.sleep(0)
    assert channel.waiting == 0  # nothing is left listening


async def test_a_cancellation_from_elsewhere_is_not_taken_for_the_client_leaving() -> None:
    channel = Channel()
    began = asyncio.Event()

    async def work() -> None:
        began.set()
        await asyncio.Event().wait()

    waiting = asyncio.ensure_future(unless_client_leaves(channel.receive, work()))
    await began.wait()
    waiting.cancel()  # the server stops
    with pytest.raises(asyncio.CancelledError):
        await waiting
