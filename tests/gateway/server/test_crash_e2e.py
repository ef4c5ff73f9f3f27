"""kill -9, then a restart on the same store: what was acknowledged is still there.

A real gateway process and the fake upstream. The fleet's rounds and the writer's flushes
are set an interval apart that no test waits for, so what survives was stored when it
was acknowledged, not by a round that happened to run before the kill.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import upstream_config
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream

AUTH = {"authorization": "Bearer test-key"}
HI = [{"role": "user", "content": "hi"}]

Start = Callable[..., GatewayProcess]


def config(upstream: FakeUpstream, db: Path, flush_interval: float = 60.0) -> dict[str, Any]:
    cfg = upstream_config(upstream, selection={"exploration_rate": 0, "exploration_bonus": 0})
    for model in cfg["models"]:
        if model["name"] == "alpha":  # asked for by name, beta answers when it fails
            model["fallbacks"] = ["beta"]
    cfg["storage"] = {
        "url": f"sqlite:///{db}",
        "share_interval": 60,  # benches every 30 s: never within a test
        "flush_interval": flush_interval,
    }
    return cfg


def chat(gw: GatewayProcess, model: str = "alpha") -> httpx.Response:
    body = {"model": model, "messages": HI}
    return httpx.post(gw.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=10)


def benched(gw: GatewayProcess) -> set[str]:
    rows = httpx.get(gw.url + "/performance/blacklisted", timeout=10).json()["data"]
    return {row["model"] for row in rows}


def stored_benches(db: Path) -> set[str]:
    """The models the store has benched, as a restarted process would read them."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT key, data FROM state WHERE kind = 'blacklist'").fetchall()
    return {key for key, data in rows if (json.loads(data)["until"] or 0) > time.time()}


def test_a_bench_survives_kill_9_right_after_the_answer_that_caused_it(
    upstream: FakeUpstream, start_gateway: Start, tmp_path: Path
) -> None:
    db = tmp_path / "crash.db"
    gw = start_gateway(config(upstream, db))
    upstream.behave("alpha-up", status=500)
    for _ in range(3):
        assert chat(gw).headers["x-gatewise-model"] == "beta"
    gw.kill()  # at once: no round, no shutdown
    assert stored_benches(db) == {"alpha"}

    restarted = start_gateway(config(upstream, db))
    assert benched(restarted) == {"alpha"}
    assert chat(restarted).headers["x-gatewise-attempts"] == "1"  # alpha is not tried


def test_a_bench_begun_by_streams_failing_midway_survives_kill_9_right_after_the_last(
    upstream: FakeUpstream, start_gateway: Start, tmp_path: Path
) -> None:
    db = tmp_path / "crash.db"
    gw = start_gateway(config(upstream, db))
    upstream.behave("alpha-up", content="one two three", fail_after_chunks=1)
    body = {"model": "alpha", "messages": HI, "stream": True}
    for _ in range(3):
        with httpx.stream(
            "POST", gw.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=10
        ) as resp:
            lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]" and '"error"' in lines[-2]  # told of the failure
    gw.kill()  # right after the third failure's [DONE]
    assert stored_benches(db) == {"alpha"}

    restarted = start_gateway(config(upstream, db))
    assert benched(restarted) == {"alpha"}


def test_a_let_back_survives_kill_9_right_after_its_200(
    upstream: FakeUpstream, start_gateway: Start, tmp_path: Path
) -> None:
    db = tmp_path / "crash.db"
    gw = start_gateway(config(upstream, db))
    upstream.behave("alpha-up", status=500)
    for _ in range(3):
        chat(gw)
    assert stored_benches(db) == {"alpha"}  # what the let-back has to overwrite
    resp = httpx.delete(gw.url + "/performance/blacklisted/alpha", timeout=10)
    assert resp.status_code == 200 and resp.json()["cleared"] is True
    gw.kill()

    upstream.behaviours.clear()
    restarted = start_gateway(config(upstream, db))
    assert benched(restarted) == set()
    assert chat(restarted).headers["x-gatewise-model"] == "alpha"


def stored_answer(db: Path, response_id: str, within: float = 10.0) -> None:
    """Waits (polling, with a deadline) until the writer has flushed the answer."""
    deadline = time.monotonic() + within
    while True:
        with sqlite3.connect(db) as conn:
            sql = "SELECT 1 FROM responses WHERE response_id = ?"
            if conn.execute(sql, (response_id,)).fetchone():
                return
        assert time.monotonic() < deadline, "the answer was not flushed in time"
        time.sleep(0.05)


def rate(gw: GatewayProcess, response_id: str, score: int = 4) -> httpx.Response:
    body = {"response_id": response_id, "accuracy": score}
    return httpx.post(gw.url + "/v1/feedback", json=body, headers=AUTH, timeout=10)


def test_kill_9_loses_at_most_the_answers_of_the_last_flush_and_no_acknowledged_rating(
    upstream: FakeUpstream, start_gateway: Start, tmp_path: Path
) -> None:
    """What README.md states ("What a crash loses"), shown: a rated answer
    and its rating survive; an answer flushed survives and can be rated after; an answer
    not yet flushed when the process dies is lost, and rating it is a 404."""
    db = tmp_path / "crash.db"
    gw = start_gateway(config(upstream, db, flush_interval=0.2))
    rated = chat(gw).headers["x-gatewise-response-id"]
    assert rate(gw, rated).status_code == 200  # acknowledged: stored with its answer
    flushed = chat(gw).headers["x-gatewise-response-id"]
    stored_answer(db, flushed)
    gw.kill()

    # The same store with a writer that would not flush for a minute: the answer it gives
    # is in memory only when the process dies.
    gw = start_gateway(config(upstream, db))
    unflushed = chat(gw).headers["x-gatewise-response-id"]
    gw.kill()

    # (A rating of an unknown id waits one flush of the others' writers for it: short.)
    restarted = start_gateway(config(upstream, db, flush_interval=0.2))
    again = rate(restarted, rated, score=2)
    assert again.status_code == 200 and again.json()["replaced_previous"] is True
    assert rate(restarted, flushed).status_code == 200
    lost = rate(restarted, unflushed)
    assert lost.status_code == 404 and lost.json()["error"]["code"] == "response_not_found"
