"""Stopping a gateway with answers under way, end to end: SIGTERM to a real gateway
process (one worker, and two under the supervisor) while real SDK clients wait on the
fake upstream. What finishes within `server.shutdown_timeout` finishes whole; at the
deadline every other answer ends in its API's shape, as an error the client can retry
on, and is stored as cut by the gateway, blaming no model.
"""

from __future__ import annotations

import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from tests.conftest import upstream_config
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream

HI: list[Any] = [{"role": "user", "content": "hi"}]
DEADLINE = 2.0  # server.shutdown_timeout
END_GRACE = 5.0  # uvicorn's own cut comes this long after it (gateway/server/protocol.py)


def attempts(db: Path) -> dict[str, dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return {r["request_id"]: dict(r) for r in conn.execute("SELECT * FROM attempts")}


def within(seconds: float, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s"
        time.sleep(0.02)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=8) as executor:
        yield executor


@pytest.mark.parametrize("workers", [1, 2])
def test_answers_under_way_finish_and_the_rest_end_as_errors_to_retry_at_the_deadline(
    upstream: FakeUpstream, tmp_path: Path, pool: ThreadPoolExecutor, workers: int
) -> None:
    # beta streams a word, then keep-alive comments forever; alpha's second word comes
    # 0.2 s after its first; gamma answers a whole reply in 30 s.
    upstream.behave("beta-up", content="first second", keep_alive_every=0.2)
    upstream.behave("alpha-up", content="one two three", pause_after_first=0.2)
    upstream.behave("gamma-up", delay=30)
    config = upstream_config(upstream, selection={"exploration_rate": 0, "exploration_bonus": 0})
    config["server"]["shutdown_timeout"] = DEADLINE
    config["providers"][0].update(timeout=60, stream_timeout=60)
    db = tmp_path / "gw.db"
    config["storage"] = {"url": f"sqlite:///{db}", "flush_interval": 0.1}
    gw = GatewayProcess(config, tmp_path, args=["--workers", str(workers)]).start()
    try:
        gpt = openai.OpenAI(base_url=gw.url + "/v1", api_key="test-key", max_retries=0)
        claude = anthropic.Anthropic(base_url=gw.url, api_key="test-key", max_retries=0)
        begun = threading.Barrier(6)  # four streams have their first event, a body is
        # under way, and the test

        def openai_stream(model: str, rid: str) -> str:
            stream = gpt.chat.completions.create(
                model=model, messages=HI, stream=True, extra_headers={"x-request-id": rid}
            )
            words = []
            for i, chunk in enumerate(stream):
                if chunk.choices and chunk.choices[0].delta.content:
                    words.append(chunk.choices[0].delta.content)
                if i == 0:
                    begun.wait(10)
            return "".join(words)

        def raw_stream(rid: str) -> list[str]:
            body = {"model": "beta", "messages": HI, "stream": True}
            headers = {"authorization": "Bearer test-key", "x-request-id": rid}
            url = gw.url + "/v1/chat/completions"
            with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as resp:
                lines = resp.iter_lines()
                first = next(lines)
                begun.wait(10)
                # A whole chunked body: httpx raises on a connection cut mid-stream.
                return [first, *(line for line in lines if line)]

        def anthropic_stream(rid: str) -> str:
            with claude.messages.stream(
                model="beta", max_tokens=20, messages=HI, extra_headers={"x-request-id": rid}
            ) as stream:
                text = stream.text_stream
                words = [next(text)]
                begun.wait(10)
                words.extend(text)
                return "".join(words)

        def reply(rid: str) -> Any:
            return gpt.chat.completions.create(
                model="gamma", messages=HI, extra_headers={"x-request-id": rid}
            )

        def slow_body() -> bytes:
            """A request whose body is still arriving at the deadline."""
            body = b'{"model":"alpha","messages":[]}'
            head = (
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
                b"Authorization: Bearer test-key\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % (len(body) + 1)
            )
            with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as sock:
                sock.sendall(head + body)  # all but its last byte
                begun.wait(10)
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
                return data

        finishing = pool.submit(openai_stream, "alpha", "finishing")
        partial = pool.submit(slow_body)
        cut = pool.submit(openai_stream, "beta", "cut")
        raw = pool.submit(raw_stream, "raw")
        claude_cut = pool.submit(anthropic_stream, "claude-cut")
        waiting = pool.submit(reply, "waiting")
        begun.wait(10)
        within(10, lambda: "gamma-up" in upstream.models_called())

        assert gw.proc is not None
        stopped_at = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)

        # Within the deadline: alpha's stream ends whole.
        assert finishing.result(timeout=10) == "one two three"
        # At it: the rest end as errors in their API's shape, each with its reason.
        with pytest.raises(openai.APIError, match="shutting down") as stream_error:
            cut.result(timeout=DEADLINE + 10)
        assert not isinstance(stream_error.value, openai.APIConnectionError)
        first, error, done = raw.result(timeout=10)
        assert orjson.loads(first[6:])["choices"][0]["delta"]["content"] == "first"
        assert orjson.loads(error[6:])["error"]["code"] == "shutting_down"
        assert done == "data: [DONE]"
        with pytest.raises(anthropic.APIStatusError, match="shutting down") as claude_error:
            claude_cut.result(timeout=10)
        assert claude_error.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
        with pytest.raises(openai.APIStatusError) as refused:
            waiting.result(timeout=10)
        assert refused.value.status_code == 503
        assert refused.value.code == "shutting_down"
        assert refused.value.response.headers["retry-after"] == "1"
        head, _, rest = partial.result(timeout=10).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in head.lower()
        assert orjson.loads(rest)["error"]["code"] == "shutting_down"
        elapsed = time.monotonic() - stopped_at
        assert elapsed > DEADLINE - 0.5

        # Then it exits, without waiting for uvicorn's own cut, and logs no traceback.
        gw.proc.wait(timeout=DEADLINE + END_GRACE + 10)
        assert time.monotonic() - stopped_at < DEADLINE + END_GRACE - 1
        logs = gw.logs()
        assert "Traceback" not in logs
        assert "timeout graceful shutdown exceeded" not in logs
        # One line per worker says how many it ended, none per answer at warning.
        lines = [orjson.loads(line) for line in logs.splitlines() if line.startswith("{")]
        ended = [line for line in lines if line.get("event") == "shutdown_deadline"]
        assert sum(line["ended"] for line in ended) == 5
        assert all(line["level"] == "info" for line in lines if line["message"] == "attempt")
    finally:
        gw.stop()

    # Every answer was stored before it exited; none blamed a model.
    rows = attempts(db)
    assert rows["finishing"]["ok"] == 1
    for rid in ("cut", "raw", "claude-cut", "waiting"):
        assert rows[rid]["error_class"] == "gateway_stopped", rid
        assert rows[rid]["http_status"] == 503
        assert rows[rid]["counts_as_failure"] == 0


