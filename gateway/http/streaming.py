"""A streamed response that stops when the client leaves, without a task group each.

Under uvicorn (ASGI spec 2.3) Starlette's StreamingResponse runs every stream in an anyio
task group, beside a second task that waits for the client's disconnect. Under streaming
load that machinery cost a fifth of what one worker could serve (2,701 -> 3,278 streamed
chats/s without it, one worker, 49 connections). Here, if the client leaves before the
end, the streaming task is cancelled: the body's generator sees the cancellation at its
await, and its `finally` closes the upstream at once, as before, rather than at the next
chunk. The gateway's own server says so through its `DisconnectWatch`
(gateway/http/disconnect.py), with no task per stream; under any other server one
future waits for the `http.disconnect` message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import Protocol

from starlette import responses
from starlette.types import Message, Receive, Scope, Send

from gateway.core.headers import RenderedHeaders
from gateway.http.disconnect import WATCH, DisconnectWatch
from providers import STOPPING

__all__ = [
    "BODY", "BodyWriter", "StreamingResponse", "body_writer", "event_stream", "event_stream_lines",
    "once_sent",
]  # fmt: skip

BODY = "gatewise.body"  # scope["extensions"][BODY]["writer"]: a BodyWriter


class BodyWriter(Protocol):
    """The server's way to write a streamed response's body without an ASGI `send`
    per piece: a stream that pushes its pieces from a socket callback
    (providers/sse.py's `ChunkBatches.relay`) cannot await one."""

    def write_body(self, data: bytes) -> Awaitable[None] | None:
        """Write `data` as the next piece of the body under way (after its first `send`);
        returns what to await before writing more when the client is slow to read."""

    def start_body(self, lines: bytes) -> bool:
        """Write a 200 streamed answer's head, of these header lines, now and without
        `send` (the answer not begun yet: gateway/http/heartbeat.py); False if it cannot
        (a head is out already, or the connection cannot take it)."""

    def when_sent(self, then: Callable[[], None]) -> None:
        """Call `then` once what was written has left the server's buffer for the client
        (or the connection is gone); at once if it has."""


def once_sent(scope: Scope, then: Callable[[], None]) -> None:
    """Call `then` once the answer written on this request's connection has left the
    server for the client, or the client is gone (bounded by `server.send_timeout`).
    An ASGI `send` returns before the last write drains: a large answer to a client that
    reads slowly waits in the server's buffer, and what holds memory for it (the request's
    share of `max_body_memory`) must not be given back until it has left. Under a server
    that offers no BodyWriter, at once."""
    writer = body_writer(scope)
    if writer is None:
        then()
    else:
        writer.when_sent(then)


def body_writer(scope: Scope) -> BodyWriter | None:
    """The server's BodyWriter, where it offers one (the gateway's own server does)."""
    extensions = scope.get("extensions")
    offered = extensions.get(BODY) if extensions else None
    return offered["writer"] if offered is not None else None


# A server-sent-events answer's own header lines, as Starlette's would render them.
_EVENT_STREAM = b"content-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"


def event_stream(
    body: AsyncIterable[bytes], lines: bytes, head_sent: bool = False
) -> StreamingResponse:
    """A server-sent-events answer of `body`, with the header lines `lines` besides its
    own, sent rendered (gateway.core.headers): uvicorn checked and rendered a stream's
    dozen headers pair by pair, on every stream. With `head_sent`, its head went out
    before the answer began (gateway/http/heartbeat.py, `EarlyHead`): only the body is
    sent."""
    response = StreamingResponse(body)
    response.head_sent = head_sent
    # Starlette sends raw_headers as the start message's headers, which ASGI lets be any
    # iterable of pairs: the gateway's server writes these lines as they are, any other
    # reads them as pairs (a middleware copies them into a list).
    response.raw_headers = RenderedHeaders(event_stream_lines(lines), None)  # type: ignore[assignment]
    return response


def event_stream_lines(lines: bytes) -> bytes:
    """A server-sent-events answer's header lines: its own, then `lines`."""
    return _EVENT_STREAM + lines


class StreamingResponse(responses.StreamingResponse):
    head_sent = False  # the head is out already (`event_stream`): the body only

    async def stream_response(self, send: Send) -> None:
        await super().stream_response(_body_only(send) if self.head_sent else send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        gone = False

        def lost(stopping: bool) -> None:
            nonlocal gone
            gone = True
            # Stopping (the server's shutdown deadline), the body's generator ends the
            # stream in its API's shape where it can (gateway/http/proxy.py `_sse`).
            task.cancel(STOPPING if stopping else None)

        stop = _listen(scope, receive, lost)
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if not gone:
                raise  # cancelled from elsewhere (uvicorn's own deadline): not ours to swallow
            task.uncancel()  # the client left, or cannot be written to: nobody to answer
            return
        finally:
            stop()
        if self.background is not None:
            await self.background()


def _body_only(send: Send) -> Send:
    """`send` for a response whose head is out already: its start message is dropped."""

    async def body(message: Message) -> None:
        if message["type"] != "http.response.start":
            await send(message)

    return body


def _listen(scope: Scope, receive: Receive, lost: Callable[[bool], None]) -> Callable[[], None]:
    """Call `lost(False)` if the client leaves (at once if it has), `lost(True)` if the
    server stops waiting (DisconnectWatch); returns what stops listening. The server's
    watch where offered: ~20 µs less a stream than a task awaiting `receive()`, and its
    cancellation."""
    extensions = scope.get("extensions")
    offered = extensions.get(WATCH) if extensions else None
    if offered is not None:
        watch: DisconnectWatch = offered["watch"]
        if not watch.arm(lost):
            lost(False)  # before the first await: the stream stops there
        return watch.disarm
    ended = False

    def heard(message: asyncio.Future[Message]) -> None:
        if ended or message.cancelled() or message.exception() is not None:
            return
        if message.result()["type"] == "http.disconnect":
            lost(False)

    listener = asyncio.ensure_future(receive())
    listener.add_done_callback(heard)

    def stop() -> None:
        nonlocal ended
        ended = True
        listener.cancel()

    return stop
