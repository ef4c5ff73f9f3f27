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

The same watch says when the server stops waiting: at its shutdown deadline
(`server.shutdown_timeout`) a request still awaiting its upstream is cancelled with
`providers.STOPPING` and answered `ShuttingDown` (503, Retry-After), rather than cut.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from starlette.types import Message, Receive, Scope

from gateway.core.errors import ShuttingDown
from providers import STOPPING

__all__ = ["WATCH", "ClientLeft", "DisconnectWatch", "unless_client_leaves"]

T = TypeVar("T")

WATCH = "gatewise.disconnect"  # scope["extensions"][WATCH]["watch"]: a DisconnectWatch


class ClientLeft(Exception):
    """The client disconnected while its answer was awaited: there is no one to answer."""


class DisconnectWatch(Protocol):
    """The server's word that a connection is lost, or that it stops waiting for the
    request (shutting down), for one request at a time."""

    def arm(self, gone: Callable[[bool], None]) -> bool:
        """Call `gone(False)` when the connection is lost, `gone(True)` when the server
        stops waiting for this request (its shutdown deadline); False if the connection
        is already lost."""

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
    gone = stop = False

    def lost(stopping: bool) -> None:
        nonlocal gone, stop
        gone, stop = True, stopping
        task.cancel(STOPPING if stopping else None)  # `work` records which it was

    if not watch.arm(lost):
        work.close()
        raise ClientLeft
    try:
        return await work
    except asyncio.CancelledError:
        if not gone:
            raise  # cancelled from elsewhere (uvicorn's own deadline): not ours to swallow
        task.uncancel()
        if stop:
            raise ShuttingDown("the gateway is shutting down; retry the request") from None
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
