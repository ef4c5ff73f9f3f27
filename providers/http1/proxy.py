"""Reaching an upstream through an HTTP proxy: a CONNECT tunnel, with TLS inside it for https.

Why: teams behind an egress proxy set HTTPS_PROXY and expect every client to honour it, as
curl and httpx do. Every origin goes through CONNECT (http ones too), so one path serves
both; the pooled connection then speaks to the upstream as if it had dialled it.
Loopback hosts never take the environment's proxy (as in Go's net/http): a local model
server, or a test's fake upstream, is not behind the egress proxy. A proxy named in the
configuration applies to every host of its provider.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import cast

__all__ = ["MAX_PROXY_HEAD", "Proxy", "TunnelRefused", "open_tunnel", "proxy_for"]

MAX_PROXY_HEAD = 1 << 16  # bytes of the proxy's answer to CONNECT


class TunnelRefused(ConnectionError):
    """The proxy answered CONNECT with something other than 2xx (e.g. 407, 403, 502)."""


@dataclass(frozen=True, slots=True)
class Proxy:
    host: str
    port: int
    authorization: str | None = None  # "Basic ..." from the URL's user info: never logged

    @classmethod
    def parse(cls, url: str) -> Proxy:
        """http://[user:password@]host[:port]; ValueError names what is wrong, not the URL."""
        u = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
        if u.scheme != "http":
            raise ValueError(f"proxy scheme must be http, not {u.scheme!r}")
        if not u.hostname:
            raise ValueError("proxy URL has no host")
        auth = None
        if u.username is not None:
            pair = f"{urllib.parse.unquote(u.username)}:{urllib.parse.unquote(u.password or '')}"
            auth = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        return cls(u.hostname, u.port or 80, auth)


def proxy_for(host: str, tls: bool, configured: Proxy | None) -> Proxy | None:
    """The configured proxy, else the environment's (HTTPS_PROXY or HTTP_PROXY, NO_PROXY)."""
    if configured is not None:
        return configured
    if _loopback(host):
        return None
    url = urllib.request.getproxies_environment().get("https" if tls else "http")
    # proxy_bypass_environment: in urllib.request since Python 2 but not in typeshed's stubs
    if not url or urllib.request.proxy_bypass_environment(host):  # type: ignore[attr-defined]
        return None
    return Proxy.parse(url)


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Tunnel(asyncio.Protocol):
    """Sends CONNECT and resolves `done` once the proxy's answer head has arrived."""

    def __init__(self, request: bytes, done: asyncio.Future[bytes]) -> None:
        self.request = request
        self.done = done
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.WriteTransport, transport).write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        self.buffer += data
        if b"\r\n\r\n" in self.buffer:
            self.done.set_result(self.buffer)
        elif len(self.buffer) > MAX_PROXY_HEAD:
            self.done.set_exception(TunnelRefused("proxy answer too large"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionResetError("proxy closed the connection"))


async def open_tunnel(proxy: Proxy, host: str, port: int) -> asyncio.Transport:
    """A transport to the proxy that now carries bytes to host:port (the caller sets its
    protocol, or starts TLS on it). Raises OSError subclasses, TunnelRefused among them."""
    loop = asyncio.get_running_loop()
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
    if proxy.authorization:
        head += f"Proxy-Authorization: {proxy.authorization}\r\n"
    done: asyncio.Future[bytes] = loop.create_future()
    request = (head + "\r\n").encode("latin-1")
    transport, _ = await loop.create_connection(
        lambda: _Tunnel(request, done), proxy.host, proxy.port
    )
    try:
        answer = await done
        status_line = answer.split(b"\r\n", 1)[0].split()
        status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
        if not 200 <= status < 300:
            raise TunnelRefused(f"proxy refused the tunnel: HTTP {status or '(unreadable)'}")
        if answer.index(b"\r\n\r\n") + 4 != len(answer):  # the upstream cannot have spoken yet
            raise TunnelRefused("proxy sent data after its answer")
    except BaseException:
        transport.abort()
        raise
    return transport
