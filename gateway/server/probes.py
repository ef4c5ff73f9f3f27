"""The probe port (`gatewise serve --probe-port`): health, readiness and metrics, answered
by a thread of the worker's own.

Why a thread: a worker busy with thousands of streams takes tens of milliseconds a turn
of its event loop, and a probe answered on that loop waits its turn: 78-100 ms at p99 on
a full core (bench/README.md, "Probes"), where Kubernetes gives a probe 1 s before it
counts a failure and restarts the worker, cutting every stream it holds. A busy worker
is alive. Here the probe port has an event loop of its own in its own thread, which waits
for the interpreter only (a switch interval, 5 ms, at a time), never for the worker's
loop to come round.

So that a stuck worker still fails its probes, the worker's loop beats: every BEAT
seconds it notes the time and what its /readyz would answer. The thread answers from the
last beat:

- /healthz: 200 while the beats come; 503 "stalled" once none came for STALLED_AFTER
  seconds: a loop that is stuck, not one that is busy;
- /readyz: the worker's /readyz as of its last beat (503 while starting), 503 "stopping"
  as soon as the server has begun to shut down (read at each probe), and 503 "stalled"
  as above;
- /metrics: the worker's own /metrics, its token checked there, rendered on the worker's
  loop: a scrape may wait its turn (up to SCRAPE_TIMEOUT), a probe does not;
- any other path: 404.

Connections are served by the clients' port's protocol with its limits (head and body
deadlines, head size), at most PROBE_SPARE at once; past that one is answered 503 and
closed. With several workers every worker's thread accepts from the one listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import uvicorn
import uvloop
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.server import ServerState

from gateway.http.errors import error_body
from gateway.http.request_id import request_id_of
from gateway.server.protocol import Inbound, InboundLimits, JoinedWritesProtocol

__all__ = [
    "BEAT",
    "PROBE_PATHS",
    "PROBE_SPARE",
    "SCRAPE_TIMEOUT",
    "STALLED_AFTER",
    "STOPPING",
    "Probes",
    "Readiness",
]

log = logging.getLogger("gatewise")

PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
PROBE_SPARE = 16  # probe connections open at once
BEAT = 1.0  # seconds between the worker loop's beats
# Seconds without a beat before the worker counts as stuck. A loop saturated by 9,500
# streams runs its timers 10-30 ms late (bench/README.md); ten seconds is a loop that
# runs nothing at all, which every client of the worker is waiting on.
STALLED_AFTER = 10.0
SCRAPE_TIMEOUT = 10.0  # Prometheus' own default scrape timeout

# What the worker's /readyz answers: its status and JSON body.
Readiness = Callable[[], tuple[int, bytes]]

_JSON = [(b"content-type", b"application/json")]
_OK = b'{"status":"ok"}'
_STARTING = b'{"status":"starting"}'
STOPPING = b'{"status":"stopping"}'


class Probes:
    """The probe port's server: `start` it on the worker's loop once the gateway has
    started, `stop` it there before the gateway stops."""

    def __init__(
        self,
        listener: socket.socket,
        app: ASGIApp,
        readiness: Readiness,
        limits: InboundLimits,
        *,
        stopping: Callable[[], bool] = lambda: False,
        idle_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        stalled_after: float = STALLED_AFTER,
        scrape_timeout: float = SCRAPE_TIMEOUT,
    ) -> None:
        self._listener = listener
        self._app = app  # the worker's, for /metrics
        self._readiness = readiness
        # Read by the thread at each /readyz: a flag's value, nothing the loop changes midway.
        self._stopping = stopping
        self._inbound = Inbound(limits, collects=False)
        self._idle_timeout = idle_timeout
        self._clock = clock
        self._stalled_after = stalled_after
        self._scrape_timeout = scrape_timeout
        # (when, readiness status, readiness body): replaced whole by each beat, so that
        # the thread reads one beat, never half of two. `start` beats before the thread runs.
        self._beat: tuple[float, int, bytes] = (clock(), 503, _STARTING)
        self._main: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the thread's, once it runs
        self._closing: asyncio.Future[None] | None = None
        self._stopped = False

    # -- on the worker's loop --------------------------------------------------------------
    def start(self, state: dict[str, Any] | None = None) -> None:
        """Beat now and every BEAT seconds, and serve the port from a thread. `state` is
        the lifespan's, given to the worker's app with each scrape as uvicorn would."""
        self._main = asyncio.get_running_loop()
        self._tick()
        self._thread = threading.Thread(
            target=self._run, args=(dict(state or {}),), name="gatewise-probes", daemon=True
        )
        self._thread.start()

    def beat(self) -> None:
        """Note that the worker's loop runs, and what its /readyz answers now."""
        status, body = self._readiness()
        self._beat = (self._clock(), status, body)

    def _tick(self) -> None:
        self.beat()
        assert self._main is not None
        self._timer = self._main.call_later(BEAT, self._tick)

    async def stop(self) -> None:
        """Stop answering: the port closes, and the probes open on it are ended."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._stopped = True  # before the thread's loop is read: one of the two sees the other
        loop, closing, thread = self._loop, self._closing, self._thread
        if loop is not None and closing is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # its loop ended meanwhile
                loop.call_soon_threadsafe(_resolve, closing)
        if thread is not None:
            await asyncio.to_thread(thread.join, 5.0)
        self._thread = None

    # -- on the thread ---------------------------------------------------------------------
    def _run(self, state: dict[str, Any]) -> None:
        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        self._closing = loop.create_future()
        self._loop = loop
        try:
            if not self._stopped:  # else `stop` came first, and may not have seen this loop
                loop.run_until_complete(self._serve(state))
        except Exception:
            log.exception("the probe port stopped")
        finally:
            loop.close()

    async def _serve(self, state: dict[str, Any]) -> None:
        config = uvicorn.Config(
            self._answer,
            interface="asgi3",
            lifespan="off",
            ws="none",
            log_config=None,
            proxy_headers=False,
            timeout_keep_alive=int(self._idle_timeout),
            headers=[("x-content-type-options", "nosniff")],
            server_header=False,
            date_header=False,
        )
        config.load()
        server_state = ServerState()
        server_state.default_headers = list(config.encoded_headers)
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.Protocol:
            return JoinedWritesProtocol(config, server_state, state, loop, inbound=self._inbound)

        server = await loop.create_server(protocol, sock=self._listener)
        assert self._closing is not None
        try:
            await self._closing
        finally:
            server.close()
            for connection in list(server_state.connections):
                connection.shutdown()

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if path not in PROBE_PATHS:
            message = "The probe port answers only GET /healthz, /readyz and /metrics."
            body = orjson.dumps(error_body(message, "invalid_request_error", "not_found"))
            await _send(scope, send, 404, body)
            return
        if path == "/metrics":
            await self._scrape(scope, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            message = f"{scope['method']} is not allowed on {path}; use GET."
            body = orjson.dumps(error_body(message, "invalid_request_error", "method_not_allowed"))
            await _send(scope, send, 405, body, [(b"allow", b"GET, HEAD")])
            return
        at, status, body = self._beat
        silent = self._clock() - at
        if silent > self._stalled_after:
            status = 503
            body = orjson.dumps({"status": "stalled", "silent_seconds": round(silent, 1)})
        elif path == "/healthz":
            status, body = 200, _OK
        elif self._stopping():
            status, body = 503, STOPPING
        await _send(scope, send, status, body)

    async def _scrape(self, scope: Scope, send: Send) -> None:
        """The worker's app answers it, on the worker's loop."""
        messages: list[Message] = []
        app = self._app

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def collect(message: Message) -> None:
            messages.append(message)

        async def render() -> None:
            # The probe connection's own extensions (its watch, its writer) stay here.
            await app({**scope, "extensions": {}}, receive, collect)

        assert self._main is not None
        try:
            running = asyncio.run_coroutine_threadsafe(render(), self._main)
        except RuntimeError:  # the worker's loop is closed: it is going
            await _send(scope, send, 503, _unavailable("The gateway is shutting down."))
            return
        try:
            await asyncio.wait_for(asyncio.wrap_future(running), self._scrape_timeout)
        except TimeoutError:
            running.cancel()
            message = f"The worker did not render its metrics within {self._scrape_timeout:g} s."
            await _send(scope, send, 503, _unavailable(message))
            return
        except Exception:  # what the worker's app raised, after its 500 if it sent one
            log.exception("the probe port's scrape failed")
            if not messages:
                body = orjson.dumps(error_body("Internal server error.", "server_error", None))
                await _send(scope, send, 500, body)
                return
        for sent in messages:
            await send(sent)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _unavailable(message: str) -> bytes:
    return orjson.dumps(error_body(message, "server_error", "service_unavailable"))


async def _send(
    scope: Scope,
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """A JSON answer, with the request id every answer of the gateway has."""
    lines = [
        *_JSON,
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id_of(scope).encode()),
        *(headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": lines})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
