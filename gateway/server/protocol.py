"""uvicorn's httptools protocol, sending a response's head and body in one write, and
telling a handler at once when its client's connection is lost.

uvicorn writes the status line and headers as soon as the app starts its response, and
the body in a second write. With TCP_NODELAY (asyncio's default) each write is its own
TCP segment, and the client wakes for each: 6 segments per proxied request on loopback
where 4 do. Here the head waits for the next write on the connection and leaves with
it in one send, or leaves at the end of the loop iteration if nothing follows (a stream
whose first chunk is not ready), so no byte waits past the current iteration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.http.disconnect import WATCH

__all__ = ["JoinedWritesProtocol"]


class _HeadHoldingTransport:
    """Delegates to the real transport; a response head is held for the body's write."""

    __slots__ = ("_held", "_loop", "_transport", "is_closing", "pause_reading", "resume_reading")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self.is_closing = transport.is_closing
        self.pause_reading = transport.pause_reading
        self.resume_reading = transport.resume_reading

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif data.startswith(b"HTTP/1.1 ") and data.endswith(b"\r\n\r\n"):
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # the rarely used rest of the interface
        return getattr(self._transport, name)


class JoinedWritesProtocol(HttpToolsProtocol):
    """Also the connection's `DisconnectWatch` (gateway/http/disconnect.py), offered in
    every request's scope: a handler awaiting an upstream arms it, and a lost connection
    cancels that handler at once, with no task per request listening for it."""

    _gone: Callable[[], None] | None = None
    _lost = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # One per connection, not per request.
        self._extensions: dict[str, dict[object, object]] = {WATCH: {"watch": self}}
        super().connection_made(_HeadHoldingTransport(transport, self.loop))  # type: ignore[arg-type]

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = self._extensions

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        super().connection_lost(exc)
        gone = self._gone
        if gone is not None:
            self._gone = None
            gone()

    def arm(self, gone: Callable[[], None]) -> bool:
        if self._lost:
            return False
        self._gone = gone
        return True

    def disarm(self) -> None:
        self._gone = None
