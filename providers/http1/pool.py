"""NativeTransport: a keep-alive connection pool over providers/http1/connection.py.

Why: the upstream client was the largest CPU cost per proxied request (see connection.py).
Idle connections are kept per origin, most recently used first, so surplus ones age out:
30 s unused, they are closed at the next checkout, or by the reaper (one timer per
transport, armed while any connection is idle) when no request comes: a provider that
gets no more traffic would otherwise hold its sockets, and the upstream's, for ever.
Open connections are capped per transport; requests beyond the cap wait first come,
first served, and the wait counts against the connect timeout.

Retry policy: a request goes out on another connection only when nothing was written yet
(the pooled connection was already closing when taken), or when the method is safe (GET,
HEAD, OPTIONS) and a reused connection died before any response byte. A written POST is
never replayed: the upstream may already have started, and billed, the generation.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import socket
import ssl
from collections import deque
from collections.abc import Coroutine, Mapping
from typing import Any, Literal, cast, overload

from providers.errors import CapacityExhausted, UpstreamConnectionError, UpstreamTimeout
from providers.http1.connection import Connection, NativeStream, Unanswered, failed
from providers.http1.proxy import Proxy, TunnelRefused, open_tunnel, proxy_for
from providers.http1.request import HeadWriter, parse_url
from providers.transport import (
    IDLE_TIMEOUT,
    MAX_BODY,
    TakeMemory,
    Timeout,
    Transport,
    UpstreamResponse,
)

__all__ = ["NativeTransport", "Origin", "PooledConnection"]

DNS_TTL = 300.0  # like aiohttp's ttl_dns_cache in AiohttpTransport
MAX_TARGETS = 1024  # parsed URLs kept per transport
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Origin:
    """scheme://host:port with its idle connections (newest last) and resolved addresses."""

    __slots__ = ("addrs", "addrs_until", "host", "idle", "literal", "port", "proxy", "tls")

    def __init__(self, host: str, port: int, tls: bool, proxy: Proxy | None = None) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.proxy = proxy  # reached through this proxy's CONNECT tunnel
        self.idle: deque[PooledConnection] = deque()
        self.addrs: list[tuple[int, str]] = []
        self.addrs_until = 0.0
        try:
            ipaddress.ip_address(host)
            self.literal = True
        except ValueError:
            self.literal = False


class PooledConnection(Connection):
    """A connection the pool counts: where it leads, and its place among the idle ones."""

    __slots__ = ("adopted", "idle_since", "in_idle", "origin", "pool", "reused")

    def __init__(
        self, pool: NativeTransport, origin: Origin, loop: asyncio.AbstractEventLoop
    ) -> None:
        super().__init__(loop, pool.max_body)
        self.pool = pool
        self.origin = origin
        self.adopted = self.in_idle = self.reused = False
        self.idle_since = 0.0

    def adopt(self) -> None:
        """The pool now counts this connection; a close that already happened is reported."""
        self.adopted = True
        if self.closed:
            self.pool.conn_closed(self)

    def reusable(self) -> None:
        self.pool.release(self)

    def gone(self) -> None:
        if self.adopted:
            self.pool.conn_closed(self)


class _Target:
    __slots__ = ("host", "origin", "path")

    def __init__(self, origin: Origin, path: str, host: str) -> None:
        self.origin = origin
        self.path = path
        self.host = host


