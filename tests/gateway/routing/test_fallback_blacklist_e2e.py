"""Fallback, blame and the blacklist, end to end: a real gateway process, a real fake upstream,
the official SDK (no client retries) and the SQLite file the gateway writes."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.conftest import upstream_config
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream

SECRET = "sk-upstream-secret-123456"
HI = [{"role": "user", "content": "hi"}]
UP = ("alpha-up", "beta-up", "gamma-up")

Start = Callable[..., GatewayProcess]


def config(upstream: FakeUpstream, **selection: Any) -> dict[str, Any]:
    """The shared config with alpha > beta > gamma on accuracy and no randomness; alpha
    names beta and gamma as its fallbacks, gamma names none."""
    cfg = upstream_config(upstream)
    priors = {"alpha": 9, "beta": 8, "gamma": 7}
    for model in cfg["models"]:
        if model["name"] in priors:
            model["priors"] = {"accuracy": priors[model["name"]]}
        if model["name"] == "alpha":
            model["fallbacks"] = ["beta", "gamma"]
    cfg["selection"] = {
        "exploration_rate": 0,
        "exploration_bonus": 0,
        "score_refresh_seconds": 0,
        **selection,
    }
    return cfg


def sdk(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="test-key", max_retries=0)


def chat(client: openai.OpenAI, model: str = "auto", **kwargs: Any):
    return client.chat.completions.with_raw_response.create(model=model, messages=HI, **kwargs)


def blacklisted(gw: GatewayProcess) -> list[dict[str, Any]]:
    resp = httpx.get(gw.url + "/performance/blacklisted")
    assert resp.status_code == 200
    return resp.json()["data"]


def stop_gracefully(gw: GatewayProcess) -> None:
    # uvicorn re-raises the SIGTERM it handled once shutdown is complete; -9 would mean killed.
    assert gw.stop() in (0, -signal.SIGTERM)


def attempt_rows(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM attempts ORDER BY id")]


def json_lines(gw: GatewayProcess) -> list[dict[str, Any]]:
    out = []
    for line in gw.logs().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


@pytest.fixture
def gw(upstream: FakeUpstream, start_gateway: Start) -> GatewayProcess:
    return start_gateway(config(upstream))


@pytest.fixture
def client(gw: GatewayProcess) -> Iterator[openai.OpenAI]:
    with sdk(gw) as c:
        yield c


def test_first_member_failing_is_served_by_the_second_and_both_attempts_are_stored(
    gw: GatewayProcess, client: openai.OpenAI, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.behave("alpha-up", status=500)
    raw = chat(client)
    assert raw.parse().choices[0].message.content == "Hello from the fake upstream."
    assert raw.headers["x-gatewise-attempts"] == "2"
    assert raw.headers["x-gatewise-model"] == "beta"
    assert upstream.models_called() == ["alpha-up", "beta-up"]
    request_id = raw.headers["x-request-id"]

    stop_gracefully(gw)  # the writer flushes on the way out
    rows = attempt_rows(tmp_path / "gatewise.db")
    assert [(r["model"], r["attempt"], r["ok"]) for r in rows] == [("alpha", 1, 0), ("beta", 2, 1)]
    failed, served = rows
    assert failed["error_class"] == "server_error"
    assert failed["http_status"] == 500
    assert failed["counts_as_failure"] == 1
    assert served["error_class"] is None
    assert failed["request_id"] == served["request_id"] == request_id


def test_three_failures_blacklist_a_model_until_an_admin_clears_it(
    gw: GatewayProcess, client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    upstream.behave("alpha-up", status=500)
    # Asking for alpha by name tries it first while it is healthy (the route would rank
    # it down after one failure), and falls back to its configured fallbacks.
    for _ in range(3):
        assert chat(client, "alpha").headers["x-gatewise-model"] == "beta"
    assert upstream.models_called() == ["alpha-up", "beta-up"] * 3

    before = len(upstream.seen)
    for model in ("alpha", "auto"):
        raw = chat(client, model)
        assert raw.headers["x-gatewise-model"] == "beta"
        assert raw.headers["x-gatewise-attempts"] == "1"
    assert "alpha-up" not in [s.body["model"] for s in upstream.seen[before:]]

    [entry] = blacklisted(gw)
    assert entry["model"] == "alpha"
    assert entry["consecutive_failures"] == 3
    assert entry["until"] - time.time() == pytest.approx(3600, abs=120)
    assert "500" in entry["last_error"]

    resp = httpx.delete(gw.url + "/performance/blacklisted/alpha")
    assert resp.status_code == 200
    assert resp.json() == {"model": "alpha", "cleared": True}
    assert blacklisted(gw) == []

    upstream.behaviours.clear()
    before = len(upstream.seen)
    raw = chat(client, "alpha")
    assert raw.headers["x-gatewise-model"] == "alpha"
    assert [s.body["model"] for s in upstream.seen[before:]] == ["alpha-up"]


def test_a_model_without_fallbacks_is_never_answered_by_its_routes_peers(
    gw: GatewayProcess, client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    # gamma shares the route "auto" with healthier, dearer models, but names no fallbacks:
    # asked for by name, its failure is the client's answer (issue 19).
    upstream.behave("gamma-up", status=500)
    for _ in range(3):
        with pytest.raises(openai.InternalServerError) as info:
            chat(client, "gamma")
        assert info.value.status_code == 502
        assert "gamma" in info.value.message
    assert upstream.models_called() == ["gamma-up"] * 3
    # benched now: still never replaced; the client is told it is unavailable
    with pytest.raises(openai.APIStatusError) as benched:
        chat(client, "gamma")
    assert benched.value.status_code == 503
    assert upstream.models_called() == ["gamma-up"] * 3
    upstream.behaviours.clear()
    raw = chat(client, "beta")
    assert raw.headers["x-gatewise-model"] == "beta"


def test_every_member_failing_is_a_502_then_a_503_once_all_are_blacklisted(
    gw: GatewayProcess, client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    for name in UP:
        upstream.behave(name, status=500)
    for _ in range(3):
        with pytest.raises(openai.APIStatusError) as caught:
            chat(client)
        assert caught.value.status_code == 502
        for name in ("alpha", "beta", "gamma"):
            assert name in caught.value.message
    assert sorted(upstream.models_called()) == sorted(UP * 3)
    assert sorted(e["model"] for e in blacklisted(gw)) == ["alpha", "beta", "gamma"]

    upstream.behaviours.clear()
    before = len(upstream.seen)
    with pytest.raises(openai.APIStatusError) as caught:
        chat(client)
    error = caught.value
    assert error.status_code == 503
    assert error.code == "all_models_blacklisted"
    assert 3500 <= int(error.response.headers["retry-after"]) <= 3600
    assert len(upstream.seen) == before  # nothing was sent upstream


def test_probe_mode_tries_the_model_that_returns_soonest(
    upstream: FakeUpstream, start_gateway: Start
) -> None:
    gw = start_gateway(config(upstream, when_all_blacklisted="probe"))
    for name in UP:
        upstream.behave(name, status=500)
    with sdk(gw) as client:
        for _ in range(3):
            with pytest.raises(openai.APIStatusError):
                chat(client)
        entries = blacklisted(gw)
        assert len(entries) == 3
        soonest = min(entries, key=lambda e: e["until"])["model"]

        upstream.behaviours.clear()
        before = len(upstream.seen)
        raw = chat(client)
    assert raw.headers["x-gatewise-model"] == soonest
    assert [s.body["model"] for s in upstream.seen[before:]] == [soonest + "-up"]


def test_rate_limit_is_recorded_and_not_slept_on(
    gw: GatewayProcess, client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    upstream.behave("alpha-up", status=429, headers={"Retry-After": "30"})
    started = time.monotonic()
    raw = chat(client)
    took = time.monotonic() - started
    assert raw.headers["x-gatewise-model"] == "beta"
    assert took < 10  # far below the 30 s the upstream asked for
    [line] = [
        e for e in json_lines(gw) if e.get("message") == "attempt" and e.get("model") == "alpha"
    ]
    assert line["status"] == 429
    assert line["error_class"] == "rate_limited"


def test_client_errors_do_not_count_against_the_model(
    gw: GatewayProcess, client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    body = {"error": {"message": "Unsupported parameter: 'foo'", "type": "invalid_request_error"}}
    upstream.behave("alpha-up", status=400, body=orjson.dumps(body))
    for _ in range(5):
        with pytest.raises(openai.BadRequestError):
            chat(client)
    assert upstream.models_called() == ["alpha-up"] * 5  # not retried, still ranked first
    assert blacklisted(gw) == []

    upstream.behaviours.clear()
    assert chat(client).headers["x-gatewise-model"] == "alpha"


def test_context_length_error_moves_to_a_larger_window_without_blame(
    upstream: FakeUpstream, start_gateway: Start
) -> None:
    cfg = config(upstream)
    for model in cfg["models"]:
        if model["name"] == "beta":
            model["context_window"] = 1000  # no bigger than alpha's: skipped
    gw = start_gateway(cfg)
    body = {
        "error": {
            "message": "This model's maximum context length is 1000 tokens.",
            "type": "invalid_request_error",
            "code": "context_length_exceeded",
        }
    }
    upstream.behave("alpha-up", status=400, body=orjson.dumps(body))
    with sdk(gw) as client:
        for _ in range(4):
            raw = chat(client)
            assert raw.headers["x-gatewise-model"] == "gamma"
            assert raw.headers["x-gatewise-attempts"] == "2"
    assert upstream.models_called() == ["alpha-up", "gamma-up"] * 4
    assert blacklisted(gw) == []


def test_stream_falls_back_before_the_first_byte(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    upstream.behave("alpha-up", status=500)
    raw = chat(client, stream=True)
    assert raw.headers["x-gatewise-attempts"] == "2"
    assert raw.headers["x-gatewise-model"] == "beta"
    chunks = list(raw.parse())
    assert {c.model for c in chunks} == {"beta"}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake upstream."
    assert upstream.models_called() == ["alpha-up", "beta-up"]


def fails_after_the_first_byte(
    gw: GatewayProcess, client: openai.OpenAI, upstream: FakeUpstream, db: Path
) -> None:
    """Alpha's stream breaks after its first chunk: an error event ends it, a failure is kept."""
    raw = chat(client, stream=True)
    assert raw.headers["x-gatewise-model"] == "alpha"
    received = []
    with pytest.raises(openai.APIError):
        for chunk in raw.parse():
            received.append(chunk)
    assert "".join(c.choices[0].delta.content or "" for c in received if c.choices) == "Hello"
    assert upstream.models_called() == ["alpha-up"]  # too late to fall back

    stop_gracefully(gw)
    [row] = attempt_rows(db)
    assert row["model"] == "alpha"
    assert row["ok"] == 0
    assert row["counts_as_failure"] == 1
    assert row["stream"] == 1
    assert row["request_id"] == raw.headers["x-request-id"]


