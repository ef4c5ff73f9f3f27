"""How workers listen: each on its own SO_REUSEPORT sockets, several of them.

uvicorn's workers share one listening socket, and whichever wakes first accepts a whole
burst of new connections. Clients that keep their connections (SDK pools, proxies in
front, wrk) then stay on that one worker: with 50 keep-alive connections one of two
workers served 98 % of the requests, and two workers were no faster than one. With a
listening socket per worker, bound with SO_REUSEPORT, the kernel spreads new connections
over the workers by their address hash.

uvicorn's supervisor stays in charge (restarting dead workers, SIGHUP, TTIN/TTOU): the
socket it hands to every worker it spawns is a `ReusePortSocket`, which the parent binds
but never listens on, and whose pickled form opens a fresh listener in the worker.

Several listeners per worker, even a single one (`LISTENERS`): uvloop's libuv accepts one
connection per listening socket per turn of the event loop. A busy worker turns a few
hundred times a second, so with one socket new connections queued in the kernel: at
9,500 held streams and 950 new ones a second on one core, up to 900 waited, the time to
first byte reached 1.4-2.5 s at p99 and the health probe 1.3-2.8 s, while the streams
held saw gaps of 17-33 ms (bench/README.md, "Accepting").
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys
import weakref
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("uvicorn.error")

# Listening sockets per worker, so up to this many connections are accepted per turn of
# the loop (the kernel spreads them by address hash). At 16, 950 new connections a second
# queue no longer at 9,500 held streams; an idle listener costs an fd and nothing per turn.
LISTENERS = 16
STARTUP_FAILURE = 3  # uvicorn's exit code when it cannot start
_LISTEN = 10  # TCP_LISTEN, tcp_info's state of a listening socket (Linux)
_bound: weakref.WeakSet[socket.socket] = weakref.WeakSet()  # this process's, for accept_queue
WORKERS_ENV = "GATEWISE_WORKERS"  # tells each worker how many serve the port


def announce(host: str, port: int, workers: int = 1, probe_port: int | None = None) -> None:
    """The one line a person starting the gateway looks for: where it listens (printed,
    not logged: the log level may hide it, and it is not an event to collect)."""
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}"
    served = f"{workers} workers" if workers > 1 else "serving"
    probes = f"; probes on port {probe_port}" if probe_port is not None else ""
    print(
        f"Gatewise: {served} on {url} (OpenAI API at {url}/v1, dashboard at "
        f"{url}/model-performance{probes})",
        file=sys.stderr,
        flush=True,
    )


def reuse_port_supported() -> bool:
    """SO_REUSEPORT balances connections on Linux; elsewhere it only shares the port."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def _bind_shared(sock: socket.socket, host: str, port: int) -> None:
    """Bind so that other SO_REUSEPORT sockets of this user may share (host, port)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    _bound.add(sock)


def open_listener(family: int, host: str, port: int) -> socket.socket:
    """A worker's own socket on the reserved port (it listens once uvicorn serves)."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    _bind_shared(sock, host, port)
    return sock


class ReusePortSocket(socket.socket):
    """The supervisor's reservation of the port; each worker unpickles its own listener."""

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        host, port = self.getsockname()[:2]
        return open_listener, (self.family, host, port)


def reserve(host: str, port: int) -> ReusePortSocket:
    """Bind the port in the supervisor, so a taken port fails before any worker starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = ReusePortSocket(family, socket.SOCK_STREAM)
    _bind_shared(sock, host, port)
    return sock


def reserve_listeners(host: str, port: int, count: int = LISTENERS) -> list[socket.socket]:
    """`count` sockets bound to one port (the first picks it when `port` is 0): in a single
    worker they are its listeners; pickled to spawned workers, each opens its own. A port
    another process listens on is refused, though SO_REUSEPORT would let this user share
    it: a second gateway started on a port in use must fail, not take half its clients."""
    if port:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAITs may stay
            probe.bind((host, port))  # OSError (EADDRINUSE) while anyone listens there
    first = reserve(host, port)
    sockets: list[socket.socket] = [first]
    try:
        port = first.getsockname()[1]
        sockets.extend(reserve(host, port) for _ in range(count - 1))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def listening(host: str, port: int, probe_port: int | None = None) -> str:
    """Where the gateway listens, as its start-up messages say it."""
    where = f"{host}:{port}"
    return where if probe_port is None else f"{where} and probe port {probe_port}"


def reserve_all(
    host: str, port: int, probe_port: int | None = None
) -> tuple[list[socket.socket], socket.socket | None]:
    """The port's LISTENERS, and the probe port's one listener if asked for (served by a
    thread of each worker's own: gateway/server/probes.py)."""
    sockets = reserve_listeners(host, port)
    if probe_port is None:
        return sockets, None
    try:
        [probe] = reserve_listeners(host, probe_port, 1)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets, probe


def accept_queue() -> int:
    """Connections the kernel has set up for this process's listening sockets and the
    process has not accepted yet: above 0 for long, the worker cannot keep up (the
    queue reached 900 with one socket, bench/README.md "Accepting"). Linux's TCP_INFO
    of a listening socket gives it; 0 where there is none."""
    if not hasattr(socket, "TCP_INFO"):
        return 0
    waiting = 0
    for sock in list(_bound):
        if sock.fileno() < 0:
            continue
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 32)
        except OSError:
            continue
        # struct tcp_info: u8 state, 7 more bytes, then u32 rto, ato, snd_mss, rcv_mss,
        # unacked (a listener's accept queue), sacked (its backlog).
        state, queued = struct.unpack_from("B7x16xI", info)
        if state == _LISTEN:
            waiting += queued
    return waiting


def run_workers(
    options: dict[str, Any],
    workers: int,
    worker_app: Callable[[socket.socket], Any],
    probe_port: int | None = None,
) -> int:
    """Serve `gateway.server.app:app_factory` in `workers` processes, or with a probe
    port `worker_app(listener)` (gateway.server.app.WorkerApp); returns the exit code."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    target = "gateway.server.app:app_factory"
    os.environ[WORKERS_ENV] = str(workers)  # spawned workers inherit it
    if not reuse_port_supported():
        uvicorn.run(target, factory=True, workers=workers, **options)
        return 0
    host, port = options["host"], options["port"]
    try:
        sockets, probe = reserve_all(host, port, probe_port)
    except OSError as exc:
        logger.error("cannot listen on %s: %s", listening(host, port, probe_port), exc)
        return STARTUP_FAILURE
    # With a probe port, the factory carries its listener: pickled to each worker with it.
    app: Any = target if probe is None else worker_app(probe)
    config = uvicorn.Config(app, factory=True, workers=workers, **options)
    host, port = sockets[0].getsockname()[:2]
    announce(host, port, workers, probe_port)
    try:
        Multiprocess(config, sockets=sockets).run()
    finally:
        for sock in [*sockets, *([probe] if probe is not None else [])]:
            sock.close()
    return 0
