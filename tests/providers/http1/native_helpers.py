"""Scripted raw-socket HTTP servers for the NativeTransport tests."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

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
    host: str = "127.0.0.1"
    accepted: int = 0
    open: int = 0
    max_open: int = 0
    requests: list[Request] = field(default_factory=list)
    disconnects: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def url(self, path: str = "/x", scheme: str = "http") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}{path}"

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


def serving(
    handler: Handler, ssl_context: ssl.SSLContext | None = None, host: str = "127.0.0.1"
) -> contextlib.AbstractAsyncContextManager[Server]:
    return _listening(Server(handler, host=host), ssl_context)


async def until(cond: Callable[[], object], timeout: float = 5.0) -> None:
    """Wait for a condition that an event-loop callback will make true."""
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.001)


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def self_signed(tmp: Path) -> tuple[Path, Path] | None:
    """A certificate for localhost and 127.0.0.1 (its own CA), or None without the tools."""
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        if shutil.which("openssl") is None:
            return None
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", str(key),
             "-out", str(cert), "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
            check=True, capture_output=True,
        )  # fmt: skip
        return cert, key
    pkey = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    built = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(pkey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(pkey, hashes.SHA256())
    )
    cert.write_bytes(built.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        pkey.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


@dataclass
class ConnectProxy:
    """An HTTP proxy on loopback: records each request head (CONNECT, or a request in
    absolute form, which it forwards), answers `status` otherwise than 200, and pipes
    bytes to the target (any host name is taken to mean 127.0.0.1). One request per
    connection in absolute form."""

    status: int = 200
    port: int = 0
    heads: list[bytes] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}"

    async def on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            if self.status != 200:
                writer.write(b"HTTP/1.1 %d No\r\nContent-Length: 0\r\n\r\n" % self.status)
                await writer.drain()
                return
            method, target, rest = head.split(b" ", 2)
            if method == b"CONNECT":
                port = int(target.rsplit(b":", 1)[1])
                first = b""
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:  # absolute-form (http:// through a proxy, as aiohttp and httpx send it)
                authority, _, path = target.split(b"://", 1)[1].partition(b"/")
                port = int(authority.rsplit(b":", 1)[1]) if b":" in authority else 80
                first = b"%s /%s %s" % (method, path, rest)
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            up_writer.write(first)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.transport.abort()
            self.tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.transport.abort()


def proxying(status: int = 200) -> contextlib.AbstractAsyncContextManager[ConnectProxy]:
    return _listening(ConnectProxy(status))


Listener = TypeVar("Listener", Server, ConnectProxy)


@contextlib.asynccontextmanager
async def _listening(
    srv: Listener, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[Listener]:
    """Serve `srv.on_conn` on a loopback port; on exit, end its connections' tasks."""
    host = srv.host if isinstance(srv, Server) else "127.0.0.1"
    server = await asyncio.start_server(srv.on_conn, host, 0, ssl=ssl_context)
    srv.port = server.sockets[0].getsockname()[1]
    try:
        yield srv
    finally:
        server.close()
        for task in list(srv.tasks):
            task.cancel()
        await asyncio.gather(*srv.tasks, return_exceptions=True)
        await server.wait_closed()