def test_stream_error_event_after_the_first_byte_is_passed_on_and_recorded_as_a_failure(
    gw: GatewayProcess, client: openai.OpenAI, upstream: FakeUpstream, tmp_path: Path
) -> None:
    first = {
        "id": "chatcmpl-up",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "alpha-up",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hello"}}],
    }
    error = {"error": {"message": "overloaded mid-stream", "type": "server_error"}}
    sse = b"".join(b"data: " + orjson.dumps(event) + b"\n\n" for event in (first, error))
    upstream.behave("alpha-up", body=sse)
    fails_after_the_first_byte(gw, client, upstream, tmp_path / "gatewise.db")


def test_stream_broken_after_the_first_byte_ends_with_an_error_event_and_a_failure(
    gw: GatewayProcess, client: openai.OpenAI, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.behave("alpha-up", fail_after_chunks=1)
    fails_after_the_first_byte(gw, client, upstream, tmp_path / "gatewise.db")


def test_each_attempt_is_one_json_log_line_without_the_upstream_secret(
    gw: GatewayProcess, client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    echo = {"error": {"message": f"bad key {SECRET}", "type": "server_error"}}
    upstream.behave("alpha-up", status=500, body=orjson.dumps(echo))
    raw = chat(client)
    request_id = raw.headers["x-request-id"]

    def attempt_lines() -> list[dict[str, Any]]:
        return [
            e
            for e in json_lines(gw)
            if e.get("message") == "attempt" and e["request_id"] == request_id
        ]

    deadline = time.monotonic() + 5  # success lines are written in batches within 0.2 s
    while len(lines := attempt_lines()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    keys = {"request_id", "attempt", "model", "provider", "status", "error_class", "elapsed_ms"}
    assert all(keys <= set(e) for e in lines)
    assert [
        (e["attempt"], e["model"], e["provider"], e["status"], e["error_class"]) for e in lines
    ] == [
        (1, "alpha", "up", 500, "server_error"),
        (2, "beta", "up", 200, None),
    ]
    assert all(isinstance(e["elapsed_ms"], int | float) and e["elapsed_ms"] >= 0 for e in lines)
    assert SECRET not in gw.logs()


def test_optimize_header_is_validated_and_cost_picks_the_cheapest(
    upstream: FakeUpstream, start_gateway: Start
) -> None:
    cfg = config(upstream)
    prices = {"alpha": (10, 20), "beta": (5, 10), "gamma": (0.1, 0.2)}
    for model in cfg["models"]:
        if model["name"] in prices:
            price_in, price_out = prices[model["name"]]
            model["pricing"] = {"input_per_million": price_in, "output_per_million": price_out}
    gw = start_gateway(cfg)
    with sdk(gw) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            chat(client, extra_headers={"x-gatewise-optimize": "fastest"})
        assert caught.value.body["param"] == "x-gatewise-optimize"
        cost = chat(client, extra_headers={"x-gatewise-optimize": "cost"})
        accuracy = chat(client, extra_headers={"x-gatewise-optimize": "accuracy"})
    assert cost.headers["x-gatewise-model"] == "gamma"
    assert accuracy.headers["x-gatewise-model"] == "alpha"
    assert upstream.models_called() == ["gamma-up", "alpha-up"]
