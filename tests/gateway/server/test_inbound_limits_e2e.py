"""Inbound limits against a real `gatewise serve`, with raw sockets (issue 17, items 1-2).

Each test is an attack the issue measured: silent connections held forever, a head
trickled byte by byte, a 100 KB header, 10,000 headers, a 128 MiB header stream, and
connections past what the worker can hold. Timeouts are short in these configurations
(0.5 s); nothing sleeps: a test waits for the gateway to close a socket, with a deadline.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from tests.gateway.server.test_workers import LISTEN, port_of, tcp_table
from tests.support.gateway import GatewayProcess

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"


def config(**server: Any) -> dict[str, Any]:
    return {
        "server": {"header_timeout": 0.5, "idle_timeout": 30, **server},
        "providers": [{"name": "mock", "type": "mock"}],
        "models": [{"name": "m1", "provider": "mock", "mock": {"latency_ms": 0}}],
        "routes": [{"name": "auto", "models": ["m1"]}],
    }


def wait_until_accepted(port: int) -> None:
    """Until no listening socket on `port` has a connection waiting to be accepted (the
    rx_queue of its row in /proc/net/tcp)."""
    deadline = time.monotonic() + 10
    while any(
        int(row[4].split(":")[1], 16)
        for row in tcp_table()
        if port_of(row[1]) == port and row[3] == LISTEN
    ):
        assert time.monotonic() < deadline, "connections left waiting to be accepted"
        time.sleep(0.01)  # polling the kernel's queue, not waiting for time


def connect(gw: GatewayProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", gw.port), timeout=10)


def until_closed(sock: socket.socket, within: float = 10) -> bytes:
    """Everything the gateway sends until it closes the connection (fails at `within`)."""
    sock.settimeout(within)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the gateway kept the connection open for {within} s; got {data[:200]!r}")
    return data


def response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response read off a kept-alive connection: status, headers, body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def parse(data: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers, orjson.loads(body)


def healthy(gw: GatewayProcess) -> bool:
    with connect(gw) as sock:
        sock.sendall(HEALTHZ)
        return response(sock)[0] == 200


def inbound_lines(gw: GatewayProcess) -> list[dict[str, Any]]:
    lines = [orjson.loads(line) for line in gw.logs().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == "inbound_limit"]


@pytest.mark.parametrize("workers", [1, 2])
def test_silent_connections_are_closed_at_the_header_timeout(
    start_gateway: Callable[..., GatewayProcess], workers: int
) -> None:
    gw = start_gateway(config(), args=["--workers", str(workers)])
    started = time.monotonic()
    silent = [connect(gw) for _ in range(30)]
    assert healthy(gw)  # served meanwhile
    for sock in silent:
        assert until_closed(sock, within=5) == b""  # closed without an unasked-for answer
        sock.close()
    elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 5
    # 30 connections closed: one line per cause and worker, not one per connection.
    lines = [line for line in inbound_lines(gw) if line["cause"] == "header_timeout"]
    assert 1 <= len(lines) <= workers, lines
    assert lines[0]["level"] == "warning" and lines[0]["count"] == 1 and lines[0]["peer"]


def test_a_head_trickled_byte_by_byte_is_cut_at_the_deadline_not_per_byte(
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    gw = start_gateway(config())
    head = b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Slow: " + b"a" * 1000 + b"\r\n\r\n"
    with connect(gw) as sock:
        started = time.monotonic()
        sent = 0
        while sent < len(head):
            sock.sendall(head[sent : sent + 1])  # a byte every 20 ms, well within any
            sent += 1  # per-read timeout: only a deadline for the whole head cuts it
            if select.select([sock], [], [], 0.02)[0]:
                break
        answered = time.monotonic() - started
        status, headers, body = parse(until_closed(sock))
    assert sent < len(head) and 0.4 < answered < 3
    assert status == 408 and headers["connection"] == "close"
    assert body["error"]["code"] == "request_timeout"
    assert healthy(gw)


def trickle(sock: socket.socket, data: bytes) -> int:
    """Send `data` a byte every 20 ms until the gateway answers or closes; returns the
    bytes sent."""
    sent = 0
    while sent < len(data):
        try:
            sock.sendall(data[sent : sent + 1])
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += 1
        if select.select([sock], [], [], 0.02)[0]:
            break
    return sent


CHAT = b'{"model":"m1","messages":[{"role":"user","content":"hi"}]}'


MESSAGE = b'{"model":"m1","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}'


def chat_head(length: int, key: bool = True, path: bytes = b"/v1/chat/completions") -> bytes:
    auth = b"Authorization: Bearer sk-body-test\r\n" if key else b""
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: gw\r\n" + auth
        + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % length
    )  # fmt: skip


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_a_body_trickled_after_its_head_is_cut_at_the_body_timeout_not_per_byte(
    start_gateway: Callable[..., GatewayProcess], api: str
) -> None:
    """A slow POST: the head whole, the body a byte at a time. Cut with 408 at the
    deadline, in the shape of the API asked, never served on what arrived of it."""
    gw = start_gateway(config(api_keys=["sk-body-test"], body_timeout=0.5))
    path, valid = (
        (b"/v1/messages", MESSAGE) if api == "anthropic" else (b"/v1/chat/completions", CHAT)
    )
    padded = valid + b" " * 1000  # valid JSON long before its declared end
    with connect(gw) as sock:
        sock.sendall(chat_head(len(padded), path=path))
        started = time.monotonic()
        sent = trickle(sock, padded)
        answered = time.monotonic() - started
        status, headers, body = parse(until_closed(sock))
    assert sent < len(padded) and 0.4 < answered < 3
    assert status == 408 and headers["connection"] == "close"
    if api == "anthropic":
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    else:
        assert body["error"]["code"] == "request_timeout"
    assert "body" in body["error"]["message"]
    [line] = [line for line in inbound_lines(gw) if line["cause"] == "body_timeout"]
    assert line["level"] == "warning" and line["peer"]
    # Not served on the part that arrived: no attempt of any model.
    assert gw_attempts(gw) == 0
    assert healthy(gw)


def test_a_client_answered_before_its_body_cannot_hold_the_connection_by_trickling_it(
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    """A stranger's request is refused (401) before its body is read; trickling the rest
    of that body held the connection for as long as the stranger liked."""
    gw = start_gateway(config(api_keys=["sk-body-test"], body_timeout=0.5))
    padded = CHAT + b" " * 1000
    with connect(gw) as sock:
        sock.sendall(chat_head(len(padded), key=False) + padded[:10])
        status, _, _ = response(sock)
        assert status == 401
        started = time.monotonic()
        trickle(sock, padded[10:])
        assert until_closed(sock) == b""  # the 401 stands; nothing more is said
        assert time.monotonic() - started < 3
    assert healthy(gw)


def test_a_body_sent_in_pieces_within_the_deadline_is_served(
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    gw = start_gateway(config(api_keys=["sk-body-test"], body_timeout=5))
    with connect(gw) as sock:
        sock.sendall(chat_head(len(CHAT)) + CHAT[:10])
        for start in (10, 30):
            assert not select.select([sock], [], [], 0.05)[0]  # nothing answered yet
            sock.sendall(CHAT[start : start + 20] if start == 10 else CHAT[start:])
        status, _, body = response(sock)
    assert status == 200
    assert orjson.loads(body)["choices"][0]["message"]["content"]


def gw_attempts(gw: GatewayProcess) -> int:
    """Attempts of any model this gateway recorded (its performance API)."""
    resp = httpx.get(gw.url + "/performance", timeout=10)
    assert resp.status_code == 200, resp.text
    return sum(row["requests"] for row in resp.json()["data"])


def test_a_kept_alive_connection_gets_a_fresh_deadline_for_each_head(
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    gw = start_gateway(config(idle_timeout=1))
    with connect(gw) as sock:
        for _ in range(3):  # 0.9 s in all, past the 0.5 s header timeout: each head
            # counts from its own first byte, and waiting between them is idle time
            sock.sendall(HEALTHZ)
            assert response(sock)[0] == 200
            assert not select.select([sock], [], [], 0.3)[0]
        started = time.monotonic()
        assert until_closed(sock) == b""  # idle past idle_timeout: closed, silently
        assert time.monotonic() - started < 3
        # A kept-alive connection that starts a head and stalls is cut like a new one.
    with connect(gw) as sock:
        sock.sendall(HEALTHZ)
        assert response(sock)[0] == 200
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        status, _, body = parse(until_closed(sock))
        assert status == 408 and body["error"]["code"] == "request_timeout"


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"X-Big: " + b"a" * 100_000 + b"\r\n", id="a 100 KB header"),
        pytest.param(b"".join(b"X-H%d: v\r\n" % i for i in range(10_000)), id="10,000 headers"),
    ],
)
def test_oversized_heads_get_431_in_openai_error_shape(
    start_gateway: Callable[..., GatewayProcess], head: bytes
) -> None:
    gw = start_gateway(config())  # the default limits: 64 KiB, 100 headers
    with connect(gw) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n" + head + b"\r\n")
        status, headers, body = parse(until_closed(sock))
    assert status == 431 and headers["connection"] == "close"
    assert headers["content-type"] == "application/json"
    assert headers["x-request-id"].startswith("req_")  # as on every answer
    assert headers["x-content-type-options"] == "nosniff"
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "request_header_fields_too_large"
    assert healthy(gw)


def test_a_128_mib_header_stream_is_refused_early(
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    gw = start_gateway(config())
    chunk = b"a" * 65536
    sent = 0
    with connect(gw) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Bomb: ")
        try:
            while sent < 128 * 1024 * 1024:
                sent += sock.send(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
    # Refused at 64 KiB and a little read after it; the rest is what the kernels buffer.
    assert sent < 16 * 1024 * 1024
    assert healthy(gw)


def test_a_large_body_right_behind_a_small_head_is_not_mistaken_for_a_large_head(
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    gw = start_gateway(config(max_header_bytes=4096))
    content = "x" * 200_000  # arrives in the same reads as the head
    body = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": content}]})
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body
    with connect(gw) as sock:
        for _ in range(2):  # and the next request on the connection is a head again
            sock.sendall(request)
            status, _, reply = response(sock)
            assert status == 200, reply
            assert orjson.loads(reply)["object"] == "chat.completion"


def test_past_max_connections_a_new_connection_is_refused_and_open_ones_are_served(
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    gw = start_gateway(config(header_timeout=2, max_connections=10))
    normal = connect(gw)
    normal.sendall(HEALTHZ)
    assert response(normal)[0] == 200
    silent = [connect(gw) for _ in range(9)]
    # The worker holds 10 once it has accepted them all: over its several listening
    # sockets, a later connection may otherwise be accepted before an earlier one.
    wait_until_accepted(gw.port)

    for _ in range(3):
        with connect(gw) as sock:
            sock.sendall(HEALTHZ)
            status, headers, body = parse(until_closed(sock))
        assert status == 503 and headers["retry-after"] == "1"
        assert headers["connection"] == "close"
        assert body["error"]["code"] == "too_many_connections"
        assert body["error"]["type"] == "server_error"

    normal.sendall(HEALTHZ)  # a client already connected is still served
    assert response(normal)[0] == 200

    for sock in silent:  # the silent ones go at the header timeout; then new clients come in
        assert until_closed(sock) == b""
        sock.close()
    assert healthy(gw)
    normal.close()
    lines = [line for line in inbound_lines(gw) if line["cause"] == "too_many_connections"]
    assert len(lines) == 1 and lines[0]["count"] == 1  # three refusals, one line
