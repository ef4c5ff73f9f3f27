"""Waiting for an upstream's answer only while someone still wants it.

A client that leaves before its answer's first byte used to keep the upstream call
running until the provider's timeout, which was then counted against the model. Here,
if the client goes while the handler awaits the dispatcher, the handler's task is
cancelled: the dispatcher records the attempt as the client's leaving and the transport
drops the upstream connection.

How the leaving is heard: the gateway's own server protocol (gateway/server/protocol.py)
offers a `DisconnectWatch` in the scope's extensions, called from its `connection_lost`
(arming it costs an attribute write: ~1.5 µs a request in all, bench/disconnect_watch.py).
Under any other server (tests, plain uvicorn) a future waits for the `http.disconnect`
message instead, as `StreamingResponse` does (streaming.py): a task per request, ~10 µs,
4% of what a proxied request costs the gateway (~250 µs of CPU), hence the watch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from starlette.types import Message, Receive, Scope

__all__ = ["WATCH", "ClientLeft", "DisconnectWatch", "unless_client_leaves"]

T = TypeVar("T")

WATCH = "gatewise.disconnect"  # scope["extensions"][WATCH]["watch"]: a DisconnectWatch


class ClientLeft(Exception):
    """The client disconnected while its answer was awaited: there is no one to answer."""


class DisconnectWatch(Protocol):
    """The server's word that a connection is lost, for one request at a time."""

    def arm(self, gone: Callable[[], None]) -> bool:
        """Call `gone()` when the connection is lost; False if it already is."""

    def disarm(self) -> None: ...


def unless_client_leaves(
    scope: Scope, receive: Receive, work: Coroutine[Any, Any, T]
) -> Coroutine[Any, Any, T]:
    """Await it for `work`'s result; it raises ClientLeft (with `work` cancelled) if the
    client goes first. Call only once the request body has been read. (A plain function:
    one coroutine frame less for every resumption of `work`.)"""
    extensions = scope.get("extensions")
    offered = extensions.get(WATCH) if extensions else None
    if offered is not None:
        return _watched(offered["watch"], work)
    return _listening(receive, work)


async def _watched(watch: DisconnectWatch, work: Coroutine[Any, Any, T]) -> T:
    task = asyncio.current_task()
    assert task is not None
    gone = False

    def lost() -> None:
        nonlocal gone
        gone = True
        task.cancel()

    if not watch.arm(lost):
        work.close()
        raise ClientLeft
    try:
        return await work
    except asyncio.CancelledError:
        if not gone:
            raise  # cancelled from elsewhere (shutdown): not ours to swallow
        task.uncancel()
        raise ClientLeft from None
    finally:
        watch.disarm()


async def _listening(receive: Receive, work: Coroutine[Any, Any, T]) -> T:
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
            raise
        task.uncancel()
        raise ClientLeft from None
    finally:
        waiting = False
        listener.cancel()
