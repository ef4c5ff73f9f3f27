"""Waiting for an upstream's answer only while someone still wants it.

A client that leaves before its answer's first byte used to keep the upstream call
running until the provider's timeout, which was then counted against the model. Here,
while the handler awaits the dispatcher, one future waits for the client's
`http.disconnect` (the body has been read, so the next message is nothing else) and, if
it comes first, cancels the handler's task: the dispatcher records the attempt as the
client's leaving and the transport drops the upstream connection. Like
`StreamingResponse` (streaming.py), it costs one task per request, only while waiting,
and no task group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Message, Receive

__all__ = ["ClientLeft", "unless_client_leaves"]

T = TypeVar("T")


class ClientLeft(Exception):
    """The client disconnected while its answer was awaited: there is no one to answer."""


async def unless_client_leaves(receive: Receive, work: Awaitable[T]) -> T:
    """`work`'s result; raises ClientLeft (with `work` cancelled) if the client goes
    first. Call only once the request body has been read."""
    task = asyncio.current_task()
    assert task is not None
    waiting = True
    gone = False

    def heard(message: asyncio.Future[Message]) -> None:
        nonlocal gone
        if not waiting or message.cancelled() or message.exception() is not None:
            return
        if message.result()["type"] == "http.disconnect":
            gone = True
            task.cancel()

    listener = asyncio.ensure_future(receive())
    listener.add_done_callback(heard)
    try:
        return await work
    except asyncio.CancelledError:
        if not gone:
            raise  # cancelled from elsewhere (shutdown): not ours to swallow
        task.uncancel()
        raise ClientLeft from None
    finally:
        waiting = False
        listener.cancel()
