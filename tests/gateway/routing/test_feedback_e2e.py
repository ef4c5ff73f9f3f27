"""Evaluation and feedback end to end: a real gateway process, a real upstream over HTTP
and the official openai SDK. Judging happens off the request path, so tests poll for it."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream

HI = [{"role": "user", "content": "hi"}]
KEY = {"authorization": "Bearer test-key"}


def config(upstream: FakeUpstream, db: Path) -> dict[str, Any]:
    return {
        "server": {"api_keys": ["test-key"]},
        "providers": [{"name": "up", "type": "openai", "base_url": upstream.url,
                       "api_key": "sk-upstream-secret-123456", "timeout": 5}],
        "models": [
            {"name": "model-a", "provider": "up", "upstream_model": "a-up",
             "priors": {"accuracy": 8}},
            {"name": "model-b", "provider": "up", "upstream_model": "b-up",
             "priors": {"accuracy": 6}},
        ],
        "routes": [{"name": "auto", "models": ["model-a", "model-b"],
                    "optimization": "accuracy"}],
        "selection": {"exploration_rate": 0, "exploration_bonus": 0, "score_refresh_seconds": 0},
        "storage": {"url": f"sqlite:///{db}", "flush_interval": 0.1},
    }  # fmt: skip


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "feedback.db"


@pytest.fixture
def gw(
    upstream: FakeUpstream, db: Path, start_gateway: Callable[..., GatewayProcess]
) -> GatewayProcess:
    return start_gateway(config(upstream, db))


@pytest.fixture
def client(gw: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="test-key", max_retries=0) as c:
        yield c


def wait_for(fetch: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = 5.0) -> Any:
    """Poll until `ok(fetch())`; the evaluator and the store writer run every fraction of
    a second, so this normally returns well within one second."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {value!r}")
        time.sleep(0.02)


def get(gw: GatewayProcess, path: str, **params: Any) -> Any:
    reply = httpx.get(gw.url + path, params=params, timeout=10)
    assert reply.status_code == 200, reply.text
    return reply.json()


def rate(
    gw: GatewayProcess, payload: dict[str, Any], headers: dict[str, str] = KEY
) -> httpx.Response:
    return httpx.post(gw.url + "/v1/feedback", json=payload, headers=headers, timeout=10)


def ask(client: openai.OpenAI, model: str) -> tuple[str, str]:
    """(response id, serving model) of one chat completion."""
    raw = client.chat.completions.with_raw_response.create(model=model, messages=HI)
    reply = raw.parse()
    assert raw.headers["x-gatewise-model"] == reply.model
    assert raw.headers["x-gatewise-response-id"] == reply.id
    return reply.id, reply.model


def truncated_body() -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-up-cut",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "a-up",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "length",
                    "logprobs": None,
                    "message": {"role": "assistant", "content": "Once upon a time there"},
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
        }
    )


# ---- automatic evaluation ----------------------------------------------------------------


def test_truncated_and_invalid_json_answers_are_flagged(
    client: openai.OpenAI, gw: GatewayProcess, upstream: FakeUpstream
) -> None:
    upstream.behave("a-up", body=truncated_body(), times=1)
    upstream.behave("b-up", content="Sure! Here it is: {name: Ada}", times=1)
    cut = client.chat.completions.create(model="model-a", messages=HI)
    assert cut.choices[0].finish_reason == "length"
    bad = client.chat.completions.create(
        model="model-b", messages=HI, response_format={"type": "json_object"}
    )
    fine, _ = ask(client, "model-a")

    rows = wait_for(
        lambda: {r["response_id"]: r for r in get(gw, "/evaluations")["data"]},
        lambda by_id: (
            {cut.id, bad.id, fine} <= set(by_id)
            and all(by_id[i]["auto_score"] is not None for i in (cut.id, bad.id, fine))
        ),
    )
    assert rows[cut.id]["flags"] == ["truncated"]
    assert rows[cut.id]["model"] == "model-a"
    assert rows[cut.id]["auto_score"] == pytest.approx(0.6)
    assert rows[bad.id]["flags"] == ["invalid_json"]
    assert rows[bad.id]["model"] == "model-b"
    assert rows[fine]["flags"] == [] and rows[fine]["auto_score"] == 1.0
    assert rows[cut.id]["prompt"] is None and rows[cut.id]["answer"] is None  # not logged

    performance = {r["model"]: r for r in get(gw, "/performance")["data"]}
    assert performance["model-a"]["evaluated"] == 2
    assert performance["model-a"]["flag_rates"] == {"truncated": 0.5}
    assert performance["model-b"]["evaluated"] == 1
    assert performance["model-b"]["flag_rates"] == {"invalid_json": 1.0}
    model_b = get(gw, "/evaluations/model/model-b")["evaluation"][0]
    assert model_b["flags"] == {"invalid_json": 1}
    assert model_b["flag_rates"] == {"invalid_json": 1.0}