def test_a_stream_whose_head_went_early_ends_with_an_error_event_at_the_deadline(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    # beta's upstream never answers: the gateway's head and keep-alive comments are all
    # its client has had when the gateway stops (gateway/http/heartbeat.py, EarlyHead).
    hold = threading.Event()
    upstream.behave("beta-up", hold=hold)
    config = upstream_config(upstream, selection={"exploration_rate": 0, "exploration_bonus": 0})
    config["server"].update(shutdown_timeout=DEADLINE, stream_keepalive=0.2)
    config["providers"][0].update(timeout=60, stream_timeout=60)
    db = tmp_path / "gw.db"
    config["storage"] = {"url": f"sqlite:///{db}", "flush_interval": 0.1}
    gw = GatewayProcess(config, tmp_path).start()
    try:
        body = {"model": "beta", "messages": HI, "stream": True}
        headers = {"authorization": "Bearer test-key", "x-request-id": "early"}
        url = gw.url + "/v1/chat/completions"
        with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as resp:
            assert resp.status_code == 200
            lines = resp.iter_lines()
            assert next(line for line in lines if line) == ": keep-alive"
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGTERM)
            rest = [line for line in lines if line and not line.startswith(":")]
        error = orjson.loads(rest[0].removeprefix("data: "))["error"]
        assert error["code"] == "shutting_down" and "retry" in error["message"]
        assert rest[1:] == ["data: [DONE]"]
        gw.proc.wait(timeout=DEADLINE + END_GRACE + 10)
        assert "Traceback" not in gw.logs()
    finally:
        hold.set()
        gw.stop()
    row = attempts(db)["early"]
    assert row["error_class"] == "gateway_stopped" and row["counts_as_failure"] == 0
