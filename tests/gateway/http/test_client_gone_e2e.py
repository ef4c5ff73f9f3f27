"""Who is blamed when an answer never comes, end to end: a client that leaves before the
first byte cancels the upstream call at once and blames nobody; a stream that keeps
sending keep-alive comments ends at its provider's `stream_timeout`, as a timeout of
the upstream's; a client that stops reading is dropped at `send_timeout`, as one
that left.

A real gateway process and the fake upstream. The provider's `timeout` is 30 s, far past
what any test here waits, so nothing below is the old per-request timeout at work.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import upstream_config
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream

AUTH = {"authorization": "Bearer test-key"}
HI = [{"role": "user", "content": "hi"}]

pytestmark = pytest.mark.usefixtures("fresh")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("client-gone-e2e")


@pytest.fixture(scope="module")
def gw(up: FakeUpstream, workdir: Path) -> Iterator[GatewayProcess]:
    config = upstream_config(up, selection={"exploration_rate": 0, "exploration_bonus": 0})
    config["providers"][0].update(timeout=30, stream_timeout=1)
    config["storage"] = {"url": f"sqlite:///{workdir / 'gw.db'}", "flush_interval": 0.1}
    with GatewayProcess(config, workdir) as process:
        yield process


def within(seconds: float, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s"
        time.sleep(0.02)


def set_within(event: threading.Event, seconds: float) -> bool:
    return event.wait(seconds)


def attempts(workdir: Path, request_id: str) -> list[dict[str, Any]]:
    """The stored attempts of one request (the writer flushes every 0.1 s)."""
    with sqlite3.connect(workdir / "gw.db") as conn:
        conn.row_factory = sqlite3.Row
        sql = "SELECT * FROM attempts WHERE request_id = ? ORDER BY id"
        return [dict(r) for r in conn.execute(sql, (request_id,))]


def stats(gw: GatewayProcess, model: str) -> dict[str, Any]:
    rows = httpx.get(gw.url + "/performance", params={"limit": 1000}, timeout=10).json()["data"]
    [row] = [r for r in rows if r["model"] == model and r["conversation_type"] == "text-to-text"]
    return row


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_before_the_first_byte_cancels_the_upstream_and_blames_nobody(
    gw: GatewayProcess, up: FakeUpstream, workdir: Path, stream: bool
) -> None:
    up.behave("gamma-up", delay=25)  # answers in 25 s, if anyone still waits
    body = {"model": "gamma", "messages": HI, "stream": stream}
    rid = f"leaves-{stream}"
    headers = {**AUTH, "x-request-id": rid}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=0.5)
    # The client's timeout closed its connection: the upstream's follows at once.
    assert set_within(up.disconnected, 5), "the upstream request was not cancelled"

    within(5, lambda: bool(attempts(workdir, rid)))
    [row] = attempts(workdir, rid)
    assert row["error_class"] == "client_gone"
    assert row["counts_as_failure"] == 0 and row["ok"] == 0
    assert row["http_status"] == 499  # "client closed request", as nginx logs it
    assert stats(gw, "gamma")["failures"] == 0  # not the model's failure
    assert len(up.calls("/chat/completions")) == 1  # and no other model was tried

    up.behaviours.clear()  # the pool is sound after it: nothing half-read was reused
    resp = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=10)
    assert resp.status_code == 200


def test_a_stream_of_keep_alives_ends_at_stream_timeout_as_the_upstreams_timeout(
    gw: GatewayProcess, up: FakeUpstream, workdir: Path
) -> None:
    # After its first word, a comment every 0.2 s, forever: never silent, never done.
    up.behave("beta-up", content="first second", keep_alive_every=0.2)
    body = {"model": "beta", "messages": HI, "stream": True}
    headers = {**AUTH, "x-request-id": "keeps-alive"}
    began = time.monotonic()
    with httpx.stream(
        "POST", gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=20
    ) as resp:
        assert resp.status_code == 200
        events = [line for line in resp.iter_lines() if line.startswith("data: ")]
    elapsed = time.monotonic() - began
    assert 0.9 < elapsed < 10  # the 1 s stream_timeout, not the 30 s timeout nor forever
    first, error, done = events
    assert orjson.loads(first[6:])["choices"][0]["delta"]["content"] == "first"
    assert "stream_timeout" in orjson.loads(error[6:])["error"]["message"]
    assert done == "data: [DONE]"
    assert set_within(up.disconnected, 5), "the upstream stream was not closed"

    within(5, lambda: bool(attempts(workdir, "keeps-alive")))
    [row] = attempts(workdir, "keeps-alive")
    assert row["error_class"] == "timeout" and row["counts_as_failure"] == 1
    assert stats(gw, "beta")["failures"] == 1


def test_a_client_that_leaves_a_silent_stream_after_a_large_body_is_heard_at_once(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess]
) -> None:
    # The server paused reading while the body's last 64 KiB and more waited for the
    # handler, and nothing resumed it: the client's leaving went unread until the next
    # write, and an upstream sending only comments (or thinking) never brings one.
    upstream.behave("beta-up", keep_alive_every=0.05)  # a first chunk, then comments only
    server = {"api_keys": ["test-key"], "max_body_bytes": 1 << 20}
    gw = start_gateway(upstream_config(upstream, server=server))
    said = [{"role": "user", "content": "word " * 60_000}]  # 300 KB
    body = {"model": "beta", "messages": said, "stream": True}
    url = gw.url + "/v1/chat/completions"
    with httpx.stream("POST", url, json=body, headers=AUTH, timeout=20) as resp:
        assert resp.status_code == 200
        assert next(line for line in resp.iter_lines() if line.startswith("data: "))
    assert set_within(upstream.disconnected, 5), "the client's leaving was not heard"


def test_a_client_that_stops_reading_is_dropped_at_send_timeout_and_blames_nobody(
    up: FakeUpstream, tmp_path: Path
) -> None:
    """A client that takes nothing of a long stream while the gateway's buffer for it is
    full is disconnected after `send_timeout`, not held for as long as it likes; the
    attempt is not the model's failure (as for a client that leaves mid-stream)."""
    config = upstream_config(up, selection={"exploration_rate": 0, "exploration_bonus": 0})
    config["server"]["send_timeout"] = 0.5
    config["storage"] = {"url": f"sqlite:///{tmp_path / 'gw.db'}", "flush_interval": 0.1}
    # ~30 MB of events: far more than the socket buffers between the two hold.
    up.behave("alpha-up", content=" ".join(f"w{i:06d}" for i in range(200_000)))
    body = orjson.dumps({"model": "alpha", "messages": HI, "stream": True})
    with GatewayProcess(config, tmp_path) as gw:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", gw.port))
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
            b"Authorization: Bearer test-key\r\nX-Request-Id: stops-reading\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        got = sock.recv(4096)
        assert got.startswith(b"HTTP/1.1 200")  # then it reads no more, for a while
        within(10, lambda: bool(attempts(tmp_path, "stops-reading")))
        [row] = attempts(tmp_path, "stops-reading")
        assert row["ok"] == 1 and row["counts_as_failure"] == 0
        assert stats(gw, "alpha")["failures"] == 0
        logs = [orjson.loads(x) for x in gw.logs().splitlines() if x.startswith("{")]
        assert [x["cause"] for x in logs if x.get("event") == "inbound_limit"] == ["send_timeout"]
        sock.settimeout(10)
        with contextlib.suppress(ConnectionResetError):  # what was buffered, then the close
            while chunk := sock.recv(1 << 20):
                got += chunk
        sock.close()
    assert len(got) < 15_000_000 and b"[DONE]" not in got  # cut well before its end
