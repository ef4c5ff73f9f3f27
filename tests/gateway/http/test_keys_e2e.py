"""Keys as identities, end to end: a real gateway with named keys, the official SDK, and
the store across a restart. An answer belongs to the key that received it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
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

HI = [{"role": "user", "content": "hi"}]
ALICE, BOB, CAROL = "sk-alice-0001", "sk-bob-0002", "sk-carol-0003"


def config(upstream: FakeUpstream, db: Path) -> dict[str, Any]:
    cfg = upstream_config(upstream, selection={"exploration_rate": 0})
    cfg["routes"] = [*cfg.get("routes", []), {"name": "cheap", "models": ["beta"]}]
    cfg["server"]["api_keys"] = [
        {"name": "alice", "key": ALICE},
        {"name": "bob", "key": BOB},
        {"name": "carol", "key": CAROL, "routes": ["cheap"], "optimization": "cost"},
    ]
    cfg["server"]["max_body_bytes"] = 65536
    cfg["storage"] = {"url": f"sqlite:///{db}", "flush_interval": 0.1}
    return cfg


def sdk(gw: GatewayProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)


def rate(gw: GatewayProcess, key: str, response_id: str, overall: int) -> httpx.Response:
    return httpx.post(
        gw.url + "/v1/feedback",
        json={"response_id": response_id, "overall": overall},
        headers={"authorization": f"Bearer {key}"},
    )


def test_only_the_key_that_received_an_answer_may_rate_it_even_after_a_restart(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    db = tmp_path / "keys.db"
    gw = start_gateway(config(upstream, db))
    with sdk(gw, ALICE) as alice:
        answer = alice.chat.completions.create(model="alpha", messages=HI)

    strangers = rate(gw, BOB, answer.id, 1)
    unknown = rate(gw, BOB, "chatcmpl-never-given", 1)
    assert strangers.status_code == unknown.status_code == 404
    assert strangers.json()["error"]["code"] == unknown.json()["error"]["code"]
    assert "alpha" not in strangers.text and "up" not in strangers.json()["error"]["message"]

    mine = rate(gw, ALICE, answer.id, 5)
    assert mine.status_code == 200
    assert (mine.json()["model"], mine.json()["replaced_previous"]) == ("alpha", False)

    gw.stop()  # the answer is now only in the store
    gw = start_gateway(config(upstream, db))
    assert rate(gw, BOB, answer.id, 1).status_code == 404
    again = rate(gw, ALICE, answer.id, 4)
    assert again.status_code == 200 and again.json()["replaced_previous"] is True
    admin = httpx.post(gw.url + "/admin/feedback", json={"response_id": answer.id, "overall": 3})
    assert admin.status_code == 200  # the admin may rate any answer
    stored = httpx.get(gw.url + f"/admin/responses/{answer.id}").json()
    assert stored["owner"] == "alice"
    with sdk(gw, BOB) as bob:
        bobs = bob.chat.completions.create(model="alpha", messages=HI)
    evaluations = "/evaluations"
    deadline = time.monotonic() + 10
    while len(httpx.get(gw.url + evaluations).json()["data"]) < 2:  # judged off the path
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for key, wanted in (("alice", answer.id), ("bob", bobs.id)):
        rows = httpx.get(gw.url + evaluations, params={"key": key}).json()["data"]
        assert [r["response_id"] for r in rows] == [wanted]


def test_a_key_uses_only_its_routes_and_models_with_its_default_optimization(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    gw = start_gateway(config(upstream, tmp_path / "scope.db"))
    with sdk(gw, CAROL) as carol:
        with pytest.raises(openai.PermissionDeniedError) as info:
            carol.chat.completions.create(model="alpha", messages=HI)
        error = info.value.response.json()["error"]
        assert error["code"] == "model_not_allowed" and error["param"] == "model"
        assert error["type"] == "invalid_request_error" and "'alpha'" in error["message"]
        assert upstream.calls("/chat/completions") == []  # refused before any upstream

        served = carol.chat.completions.with_raw_response.create(model="cheap", messages=HI)
        assert served.headers["x-gatewise-model"] == "beta"
        assert [m.id for m in carol.models.list()] == ["cheap"]
        with pytest.raises(openai.NotFoundError):
            carol.models.retrieve("alpha")
    with sdk(gw, ALICE) as alice:
        assert "alpha" in [m.id for m in alice.models.list()]  # no scope: everything

    record = httpx.get(gw.url + f"/admin/responses/{served.parse().id}").json()
    assert record["optimization"] == "cost" and record["owner"] == "carol"
    with sdk(gw, CAROL) as carol:
        told = carol.chat.completions.with_raw_response.create(
            model="cheap", messages=HI, extra_headers={"x-gatewise-optimize": "speed"}
        )
    record = httpx.get(gw.url + f"/admin/responses/{told.parse().id}").json()
    assert record["optimization"] == "speed"  # the request's own choice wins


def test_one_key_flooding_ratings_does_not_steer_the_route_for_everyone(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    """Five keys rate alpha over beta; a sixth posts 20 opposite ratings of each."""
    cfg = config(upstream, tmp_path / "steer.db")
    honest = [f"sk-team-{i}" for i in range(5)]
    cfg["server"]["api_keys"] = [
        *({"name": f"team-{i}", "key": key} for i, key in enumerate(honest)),
        {"name": "flood", "key": "sk-flood"},
    ]
    cfg["routes"] = [{"name": "auto", "models": ["alpha", "beta"], "optimization": "accuracy"}]
    cfg["selection"] = {"exploration_rate": 0, "exploration_bonus": 0, "score_refresh_seconds": 0}
    gw = start_gateway(cfg)

    def ask_and_rate(key: str, model: str, overall: int, times: int) -> None:
        with sdk(gw, key) as client:
            for _ in range(times):
                answer = client.chat.completions.create(model=model, messages=HI)
                rated = httpx.post(
                    gw.url + "/v1/feedback",
                    json={"response_id": answer.id, "overall": overall, "accuracy": overall},
                    headers={"authorization": f"Bearer {key}"},
                )
                assert rated.status_code == 200, rated.text

    for key in honest:
        ask_and_rate(key, "alpha", 5, 2)
        ask_and_rate(key, "beta", 2, 2)
    ask_and_rate("sk-flood", "alpha", 1, 20)
    ask_and_rate("sk-flood", "beta", 5, 20)

    with sdk(gw, honest[0]) as client:
        served = [
            client.chat.completions.with_raw_response.create(model="auto", messages=HI).headers[
                "x-gatewise-model"
            ]
            for _ in range(10)
        ]
    assert served == ["alpha"] * 10


def limited_config(upstream: FakeUpstream, db: Path, **key: Any) -> dict[str, Any]:
    cfg = config(upstream, db)
    cfg["server"]["api_keys"] = [{"name": "team", "key": "sk-team", **key}]
    cfg["storage"]["share_interval"] = 0.2
    return cfg


def usage_of(gw: GatewayProcess) -> dict[str, Any]:
    reply = httpx.get(gw.url + "/admin/keys/team/usage")
    assert reply.status_code == 200, reply.text
    return reply.json()["usage"]


def test_a_rate_limit_holds_across_two_replicas_with_openais_headers(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    cfg = limited_config(upstream, tmp_path / "rl.db", rate_limit={"requests_per_minute": 3})
    one, two = start_gateway(cfg), start_gateway(cfg)
    with sdk(one, "sk-team") as a, sdk(two, "sk-team") as b:
        first = a.chat.completions.with_raw_response.create(model="alpha", messages=HI)
        assert first.headers["x-ratelimit-limit-requests"] == "3"
        assert first.headers["x-ratelimit-remaining-requests"] == "2"
        assert first.headers["x-ratelimit-reset-requests"].endswith("s")
        b.chat.completions.create(model="alpha", messages=HI)
        b.chat.completions.create(model="alpha", messages=HI)
        deadline = time.monotonic() + 10
        while min(usage_of(gw)["requests_last_minute"] for gw in (one, two)) < 3:
            assert time.monotonic() < deadline  # each replica's share reaches the other
            time.sleep(0.05)
        for client in (a, b):
            with pytest.raises(openai.RateLimitError) as info:
                client.chat.completions.create(model="alpha", messages=HI)
            response = info.value.response
            assert response.json()["error"]["code"] == "rate_limit_exceeded"
            assert response.json()["error"]["type"] == "requests"
            assert 1 <= int(response.headers["retry-after"]) <= 60
    assert len(upstream.calls("/chat/completions")) == 3


def test_answers_in_flight_are_limited_across_two_replicas_until_they_end(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    """`max_concurrent`: a key's long streams hold their place until they end, on any
    replica; the next answer is a 429 the SDK retries on, and one ending makes room."""
    hold = threading.Event()
    upstream.behave("alpha-up", content="held answer", hold=hold)
    cfg = limited_config(upstream, tmp_path / "cc.db", rate_limit={"max_concurrent": 2})
    one, two = start_gateway(cfg), start_gateway(cfg)

    def stream(gw: GatewayProcess) -> str:
        with sdk(gw, "sk-team") as client:
            chunks = client.chat.completions.create(model="alpha", messages=HI, stream=True)
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    def in_flight(count: int) -> None:
        deadline = time.monotonic() + 10
        while {usage_of(gw)["in_flight"] for gw in (one, two)} != {count}:
            assert time.monotonic() < deadline  # each replica's share reaches the other
            time.sleep(0.05)

    with ThreadPoolExecutor(2) as pool:
        held = [pool.submit(stream, one), pool.submit(stream, two)]
        try:
            in_flight(2)
            for gw in (one, two):
                with sdk(gw, "sk-team") as client, pytest.raises(openai.RateLimitError) as info:
                    client.chat.completions.create(model="alpha", messages=HI)
                error = info.value.response.json()["error"]
                assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
                assert "2 answers in flight" in error["message"]
                assert info.value.response.headers["retry-after"] == "1"
                # Operators see it: each replica counted the one it refused.
                scrape = httpx.get(gw.url + "/metrics").text
                assert 'gatewise_key_refusals_total{key="team",reason="concurrency"} 1.0' in scrape
        finally:
            hold.set()
        assert [f.result(timeout=30) for f in held] == ["held answer"] * 2
    in_flight(0)
    with sdk(two, "sk-team") as client:
        assert client.chat.completions.create(model="alpha", messages=HI).choices
    assert len(upstream.calls("/chat/completions")) == 3  # the refused never went upstream


def test_anthropic_answers_in_flight_count_and_free_their_place(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    hold = threading.Event()
    upstream.behave("alpha-up", content="held answer", hold=hold)
    cfg = limited_config(upstream, tmp_path / "cc.db", rate_limit={"max_concurrent": 1})
    gw = start_gateway(cfg)
    claude = anthropic.Anthropic(base_url=gw.url, api_key="sk-team", max_retries=0)

    def stream() -> str:
        with claude.messages.stream(model="alpha", max_tokens=20, messages=HI) as answer:
            return "".join(answer.text_stream)

    with claude, ThreadPoolExecutor(1) as pool:
        held = pool.submit(stream)
        try:
            assert upstream.behaviours["alpha-up"].held.wait(10)
            with pytest.raises(anthropic.RateLimitError) as info:
                claude.messages.create(model="alpha", max_tokens=20, messages=HI)
            assert info.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        finally:
            hold.set()
        assert held.result(timeout=30) == "held answer"
        deadline = time.monotonic() + 10
        while usage_of(gw)["in_flight"]:  # its place is freed as its handler ends
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert claude.messages.create(model="alpha", max_tokens=20, messages=HI).content


def test_a_spent_budget_refuses_after_the_answer_that_spent_it_streams_included(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    # alpha costs 11 prompt tokens x $1/M + 7 completion x $2/M = $0.000025 an answer.
    cfg = limited_config(upstream, tmp_path / "b.db", budget={"daily_usd": 0.00004})
    gw = start_gateway(cfg)
    with sdk(gw, "sk-team") as team:
        team.chat.completions.create(model="alpha", messages=HI)
        stream = team.chat.completions.create(
            model="alpha", messages=HI, stream=True, stream_options={"include_usage": True}
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        with pytest.raises(openai.RateLimitError) as info:
            team.chat.completions.create(model="alpha", messages=HI)
        error = info.value.response.json()["error"]
        assert (error["code"], error["type"]) == ("insufficient_quota", "insufficient_quota")
        assert "daily budget" in error["message"]
    usage = usage_of(gw)
    rows = httpx.get(gw.url + "/performance").json()["data"]
    dashboard = sum(r["cost"]["total"] for r in rows)  # the same accounting as the dashboard
    assert usage["spend_day"] == pytest.approx(dashboard) and dashboard > 0.00004
    assert (usage["requests_day"], usage["errors_day"]) == (2, 1)  # served; refused


def test_a_stream_cut_before_its_usage_is_charged_an_estimate_not_nothing(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    """A client that leaves each stream just before its end (where the upstream's usage
    comes) used to spend nothing of its budget."""
    upstream.behave("alpha-up", content="first " + "x" * 400, pause_after_first=30)
    # The cut stream said "first" and asked "hi": about 2 tokens out and 1 in, $0.000005
    # at alpha's $1/M in and $2/M out; the budget is less than that.
    cfg = limited_config(upstream, tmp_path / "cut.db", budget={"daily_usd": 0.000004})
    gw = start_gateway(cfg)
    body = {"model": "alpha", "messages": HI, "stream": True}
    url = gw.url + "/v1/chat/completions"
    headers = {"authorization": "Bearer sk-team"}
    with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as resp:
        first = next(line for line in resp.iter_lines() if line)
        assert '"content":"first"' in first  # then the client leaves, long before the usage
    deadline = time.monotonic() + 10
    while not usage_of(gw)["spend_day"]:  # recorded once the gateway hears it left
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with sdk(gw, "sk-team") as team, pytest.raises(openai.RateLimitError) as info:
        team.chat.completions.create(model="alpha", messages=HI)
    assert info.value.response.json()["error"]["code"] == "insufficient_quota"

    def cut() -> list[dict[str, Any]]:  # attempt lines are written within 0.2 s
        lines = [orjson.loads(line) for line in gw.logs().splitlines() if line.startswith("{")]
        return [line for line in lines if line["message"] == "attempt" and line["client_gone"]]

    while not cut():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert cut()[0]["usage_estimated"] is True


def test_a_reply_without_usage_is_charged_an_estimate_not_nothing(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    """An upstream that leaves `usage` out of its reply (some self-hosted servers do)
    used to serve a budgeted key for free: the gateway counted it $0."""
    answer = {
        "id": "x",
        "object": "chat.completion",
        "model": "alpha-up",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "y" * 40},
                "finish_reason": "stop",
            }
        ],
    }
    upstream.behave("alpha-up", body=orjson.dumps(answer))
    # "hi" and 40 characters said: ~1 token in, 10 out, $0.000021 at alpha's $1/$2 per M.
    cfg = limited_config(upstream, tmp_path / "nousage.db", budget={"daily_usd": 0.00002})
    gw = start_gateway(cfg)
    with sdk(gw, "sk-team") as team:
        reply = team.chat.completions.create(model="alpha", messages=HI)
        assert reply.choices[0].message.content == "y" * 40
        with pytest.raises(openai.RateLimitError) as info:
            team.chat.completions.create(model="alpha", messages=HI)
    assert info.value.response.json()["error"]["code"] == "insufficient_quota"
    assert usage_of(gw)["spend_day"] == pytest.approx(0.000021)

    def attempts() -> list[dict[str, Any]]:  # attempt lines are written within 0.2 s
        lines = [orjson.loads(line) for line in gw.logs().splitlines() if line.startswith("{")]
        return [line for line in lines if line["message"] == "attempt"]

    deadline = time.monotonic() + 10
    while not attempts():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert [a["usage_estimated"] for a in attempts()] == [True]


def test_a_spent_budget_can_move_a_key_to_its_cheaper_route(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    budget = {"daily_usd": 0.00002, "when_exhausted": {"route": "cheap"}}
    gw = start_gateway(limited_config(upstream, tmp_path / "f.db", budget=budget))
    with sdk(gw, "sk-team") as team:
        served = [
            team.chat.completions.with_raw_response.create(model="alpha", messages=HI).headers[
                "x-gatewise-model"
            ]
            for _ in range(3)
        ]
    assert served == ["alpha", "beta", "beta"]  # cheap is beta, and free


def test_a_rate_limit_holds_across_two_workers(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    cfg = limited_config(upstream, tmp_path / "w.db", rate_limit={"requests_per_minute": 3})
    gw = start_gateway(cfg, args=["--workers", "2"])
    with sdk(gw, "sk-team") as team:
        remaining = [
            team.chat.completions.with_raw_response.create(model="alpha", messages=HI).headers[
                "x-ratelimit-remaining-requests"
            ]
            for _ in range(3)
        ]
        assert remaining[0] == "2"
        # Which worker answers is the kernel's choice: read until 20 answers in a row (from
        # both, all but surely) agree that the fleet has seen all three.
        deadline, agreeing = time.monotonic() + 15, 0
        while agreeing < 20:
            assert time.monotonic() < deadline
            agreeing = agreeing + 1 if usage_of(gw)["requests_last_minute"] == 3 else 0
        for _ in range(6):
            with pytest.raises(openai.RateLimitError):
                team.chat.completions.create(model="alpha", messages=HI)
    assert len(upstream.calls("/chat/completions")) == 3
