"""A request pipelined behind a stream, against a real `gatewise serve`: the stream's
pieces are written from the upstream socket's callback (`write_body`), and uvicorn makes
the next request's cycle current as soon as its head is read. Those pieces once went to
the pipelined request's cycle, which failed the stream as its upstream's fault: any
client could bench a model by pipelining. Now the stream ends whole, then the next
request is answered, and no model is blamed; and a pipelined request's body deadline
starts with it, not while the answer ahead of it (which holds its reading) goes out."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.conftest import upstream_config
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream

BODY = b'{"model":"beta","messages":[{"role":"user","content":"hi"}],"stream":true}'
STREAM = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer test-key\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY)
) + BODY
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"


@pytest.fixture
def gw(upstream: FakeUpstream, tmp_path: Path) -> Iterator[GatewayProcess]:
    config = upstream_config(upstream)
    config["server"]["body_timeout"] = 1.0
    with GatewayProcess(config, tmp_path) as process:
        yield process


def read_until(sock: socket.socket, data: bytes, end: bytes) -> bytes:
    while end not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before {end!r}: {data[-300:]!r}"
        data += chunk
    return data


def test_a_request_pipelined_behind_a_stream_waits_for_it_to_end_whole(
    gw: GatewayProcess, upstream: FakeUpstream
) -> None:
    # Silent for a moment after its first chunk: the next request's head arrives then.
    upstream.behave("beta-up", content="one two three four", pause_after_first=0.5)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(STREAM)
        data = read_until(sock, b"", b"data: ")
        sock.sendall(HEALTHZ)
        data = read_until(sock, data, b'{"status":"ok"}')
    stream, _, health = data.partition(b"0\r\n\r\n")
    events = [line[6:] for line in stream.split(b"\n") if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(event) for event in events[:-1]]
    assert not [c for c in chunks if "error" in c]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "one two three four"
    assert health.startswith(b"HTTP/1.1 200 OK")

    deadline = time.monotonic() + 10
    while '"message":"attempt"' not in gw.logs():  # attempt lines are written within 0.2 s
        assert time.monotonic() < deadline
        time.sleep(0.05)
    attempt = next(line for line in gw.logs().splitlines() if '"message":"attempt"' in line)
    assert orjson.loads(attempt)["ok"] is True


def test_a_pipelined_requests_body_deadline_starts_with_it(
    gw: GatewayProcess, upstream: FakeUpstream
) -> None:
    # The stream is silent for longer than the body deadline after its first chunk.
    upstream.behave("beta-up", content="one two three four", pause_after_first=1.5)
    partial = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer test-key\r\n"
        b'Content-Length: 50\r\n\r\n{"mo'
    )
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(STREAM)
        data = read_until(sock, b"", b"data: ")
        sock.sendall(partial)  # and never the rest
        data = read_until(sock, data, b"request_timeout")
    stream, _, refused = data.partition(b"0\r\n\r\n")
    assert stream.rstrip().endswith(b"data: [DONE]")  # whole, before the refusal
    assert refused.startswith(b"HTTP/1.1 408")


def test_a_client_that_leaves_with_requests_pipelined_ends_them_quietly(
    gw: GatewayProcess, upstream: FakeUpstream
) -> None:
    """uvicorn marks only its newest cycle as disconnected, a pipelined request's: the
    answer under way ahead of it ended without a response, and uvicorn logged an error
    and wrote a 500 to the closed transport (a traceback for each such client)."""
    gate = threading.Event()
    alpha = upstream.behave("alpha-up", hold=gate)
    body = b'{"model":"alpha","messages":[{"role":"user","content":"hi"}]}'
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer test-key\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    ) + body
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(request + HEALTHZ)  # the second's head is read while the first waits
        assert alpha.held.wait(10)
    # Gone: the attempt is told as the client's leaving, and nothing else is said.
    deadline = time.monotonic() + 10
    while '"error_class":"client_gone"' not in gw.logs():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    gate.set()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(HEALTHZ)  # the worker goes on
        assert read_until(sock, b"", b'{"status":"ok"}').startswith(b"HTTP/1.1 200 OK")
    logs = gw.logs()
    assert "ASGI callable returned without starting response" not in logs
    assert "Traceback" not in logs
