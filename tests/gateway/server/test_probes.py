"""The probe port's server (gateway/server/probes.py) in process, over real sockets: it
answers while the worker's loop runs nothing else, tells a stuck loop from a busy one by
the loop's beats (on an injected clock), and has the worker's own app render /metrics on
the worker's loop."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from gateway.server.probes import PROBE_SPARE, STALLED_AFTER, Probes
from gateway.server.protocol import InboundLimits

READY = (200, b'{"status":"ready"}')


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock


class WorkerApp:
    """The worker's app, as far as the probe port asks it anything: /metrics."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.threads.append(threading.get_ident())
        body = b"gatewise_open_connections 3\n"
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def probes(
    listener: socket.socket,
    readiness: Callable[[], tuple[int, bytes]] = lambda: READY,
    clock: Callable[[], float] = time.monotonic,
    app: Any = None,
    scrape_timeout: float = 10.0,
    stopping: Callable[[], bool] = lambda: False,
) -> Probes:
    return Probes(
        listener,
        app or WorkerApp(),
        readiness,
        InboundLimits(max_connections=PROBE_SPARE, header_timeout=5),
        stopping=stopping,
        clock=clock,
        scrape_timeout=scrape_timeout,
    )


def get(sock: socket.socket, path: str, method: str = "GET") -> httpx.Response:
    """A blocking request: while it waits, the calling loop runs nothing."""
    port = sock.getsockname()[1]
    return httpx.request(method, f"http://127.0.0.1:{port}{path}", timeout=30)


def test_a_probe_is_answered_while_the_workers_loop_runs_nothing_but_python(
    listener: socket.socket,
) -> None:
    server = probes(listener)
    answers: list[httpx.Response] = []
    answered = threading.Event()

    def probe() -> None:
        answers.append(get(listener, "/healthz"))
        answered.set()

    async def worker() -> None:
        server.start()
        threading.Thread(target=probe).start()
        # The loop's thread keeps running Python, as a loop busy with thousands of streams
        # does, and turns the loop no more until the probe is answered.
        deadline = time.monotonic() + 30
        while not answered.is_set():
            assert time.monotonic() < deadline, "the probe waited for the worker's loop"
        await server.stop()

    asyncio.run(worker())
    assert answers[0].status_code == 200 and answers[0].json() == {"status": "ok"}


def test_a_loop_that_stops_beating_is_reported_stalled_and_recovers_when_it_beats(
    listener: socket.socket,
) -> None:
    now = [100.0]
    states = [READY, (503, b'{"status":"starting"}')]
    server = probes(listener, readiness=lambda: states[0], clock=lambda: now[0])

    async def worker() -> None:
        server.start()  # beats at 100.0; the blocking requests below keep it from beating again
        assert get(listener, "/healthz").json() == {"status": "ok"}
        ready = get(listener, "/readyz")
        assert ready.status_code == 200 and ready.json() == {"status": "ready"}

        now[0] += STALLED_AFTER - 0.5  # busy, but it beat within STALLED_AFTER
        assert get(listener, "/healthz").status_code == 200

        now[0] += 1.0
        for path in ("/healthz", "/readyz"):
            stalled = get(listener, path)
            assert stalled.status_code == 503
            assert stalled.json() == {"status": "stalled", "silent_seconds": STALLED_AFTER + 0.5}

        states.reverse()
        server.beat()  # the loop turned again: alive, and its readiness is news
        assert get(listener, "/healthz").status_code == 200
        starting = get(listener, "/readyz")
        assert starting.status_code == 503 and starting.json() == {"status": "starting"}
        await server.stop()

    asyncio.run(worker())


def test_readiness_says_stopping_at_once_when_the_server_begins_to_shut_down(
    listener: socket.socket,
) -> None:
    draining = [False]
    server = probes(listener, stopping=lambda: draining[0])

    async def worker() -> None:
        server.start()  # the blocking requests below keep the loop from beating again
        assert get(listener, "/readyz").status_code == 200
        draining[0] = True
        stopping = get(listener, "/readyz")
        assert stopping.status_code == 503 and stopping.json() == {"status": "stopping"}
        assert get(listener, "/healthz").status_code == 200  # draining is alive
        await server.stop()

    asyncio.run(worker())


def test_metrics_are_rendered_by_the_workers_app_on_its_loop(listener: socket.socket) -> None:
    app = WorkerApp()
    server = probes(listener, app=app)

    async def worker() -> None:
        server.start()
        scraped = await asyncio.to_thread(get, listener, "/metrics")  # the loop runs meanwhile
        assert scraped.status_code == 200
        assert scraped.text == "gatewise_open_connections 3\n"
        assert scraped.headers["content-type"] == "text/plain"
        await server.stop()

    asyncio.run(worker())
    assert app.threads == [threading.get_ident()]


def test_a_scrape_the_worker_cannot_render_in_time_gets_503(listener: socket.socket) -> None:
    server = probes(listener, scrape_timeout=0.2)

    async def worker() -> None:
        server.start()
        scraped = get(listener, "/metrics")  # blocking: the loop cannot render it
        assert scraped.status_code == 503
        assert scraped.json()["error"]["message"] == (
            "The worker did not render its metrics within 0.2 s."
        )
        await server.stop()

    asyncio.run(worker())


class FailingApp:
    """A worker app that fails a scrape, after its 500 (as Starlette's error middleware
    does) or before anything."""

    def __init__(self, answers_first: bool) -> None:
        self.answers_first = answers_first

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.answers_first:
            await send({"type": "http.response.start", "status": 500, "headers": []})
            await send({"type": "http.response.body", "body": b"Internal Server Error"})
        raise RuntimeError("the registry broke")


@pytest.mark.parametrize("answers_first", [True, False])
def test_a_scrape_the_workers_app_fails_gets_500_and_the_port_serves_on(
    listener: socket.socket, answers_first: bool, caplog: pytest.LogCaptureFixture
) -> None:
    server = probes(listener, app=FailingApp(answers_first))

    async def worker() -> None:
        server.start()
        scraped = await asyncio.to_thread(get, listener, "/metrics")
        assert scraped.status_code == 500
        assert get(listener, "/healthz").status_code == 200
        await server.stop()

    asyncio.run(worker())
    assert "the probe port's scrape failed" in caplog.text


def test_only_probes_are_answered_and_only_to_get(listener: socket.socket) -> None:
    server = probes(listener)

    async def worker() -> None:
        server.start()
        other = get(listener, "/v1/chat/completions", "POST")
        assert other.status_code == 404
        assert other.json()["error"]["code"] == "not_found"
        assert "answers only GET /healthz, /readyz and /metrics" in other.json()["error"]["message"]
        posted = get(listener, "/healthz", "POST")
        assert posted.status_code == 405 and posted.headers["allow"] == "GET, HEAD"
        head = get(listener, "/readyz", "HEAD")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["x-request-id"].startswith("req_")
        await server.stop()

    asyncio.run(worker())


def test_once_stopped_the_port_is_closed(listener: socket.socket) -> None:
    server = probes(listener)
    port = listener.getsockname()[1]

    async def worker() -> None:
        server.start()
        assert get(listener, "/healthz").status_code == 200
        await server.stop()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)

    asyncio.run(worker())
