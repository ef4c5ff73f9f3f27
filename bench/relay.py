"""The floor for a Python proxy: uvloop copying bytes, nothing parsed after the request.

Usage: python bench/relay.py UPSTREAM_BASE PORT   (e.g. http://127.0.0.1:8999 8081)

Each client connection sends one POST with a Content-Length (bench/streams.py's
clients do). The relay opens a fresh upstream connection, sends the same body to
UPSTREAM_BASE + path with `Connection: close`, and copies every byte the upstream
sends back to the client as it is (head and chunked framing included) until the
upstream closes. No HTTP client, no ASGI, no SSE: per forwarded event one read, one
Python callback and one write, which is what any CPython process on uvloop pays at
least (issue 23's floor, beside nginx's). GET /healthz answers 200.
"""

from __future__ import annotations

import asyncio
import sys
from urllib.parse import urlsplit

import uvloop

_HEALTH = b'HTTP/1.1 200 OK\r\nContent-Length: 15\r\nConnection: close\r\n\r\n{"status":"ok"}'


class _Upstream(asyncio.Protocol):
    def __init__(self, client: asyncio.Transport) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()


class _Client(asyncio.Protocol):
    def __init__(self, host: str, port: int, prefix: str) -> None:
        self.host, self.port, self.prefix = host, port, prefix
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.opening: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.upstream is not None or self.buf is None:
            return
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[:end].decode("latin-1").split("\r\n")
        method, path, _ = head[0].split(" ", 2)
        if method == "GET":
            assert self.transport is not None
            self.transport.write(_HEALTH)
            self.transport.close()
            return
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        body = self.buf[end + 4 :]
        if len(body) < length:
            return
        self.buf = None  # type: ignore[assignment]
        request = (
            f"POST {self.prefix}{path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
            "Connection: close\r\n\r\n"
        ).encode() + body[:length]
        self.opening = asyncio.ensure_future(self._open(request))

    async def _open(self, request: bytes) -> None:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        try:
            upstream, _ = await loop.create_connection(
                lambda: _Upstream(self.transport),
                self.host,
                self.port,  # type: ignore[arg-type]
            )
        except OSError:
            self.transport.close()
            return
        self.upstream = upstream  # type: ignore[assignment]
        upstream.write(request)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.close()


async def serve(upstream: str, port: int) -> None:
    parts = urlsplit(upstream)
    host, up_port = parts.hostname or "127.0.0.1", parts.port or 80
    prefix = parts.path.rstrip("/")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Client(host, up_port, prefix), "127.0.0.1", port, backlog=4096
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(sys.argv[1], int(sys.argv[2])))
