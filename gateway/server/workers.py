"""Several worker processes, each accepting on its own SO_REUSEPORT socket.

uvicorn's workers share one listening socket, and whichever wakes first accepts a whole
burst of new connections. Clients that keep their connections (SDK pools, proxies in
front, wrk) then stay on that one worker: with 50 keep-alive connections one of two
workers served 98 % of the requests, and two workers were no faster than one. With a
listening socket per worker, bound with SO_REUSEPORT, the kernel spreads new connections
over the workers by their address hash.

uvicorn's supervisor stays in charge (restarting dead workers, SIGHUP, TTIN/TTOU): the
socket it hands to every worker it spawns is a `ReusePortSocket`, which the parent binds
but never listens on, and whose pickled form opens a fresh listener in the worker.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import Any

logger = logging.getLogger("uvicorn.error")

STARTUP_FAILURE = 3  # uvicorn's exit code when it cannot start
WORKERS_ENV = "GATEWISE_WORKERS"  # tells each worker how many serve the port


def announce(host: str, port: int, workers: int = 1) -> None:
    """The one line a person starting the gateway looks for: where it listens (printed,
    not logged: the log level may hide it, and it is not an event to collect)."""
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}"
    served = f"{workers} workers" if workers > 1 else "serving"
    print(
        f"Gatewise: {served} on {url} (OpenAI API at {url}/v1, dashboard at "
        f"{url}/model-performance)",
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


def run_workers(options: dict[str, Any], workers: int) -> int:
    """Serve `gateway.server.app:app_factory` in `workers` processes; returns the exit code."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    target = "gateway.server.app:app_factory"
    os.environ[WORKERS_ENV] = str(workers)  # spawned workers inherit it
    if not reuse_port_supported():
        uvicorn.run(target, factory=True, workers=workers, **options)
        return 0
    config = uvicorn.Config(target, factory=True, workers=workers, **options)
    try:
        sock = reserve(config.host, config.port)
    except OSError as exc:
        logger.error("cannot listen on %s:%s: %s", config.host, config.port, exc)
        return STARTUP_FAILURE
    host, port = sock.getsockname()[:2]
    announce(host, port, workers)
    try:
        Multiprocess(config, sockets=[sock]).run()
    finally:
        sock.close()
    return 0