# ---- feedback through POST /v1/feedback ------------------------------------------------


def test_feedback_shows_in_evaluations_and_metrics(
    client: openai.OpenAI, gw: GatewayProcess
) -> None:
    first, model = ask(client, "model-a")
    second, _ = ask(client, "model-a")
    reply = rate(gw, {"response_id": first, "overall": 4, "accuracy": 5, "comment": "good"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert (body["response_id"], body["model"], body["scores"]) == (
        first,
        model,
        {"accuracy": 5, "overall": 4},
    )
    assert body["replaced_previous"] is False
    assert rate(gw, {"response_id": second, "overall": 2}).status_code == 200

    view = get(gw, f"/evaluations/model/{model}")
    assert {(h["response_id"], h["overall"]) for h in view["feedback_history"]} == {
        (first, 4),
        (second, 2),
    }
    [aggregate] = view["feedback"]
    assert aggregate["count"] == 2
    assert aggregate["overall"] == 3.0 and aggregate["accuracy"] == 5.0
    rated = {r["response_id"]: r["feedback"] for r in view["responses"]}
    assert rated[first]["comment"] == "good"

    [metrics] = get(gw, f"/performance/metrics/{model}")["metrics"]
    assert metrics["feedback"]["overall"] == {"mean": 3.0, "count": 2}
    assert metrics["feedback"]["accuracy"] == {"mean": 5.0, "count": 1}


def test_feedback_errors_are_clear(client: openai.OpenAI, gw: GatewayProcess) -> None:
    missing = rate(gw, {"response_id": "chatcmpl-doesnotexist", "overall": 3})
    assert missing.status_code == 404
    error = missing.json()["error"]
    assert "chatcmpl-doesnotexist" in error["message"]
    assert error["code"] == "response_not_found"

    rid, _ = ask(client, "model-a")
    bad = rate(gw, {"response_id": rid, "overall": 6})
    assert bad.status_code == 422
    assert bad.json()["error"]["param"] == "overall"
    assert "between 1 and 5" in bad.json()["error"]["message"]
    unknown = rate(gw, {"response_id": rid, "stars": 3})
    assert unknown.status_code == 422
    assert "stars" in unknown.json()["error"]["message"]
    assert rate(gw, {"response_id": rid}).status_code == 422

    anonymous = httpx.post(gw.url + "/v1/feedback", json={"response_id": rid, "overall": 3})
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "invalid_api_key"
    wrong = rate(gw, {"response_id": rid, "overall": 3}, headers={"authorization": "Bearer no"})
    assert wrong.status_code == 401
    assert get(gw, "/evaluations/model/model-a")["feedback_history"] == []


def test_a_rating_body_larger_than_any_rating_is_refused_unread(
    client: openai.OpenAI, gw: GatewayProcess
) -> None:
    rid, _ = ask(client, "model-a")
    longest = {"response_id": rid, "overall": 4, "comment": "\u2603" * 4000}
    assert rate(gw, longest).status_code == 200  # the longest real rating fits
    padded = orjson.dumps({"response_id": rid, "overall": 4, "comment": "x" * 200_000})
    for path, headers in (("/v1/feedback", KEY), ("/admin/feedback", {})):
        reply = httpx.post(gw.url + path, content=padded, headers=headers)
        assert reply.status_code == 413, (path, reply.text)
        assert "limit of 65536 bytes" in reply.json()["error"]["message"]
        # announced as small, sent large: cut off while reading, not after
        sneaky = httpx.post(
            gw.url + path,
            content=iter([padded]),
            headers={**headers, "content-type": "application/json"},
        )
        assert sneaky.status_code == 413, path


# ---- feedback steers accuracy routing, durably --------------------------------------------


def test_feedback_shifts_accuracy_routing_and_survives_restart(
    upstream: FakeUpstream, db: Path, start_gateway: Callable[..., GatewayProcess]
) -> None:
    gw = start_gateway(config(upstream, db))
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="test-key", max_retries=0) as client:
        answers_a = [ask(client, "auto") for _ in range(40)]
        assert {model for _, model in answers_a} == {"model-a"}  # prior 8 beats prior 6
        answers_b = [ask(client, "model-b") for _ in range(40)]
        assert {model for _, model in answers_b} == {"model-b"}
        assert ask(client, "auto")[1] == "model-a"  # clean answers alone do not flip it

        for rid, _ in answers_a:
            assert rate(gw, {"response_id": rid, "accuracy": 1}).status_code == 200
        for rid, _ in answers_b:
            assert rate(gw, {"response_id": rid, "accuracy": 5}).status_code == 200
        assert [ask(client, "auto")[1] for _ in range(5)] == ["model-b"] * 5

    ranking = get(gw, "/performance/rankings", optimization="accuracy")["rankings"]["accuracy"]
    assert [r["model"] for r in ranking] == ["model-b", "model-a"]
    assert gw.stop() in (0, -signal.SIGTERM)  # graceful: lifespan shutdown ran

    again = start_gateway(config(upstream, db))
    history = get(again, "/evaluations/model/model-b", limit=1000)["feedback_history"]
    assert {h["response_id"] for h in history} == {rid for rid, _ in answers_b}
    [aggregate] = get(again, "/evaluations/model/model-a")["feedback"]
    assert aggregate["count"] == 40 and aggregate["accuracy"] == 1.0
    with openai.OpenAI(base_url=again.url + "/v1", api_key="test-key", max_retries=0) as client:
        assert ask(client, "auto")[1] == "model-b"
    [metrics] = get(again, "/performance/metrics/model-b")["metrics"]
    assert metrics["feedback"]["accuracy"]["count"] == 40


def test_a_burst_of_concurrent_feedback_loses_none(
    client: openai.OpenAI, gw: GatewayProcess, db: Path
) -> None:
    ids = [ask(client, "model-a")[0] for _ in range(50)]
    # Two ratings per answer, all at once: 100 rows of history, 50 latest in aggregates.
    posts = [(rid, score) for rid in ids for score in (2, 4)]
    with httpx.Client(base_url=gw.url, headers=KEY, timeout=30) as http:

        def post(item: tuple[str, int]) -> int:
            rid, score = item
            return http.post(
                "/v1/feedback", json={"response_id": rid, "overall": score}
            ).status_code

        with ThreadPoolExecutor(max_workers=100) as pool:
            statuses = list(pool.map(post, posts))
    assert statuses == [200] * 100

    view = get(gw, "/evaluations/model/model-a", limit=1000)
    assert len(view["feedback_history"]) == 100
    [aggregate] = view["feedback"]
    assert aggregate["count"] == 50
    assert aggregate["samples"]["overall"] == 50
    [metrics] = get(gw, "/performance/metrics/model-a")["metrics"]
    assert metrics["feedback"]["overall"]["count"] == 50  # each re-rating replaced one

    assert gw.stop() in (0, -signal.SIGTERM)  # graceful: lifespan shutdown ran
    with sqlite3.connect(db) as conn:
        [(rows,)] = conn.execute("SELECT COUNT(*) FROM feedback").fetchall()
        [(rated,)] = conn.execute("SELECT COUNT(DISTINCT response_id) FROM feedback").fetchall()
    assert (rows, rated) == (100, 50)
