"""Scripted raw-socket HTTP servers for the NativeTransport tests."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
JSON = {"content-type": "application/json"}

Handler = Callable[["Server", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Request:
    head: bytes
    body: bytes

    @property
    def path(self) -> str:
        return self.head.split(b" ", 2)[1].decode()

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.decode().lower() == name:
                return v.decode().strip()
        return None


@dataclass
class Server:
    handler: Handler
    port: int = 0
    accepted: int = 0
    open: int = 0
    max_open: int = 0
    requests: list[Request] = field(default_factory=list)
    disconnects: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def url(self, path: str = "/x", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def read_request(self, reader: asyncio.StreamReader) -> Request:
        head = await reader.readuntil(b"\r\n\r\n")
        req = Request(head, b"")
        n = int(req.header("content-length") or 0)
        if n:
            req.body = await reader.readexactly(n)
        self.requests.append(req)
        return req

    async def on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.accepted += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            await self.handler(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:  # teardown; end normally (3.11 streams log otherwise)
            pass
        finally:
            self.open -= 1
            self.disconnects += 1
            writer.transport.abort()
            self.tasks.discard(task)


def answering(*responses: bytes) -> Handler:
    """Answer each request on a connection with the next response (the last repeats)."""

    async def handler(srv: Server, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        i = 0
        while True:
            await srv.read_request(reader)
            w.write(responses[min(i, len(responses) - 1)])
            await w.drain()
            i += 1

    return handler


@contextlib.asynccontextmanager
async def serving(
    handler: Handler, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[Server]:
    srv = Server(handler)
    server = await asyncio.start_server(srv.on_conn, "127.0.0.1", 0, ssl=ssl_context)
    srv.port = server.sockets[0].getsockname()[1]
    try:
        yield srv
    finally:
        server.close()
        for task in list(srv.tasks):
            task.cancel()
        await asyncio.gather(*srv.tasks, return_exceptions=True)
        await server.wait_closed()


async def until(cond: Callable[[], object], timeout: float = 5.0) -> None:
    """Wait for a condition that an event-loop callback will make true."""
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.001)


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
