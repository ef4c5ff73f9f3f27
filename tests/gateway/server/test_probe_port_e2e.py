"""The probe port (`gatewise serve --probe-port`) against a real gateway, with raw sockets
and the openai SDK: it answers health, readiness and metrics, nothing else, and it is
answered when the clients' port is full."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from gateway.server.probes import PROBE_SPARE
from gateway.server.workers import STARTUP_FAILURE
from tests.conftest import upstream_config
from tests.gateway.server.test_cli import SHIPPED, run
from tests.gateway.server.test_inbound_limits_e2e import (
    HEALTHZ,
    config,
    connect,
    parse,
    response,
    until_closed,
    wait_until_accepted,
)
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, free_port

HI = [{"role": "user", "content": "hi"}]


def probed(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


@pytest.mark.parametrize("workers", [1, 2])
def test_the_probe_port_answers_health_readiness_and_metrics_and_nothing_else(
    start_gateway: Callable[..., GatewayProcess], workers: int
) -> None:
    port = free_port()
    gw = start_gateway(config(), args=["--probe-port", str(port), "--workers", str(workers)])
    probes = f"http://127.0.0.1:{port}"
    assert httpx.get(probes + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(probes + "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert "gatewise_open_connections" in httpx.get(probes + "/metrics").text

    on_probes = openai.OpenAI(base_url=probes + "/v1", api_key="none", max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        on_probes.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "hi"}]
        )
    assert "probe port answers only" in info.value.message
    assert httpx.get(probes + "/model-performance").status_code == 404

    # The clients' port serves as ever.
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="none", max_retries=0)
    reply = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content
    assert "Traceback" not in gw.logs()


def test_past_max_connections_probes_are_still_answered_up_to_a_bound(
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    port = free_port()
    gw = start_gateway(
        config(header_timeout=10, max_connections=4), args=["--probe-port", str(port)]
    )
    silent = [connect(gw) for _ in range(4)]
    wait_until_accepted(gw.port)
    with connect(gw) as sock:  # the clients' port is full
        sock.sendall(HEALTHZ)
        status, _, body = parse(until_closed(sock))
        assert status == 503 and body["error"]["code"] == "too_many_connections"

    held = []
    for _ in range(PROBE_SPARE):  # kept-alive probes, each answered, all held open
        sock = probed(port)
        sock.sendall(HEALTHZ)
        assert response(sock)[0] == 200
        held.append(sock)
    with probed(port) as sock:  # one more is past the probes' own bound
        sock.sendall(HEALTHZ)
        status, _, body = parse(until_closed(sock))
        assert status == 503 and body["error"]["code"] == "too_many_connections"

    held.pop().close()
    deadline = time.monotonic() + 10
    while True:  # once the worker hears of the close, a probe comes in again
        with probed(port) as sock:
            sock.sendall(HEALTHZ)
            if response(sock)[0] == 200:
                break
        assert time.monotonic() < deadline
    for sock in held + silent:
        sock.close()


def test_a_taken_probe_port_stops_the_start_with_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        probe = str(taken.getsockname()[1])
        port = str(free_port())
        serve = ["--config", str(SHIPPED), "--port", port, "--probe-port", probe]
        done = run("serve", *serve, cwd=tmp_path)
    assert done.returncode == STARTUP_FAILURE
    assert f"cannot listen on 127.0.0.1:{port} and probe port {probe}" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("probe", ["0", "70000", "same"])
def test_a_probe_port_that_is_not_a_port_of_its_own_is_refused(tmp_path: Path, probe: str) -> None:
    port = str(free_port())
    serve = ["--config", str(SHIPPED), "--port", port]
    done = run("serve", *serve, "--probe-port", port if probe == "same" else probe, cwd=tmp_path)
    assert done.returncode == 2
    assert "--probe-port must be a port of its own" in done.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_while_a_worker_drains_its_probes_say_stopping_and_alive_until_it_is_gone(
    upstream: FakeUpstream, tmp_path: Path, workers: int
) -> None:
    hold = threading.Event()  # the upstream answers once the test lets it
    held = upstream.behave("alpha-up", content="drained whole", hold=hold).held
    config = upstream_config(upstream, selection={"exploration_rate": 0})
    config["server"]["shutdown_timeout"] = 60
    port = free_port()
    args = ["--probe-port", str(port), "--workers", str(workers)]
    gw = GatewayProcess(config, tmp_path, args=args).start()
    probes = f"http://127.0.0.1:{port}"
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="test-key", max_retries=0)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            answer = pool.submit(client.chat.completions.create, model="alpha", messages=HI)
            assert held.wait(10)
            assert httpx.get(probes + "/readyz").json()["status"] == "ready"
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGTERM)

            deadline = time.monotonic() + 10
            while (ready := httpx.get(probes + "/readyz")).status_code == 200:
                assert time.monotonic() < deadline, "readiness never said the worker stops"
            assert ready.status_code == 503 and ready.json() == {"status": "stopping"}
            health = httpx.get(probes + "/healthz")
            assert health.status_code == 200 and health.json() == {"status": "ok"}

            hold.set()  # the answer under way ends whole, and then the worker goes
            assert answer.result(10).choices[0].message.content == "drained whole"
        gw.proc.wait(20)  # gone (by the signal uvicorn raises again once it has stopped)
        with pytest.raises(httpx.ConnectError):
            httpx.get(probes + "/healthz")
    finally:
        hold.set()
        gw.stop()
    assert "Traceback" not in gw.logs()