class NativeTransport(Transport):
    def __init__(
        self, timeout: Timeout, max_connections: int = 256, *,
        ssl_context: ssl.SSLContext | None = None, max_body: int = MAX_BODY,
        proxy: str | None = None, idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:  # fmt: skip
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._idle_ttl = idle_timeout
        self._reaper: asyncio.TimerHandle | None = None
        self.max_body = max_body  # given to each connection
        # None: the environment's proxy, if any (providers/http1/proxy.py)
        self._proxy = Proxy.parse(proxy) if proxy else None
        self._total = timeout.total
        self._connect_timeout = timeout.connect
        self._pool_timeout = timeout.pool
        self._stream_total = timeout.stream
        self._limit = max_connections
        self._ssl = ssl_context  # default context made on first https use
        self._loop: asyncio.AbstractEventLoop | None = None
        self._open = 0  # connections open or being opened (reserved slots)
        self._conns: set[PooledConnection] = set()
        self._waiters: deque[tuple[Origin, asyncio.Future[PooledConnection | None]]] = deque()
        self._origins: dict[tuple[bool, str, int], Origin] = {}
        self._targets: dict[str, _Target] = {}
        self._heads = HeadWriter()

    # Plain methods returning the coroutine: one await layer less on every resumption.
    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None = None,
        memory: TakeMemory | None = None,
    ) -> Coroutine[Any, Any, UpstreamResponse]:
        return self._send(method, url, headers, body, False, memory)

    def stream(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> Coroutine[Any, Any, NativeStream]:
        return self._send(method, url, headers, body, True)

    async def aclose(self) -> None:
        """Fail waiters and exchanges in flight, close every socket; usable again after."""
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        waiters, self._waiters = self._waiters, deque()
        for _, fut in waiters:
            if not fut.done():
                fut.set_exception(failed("TransportClosed"))
        conns = list(self._conns)
        for conn in conns:
            conn.abort(failed("TransportClosed"))
        if conns:
            await asyncio.sleep(0)  # let the transports report connection_lost

    # -- one exchange -----------------------------------------------------------------------
    @overload
    async def _send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
        streaming: Literal[False], memory: TakeMemory | None = None,
    ) -> UpstreamResponse: ...  # fmt: skip

    @overload
    async def _send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
        streaming: Literal[True], memory: TakeMemory | None = None,
    ) -> NativeStream: ...  # fmt: skip

    async def _send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
        streaming: bool, memory: TakeMemory | None = None,
    ) -> UpstreamResponse | NativeStream:  # fmt: skip
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        now = loop.time()
        target = self._targets.get(url) or self._target(url)
        head = self._heads.encode(method, target.path, target.host, headers, body)
        origin = target.origin
        deadline = now + self._total
        idle = self._total if streaming else None
        ends_by = now + self._stream_total if streaming else math.inf
        attempts = 0
        while True:
            conn = self._checkout(origin, now)
            if conn is None:
                conn = await self._acquire(origin, deadline)
            if conn.closed or conn.transport.is_closing():
                conn.abort()  # closing before anything was written: another one is safe
                attempts += 1
                if attempts > 3:
                    raise failed("ServerDisconnected")
                now = loop.time()
                continue
            reused = conn.reused
            fut: asyncio.Future[UpstreamResponse | NativeStream] | None = None
            try:
                fut = conn.start(
                    head, body, deadline, idle, ends_by, streaming, method == "HEAD", memory
                )
                return await fut
            except Unanswered as exc:
                if not (reused and method in _SAFE_METHODS) or attempts:
                    # Unanswered only tells this loop it may retry; callers get the plain class.
                    raise UpstreamConnectionError(exc.message) from None
                attempts += 1
                now = loop.time()
            except BaseException:
                if fut is None or conn.fut is fut:  # cancelled in flight: socket mid-exchange
                    conn.abort()
                elif fut.done() and not fut.cancelled() and not fut.exception():
                    got = fut.result()
                    if isinstance(got, NativeStream):
                        got.close_now()  # got the headers but nobody will read
                raise
            finally:
                # The future holds the failure, whose traceback holds this frame: a cycle
                # that only a full collection would free, with the connection in it.
                fut = None

    # -- the pool ------------------------------------------------------------------------------
    def _checkout(self, origin: Origin, now: float) -> PooledConnection | None:
        idle = origin.idle
        ttl = self._idle_ttl
        while idle:
            conn = idle.pop()
            conn.in_idle = False
            if now - conn.idle_since > ttl:  # the newest is stale, so are the rest
                conn.abort()
                while idle:
                    old = idle.popleft()
                    old.in_idle = False
                    old.abort()
                return None
            if idle and now - idle[0].idle_since > ttl:
                old = idle.popleft()
                old.in_idle = False
                old.abort()
            if not conn.closed:
                return conn
        return None

    async def _acquire(self, origin: Origin, deadline: float) -> PooledConnection:
        """A connection: an idle one handed over, or a new one in a free slot. Waiting for
        room is bounded by the pool timeout (CapacityExhausted: the gateway is saturated),
        opening a connection by the connect timeout (UpstreamTimeout: the upstream is)."""
        loop = cast(asyncio.AbstractEventLoop, self._loop)
        try:
            async with asyncio.timeout_at(min(loop.time() + self._pool_timeout, deadline)):
                while True:
                    if self._open < self._limit:
                        self._open += 1
                        break
                    if not self._evict_idle(origin):
                        got = await self._wait(origin)
                        if got is None:  # a freed slot was handed to us
                            break
                        if not got.closed:
                            return got
                    conn = self._checkout(origin, loop.time())
                    if conn is not None:
                        return conn
        except TimeoutError:
            raise CapacityExhausted(
                f"no connection to the upstream came free within {self._pool_timeout:g} s "
                f"(all {self._limit} in use)"
            ) from None
        try:
            async with asyncio.timeout_at(min(loop.time() + self._connect_timeout, deadline)):
                return await self._connect(origin)  # gives the slot back if it fails
        except TimeoutError:
            raise UpstreamTimeout("upstream connect timed out") from None

    async def _wait(self, origin: Origin) -> PooledConnection | None:
        fut: asyncio.Future[PooledConnection | None] = cast(Any, self._loop).create_future()
        self._waiters.append((origin, fut))
        try:
            return await fut
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                got = fut.result()  # handed over just as we gave up: pass it on
                if got is None:
                    self._slot_freed()
                elif not got.closed:
                    self.release(got)
            raise  # a cancelled future stays queued and is skipped by _first_waiter

    def _first_waiter(self) -> tuple[Origin, asyncio.Future[PooledConnection | None]] | None:
        waiters = self._waiters
        while waiters:
            w = waiters[0]
            if not w[1].done():
                return w
            waiters.popleft()
        return None

    def _slot_freed(self) -> None:
        w = self._first_waiter()
        if w is None:
            self._open -= 1
        else:
            self._waiters.popleft()
            w[1].set_result(None)  # the slot moves to the waiter: the count stays

    def _evict_idle(self, keep: Origin) -> bool:
        """At the limit, close another origin's idle connection to make room."""
        for origin in self._origins.values():
            if origin is not keep and origin.idle:
                conn = origin.idle.popleft()
                conn.in_idle = False
                conn.abort()
                return True
        return False

    def release(self, conn: PooledConnection) -> None:
        """A keep-alive response ended: hand the connection on, or park it."""
        if conn.closed:
            return
        conn.reused = True
        w = self._first_waiter()
        if w is None:
            conn.idle_since = conn.loop.time()
            conn.in_idle = True
            conn.origin.idle.append(conn)
            if self._reaper is None:
                self._reaper = conn.loop.call_at(conn.idle_since + self._idle_ttl, self._reap)
        elif w[0] is conn.origin:
            self._waiters.popleft()
            w[1].set_result(conn)
        else:
            conn.abort()  # its slot goes to the waiter through conn_closed

    def _reap(self) -> None:
        """Close what has been idle past the TTL; run again when the oldest left expires.
        Each origin's idle deque is oldest first, so only its head is ever looked at."""
        self._reaper = None
        loop = cast(asyncio.AbstractEventLoop, self._loop)
        now = loop.time()
        ttl = self._idle_ttl
        due: float | None = None
        for origin in self._origins.values():
            idle = origin.idle
            while idle and now - idle[0].idle_since >= ttl:
                conn = idle.popleft()
                conn.in_idle = False
                conn.abort()
            if idle and (due is None or idle[0].idle_since < due):
                due = idle[0].idle_since
        if due is not None:
            self._reaper = loop.call_at(due + ttl, self._reap)

    def conn_closed(self, conn: PooledConnection) -> None:
        """Called once per adopted connection when its socket goes."""
        self._conns.discard(conn)
        if conn.in_idle:
            conn.in_idle = False
            conn.origin.idle.remove(conn)
        self._slot_freed()

    async def _connect(self, origin: Origin) -> PooledConnection:
        """Open a connection in a slot already reserved; give the slot back on failure."""
        try:
            conn = await self._dial(origin)
        except BaseException as exc:
            self._slot_freed()
            if isinstance(exc, OSError):
                why = str(exc) if isinstance(exc, TunnelRefused) else type(exc).__name__
                msg = f"upstream connection failed: {why}"
                if isinstance(exc, TimeoutError):
                    raise UpstreamTimeout(msg) from exc
                raise UpstreamConnectionError(msg) from exc
            raise
        self._conns.add(conn)
        conn.adopt()
        return conn

    async def _dial(self, origin: Origin) -> PooledConnection:
        loop = cast(asyncio.AbstractEventLoop, self._loop)
        ctx = None
        if origin.tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
                self._ssl.set_alpn_protocols(["http/1.1"])
            ctx = self._ssl
        if origin.proxy is not None:
            return await self._dial_through(origin.proxy, origin, ctx)
        if origin.literal:
            addrs = [(0, origin.host)]
        elif origin.addrs_until > loop.time():
            addrs = origin.addrs
        else:
            infos = await loop.getaddrinfo(origin.host, origin.port, type=socket.SOCK_STREAM)
            addrs = list(dict.fromkeys((fam, str(sa[0])) for fam, _, _, _, sa in infos))
            origin.addrs, origin.addrs_until = addrs, loop.time() + DNS_TTL
        last: OSError = OSError("no address")
        for family, host in addrs:
            try:
                _, conn = await loop.create_connection(
                    lambda: PooledConnection(self, origin, loop),
                    host,
                    origin.port,
                    family=family,
                    ssl=ctx,
                    server_hostname=origin.host if ctx else None,
                )
                return conn
            except OSError as exc:
                last = exc
        origin.addrs_until = 0.0  # every address failed: resolve again next time
        raise last

    async def _dial_through(
        self, proxy: Proxy, origin: Origin, ctx: ssl.SSLContext | None
    ) -> PooledConnection:
        loop = cast(asyncio.AbstractEventLoop, self._loop)
        conn = PooledConnection(self, origin, loop)
        transport = await open_tunnel(proxy, origin.host, origin.port)
        if ctx is None:
            transport.set_protocol(conn)
        else:
            try:
                tls = await loop.start_tls(transport, conn, ctx, server_hostname=origin.host)
            except BaseException:
                transport.abort()
                raise
            if tls is None:  # the tunnel closed during the handshake
                raise ConnectionResetError("proxy closed the tunnel")
            transport = tls
        conn.connection_made(transport)
        return conn

    def _target(self, url: str) -> _Target:
        u = parse_url(url)
        key = (u.tls, u.host, u.port)
        origin = self._origins.get(key)
        if origin is None:
            proxy = proxy_for(u.host, u.tls, self._proxy)
            origin = self._origins[key] = Origin(u.host, u.port, u.tls, proxy)
        target = _Target(origin, u.path, u.host_header)
        if len(self._targets) >= MAX_TARGETS:
            self._targets.clear()
        self._targets[url] = target
        return target
