"""Experiments end to end: a real gateway process, a fake upstream over HTTP and the
official openai SDK. A conversation keeps its arm, the split holds, the arm's overrides
reach the upstream, ratings become per-arm results in the admin API, a harmful arm is
stopped by its guard, a winner is promoted, and bad input gets clear errors."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import upstream_config
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream

KEY = {"authorization": "Bearer test-key"}
ASKED = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hi"}]
AB: dict[str, Any] = {
    "name": "ab",
    "route": "auto",
    "arms": [
        {"name": "control", "model": "alpha", "share": 0.5},
        {
            "name": "challenger",
            "model": "beta",
            "share": 0.5,
            "system_prompt": "Answer briefly. {system}",
            "params": {"temperature": 0.2},
        },
    ],
    "metric": "overall",
    "min_samples": 10,
}


def gateway_config(upstream: FakeUpstream, db: Path, **changes: Any) -> dict[str, Any]:
    cfg = upstream_config(upstream)
    cfg["storage"] = {"url": f"sqlite:///{db}", "flush_interval": 0.1, "share_interval": 0.5}
    cfg.update(changes)
    return cfg


def sdk(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="test-key", max_retries=0)


def until(check: Callable[[], Any], what: str, within: float = 10.0) -> Any:
    began = time.monotonic()
    while not (found := check()):
        assert time.monotonic() - began < within, f"not within {within} s: {what}"
        time.sleep(0.05)
    return found


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "experiments.db"


@pytest.fixture
def client_of() -> Iterator[Callable[[GatewayProcess], openai.OpenAI]]:
    made: list[openai.OpenAI] = []

    def make(gw: GatewayProcess) -> openai.OpenAI:
        made.append(sdk(gw))
        return made[-1]

    yield make
    for c in made:
        c.close()


def ask(client: openai.OpenAI, conversation: str) -> tuple[dict[str, str], str]:
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=ASKED, extra_headers={"x-gatewise-conversation": conversation}
    )
    return dict(raw.headers), raw.parse().id


def test_an_experiment_keeps_conversations_splits_reports_and_promotes_its_winner(
    upstream: FakeUpstream,
    db: Path,
    start_gateway: Callable[..., GatewayProcess],
    client_of: Callable[[GatewayProcess], openai.OpenAI],
) -> None:
    gw = start_gateway(gateway_config(upstream, db, experiments=[AB]))
    client = client_of(gw)
    served: dict[str, list[str]] = {"control": [], "challenger": []}
    arm_of: dict[str, str] = {}
    for i in range(300):
        headers, answer_id = ask(client, f"conversation-{i}")
        assert headers["x-gatewise-experiment"] == "ab"
        arm = headers["x-gatewise-arm"]
        assert headers["x-gatewise-model"] == {"control": "alpha", "challenger": "beta"}[arm]
        served[arm].append(answer_id)
        arm_of[f"conversation-{i}"] = arm
    share = len(served["challenger"]) / 300
    assert 0.42 < share < 0.58, share  # 50 % +- 8 points (2.8 standard deviations)

    for conversation in list(arm_of)[:30]:  # sticky: the same arm, every time
        for _ in range(2):
            assert ask(client, conversation)[0]["x-gatewise-arm"] == arm_of[conversation]

    sent = [s.body for s in upstream.calls("/chat/completions")]
    challenger = [b for b in sent if b["model"] == "beta-up"]
    control = [b for b in sent if b["model"] == "alpha-up"]
    assert challenger and control
    for body in challenger:  # the arm's overrides, and the client's system prompt in them
        assert body["temperature"] == 0.2
        assert body["messages"][0] == {"role": "system", "content": "Answer briefly. Be kind."}
    for body in control:
        assert "temperature" not in body and body["messages"] == ASKED

    for arm, score in (("control", 3), ("challenger", 5)):
        for answer_id in served[arm][:15]:
            rated = httpx.post(
                gw.url + "/v1/feedback", json={"response_id": answer_id, "overall": score},
                headers=KEY,
            )  # fmt: skip
            assert rated.status_code == 200, rated.text

    def decided() -> dict[str, Any] | None:
        report = httpx.get(gw.url + "/experiments/ab").json()
        return report if report["status"] == "winner" else None

    report = until(decided, "a winner is declared")
    assert report["winner"] == "challenger" and report["state"] == "running"
    arms = {a["name"]: a for a in report["arms"]}
    assert arms["control"]["n"] == 15 and arms["control"]["mean"] == 3.0
    assert arms["challenger"]["n"] == 15 and arms["challenger"]["mean"] == 5.0
    low, high = arms["challenger"]["ci"]
    assert low < 5.0 < high
    difference = arms["challenger"]["difference"]
    assert difference["estimate"] == 2.0 and 0 < difference["low"] < 2.0 < difference["high"]
    assert arms["challenger"]["status"] == "winner" and arms["control"]["status"] == "loser"
    assert arms["challenger"]["answers"] >= len(served["challenger"])
    assert arms["control"]["cost_usd"] > 0  # alpha is priced
    assert report["curve"] and report["curve"][-1]["arms"]["challenger"]["n"] == 15
    listed = httpx.get(gw.url + "/experiments").json()["data"]
    assert [e["name"] for e in listed] == ["ab"]

    promoted = httpx.post(gw.url + "/experiments/ab/promote")
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["state"] == "finished"
    assert promoted.json()["finish"]["action"] == "promoted"
    assert promoted.json()["finish"]["arm"] == "challenger"

    upstream.seen.clear()
    for i in range(10):  # the winner is the route's default now, for everyone
        headers, _ = ask(client, f"after-{i}")
        assert headers["x-gatewise-model"] == "beta"
        assert "x-gatewise-experiment" not in headers and "x-gatewise-arm" not in headers
    assert all(s.body["temperature"] == 0.2 for s in upstream.calls("/chat/completions"))

    for action in ("stop", "promote"):  # a finished experiment cannot be changed
        again = httpx.post(gw.url + f"/experiments/ab/{action}")
        assert again.status_code == 409
        assert "finished" in again.json()["error"]["message"]


def test_a_guard_stops_an_arm_that_fails_and_its_traffic_goes_to_control(
    upstream: FakeUpstream,
    db: Path,
    start_gateway: Callable[..., GatewayProcess],
    client_of: Callable[[GatewayProcess], openai.OpenAI],
) -> None:
    risky = {
        "name": "risky",
        "route": "auto",
        "arms": [
            {"name": "control", "model": "alpha"},
            {"name": "broken", "model": "gamma"},
        ],
        "sticky_by": "none",
        "guards": {"max_error_rate": 0.05, "min_samples": 10},
    }
    upstream.behave("gamma-up", status=500)  # every attempt of the arm's model fails
    gw = start_gateway(gateway_config(upstream, db, experiments=[risky]))
    client = client_of(gw)

    def stopped() -> dict[str, Any] | None:
        for i in range(10):  # the client never sees the failures: the route falls back
            headers, _ = ask(client, f"c{i}")
            assert headers["x-gatewise-experiment"] == "risky"
        arms = {a["name"]: a for a in httpx.get(gw.url + "/experiments/risky").json()["arms"]}
        return arms if arms["broken"]["status"] == "stopped_by_guard" else None

    arms = until(stopped, "the guard stops the failing arm", within=20)
    assert "error rate above 0.05" in arms["broken"]["guard"]
    assert arms["broken"]["share"] == 0.0 and arms["control"]["share"] == 1.0
    for i in range(20):
        assert ask(client, f"after-{i}")[0]["x-gatewise-arm"] == "control"
    promote = httpx.post(gw.url + "/experiments/risky/promote", json={"arm": "broken"})
    assert promote.status_code == 409 and "stopped by a guard" in promote.json()["error"]["message"]


def test_experiments_made_at_runtime_survive_a_restart_and_bad_input_gets_clear_errors(
    upstream: FakeUpstream,
    db: Path,
    start_gateway: Callable[..., GatewayProcess],
    client_of: Callable[[GatewayProcess], openai.OpenAI],
) -> None:
    cfg = gateway_config(upstream, db)
    gw = start_gateway(cfg)
    url = gw.url + "/experiments"

    def error(response: httpx.Response, status: int) -> str:
        assert response.status_code == status, response.text
        message = response.json()["error"]["message"]
        assert isinstance(message, str)
        return message

    unknown_model = {**AB, "arms": [AB["arms"][0], {**AB["arms"][1], "model": "nope"}]}
    assert error(httpx.post(url, json=unknown_model), 400) == "arms[1].model: unknown model 'nope'"
    uneven = {**AB, "arms": [AB["arms"][0], {**AB["arms"][1], "share": 0.7}]}
    assert "the shares must sum to 1, they sum to 1.2" in error(httpx.post(url, json=uneven), 400)
    assert "route: unknown route 'slow'" in error(
        httpx.post(url, json={**AB, "route": "slow"}), 400
    )
    assert "arms: " in error(httpx.post(url, json={**AB, "arms": AB["arms"][:1]}), 400)
    assert "must be a JSON object" in error(httpx.post(url, json=[1]), 400)
    assert "colour: unknown field" in error(httpx.post(url, json={**AB, "colour": 1}), 400)
    for method, path in (("GET", "/nope"), ("POST", "/nope/stop"), ("POST", "/nope/promote")):
        missing = httpx.request(method, url + path)
        assert error(missing, 404) == "Unknown experiment 'nope'."

    made = httpx.post(url, json=AB)
    assert made.status_code == 201, made.text
    assert made.json()["source"] == "runtime" and made.json()["state"] == "running"
    assert "exists" in error(httpx.post(url, json=AB), 409)
    busy = error(httpx.post(url, json={**AB, "name": "other"}), 409)
    assert busy == "The route 'auto' already runs the experiment 'ab'; stop or promote it first."
    assert "no winner yet" in error(httpx.post(url + "/ab/promote"), 409)
    assert "Unknown arm 'x'" in error(httpx.post(url + "/ab/promote", json={"arm": "x"}), 400)

    client = client_of(gw)
    for i in range(10):
        assert ask(client, f"c{i}")[0]["x-gatewise-experiment"] == "ab"
    # A stream, and Anthropic's Messages API, are in the experiment too: the same headers,
    # the arm's model, its system prompt in the request the upstream got.
    upstream.seen.clear()
    with client.chat.completions.with_streaming_response.create(
        model="auto", messages=ASKED, stream=True, user="streamer"
    ) as streamed:
        arm = streamed.headers["x-gatewise-arm"]
        assert streamed.headers["x-gatewise-model"] == ("beta" if arm == "challenger" else "alpha")
        assert "".join(streamed.iter_lines())
    with anthropic.Anthropic(base_url=gw.url, api_key="test-key", max_retries=0) as claude:
        raw = claude.messages.with_raw_response.create(
            model="auto", max_tokens=50, system="Be kind.",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-gatewise-conversation": "claude-conversation"},
        )  # fmt: skip
        assert raw.headers["x-gatewise-experiment"] == "ab"
        assert raw.parse().content[0].text
    sent = [s.body for s in upstream.calls("/chat/completions")]
    assert len(sent) == 2
    for arm_name, body in zip((arm, raw.headers["x-gatewise-arm"]), sent, strict=True):
        if arm_name == "challenger":
            assert body["model"] == "beta-up" and body["temperature"] == 0.2
            assert body["messages"][0]["content"] == "Answer briefly. Be kind."
        else:
            assert body["model"] == "alpha-up" and body["messages"][0]["content"] == "Be kind."
    gw.stop()  # a graceful stop publishes this process's tallies

    again = start_gateway(cfg)
    report = httpx.get(again.url + "/experiments/ab").json()
    assert report["state"] == "running"
    assert sum(a["answers"] for a in report["arms"]) == 12
    assert ask(client_of(again), "c0")[0]["x-gatewise-experiment"] == "ab"
    stopped = httpx.post(again.url + "/experiments/ab/stop")
    assert stopped.status_code == 200 and stopped.json()["finish"]["action"] == "stopped"
    assert "x-gatewise-experiment" not in ask(client_of(again), "c1")[0]
    assert "is finished (stopped)" in error(httpx.post(again.url + "/experiments/ab/stop"), 409)


def test_two_replicas_on_one_store_run_one_experiment(
    upstream: FakeUpstream,
    store_url: str,  # before start_gateway: its schema outlives the gateways using it
    start_gateway: Callable[..., GatewayProcess],
    client_of: Callable[[GatewayProcess], openai.OpenAI],
) -> None:
    cfg = upstream_config(upstream)
    cfg["storage"] = {"url": store_url, "flush_interval": 0.2, "share_interval": 0.5}
    one, two = start_gateway(cfg), start_gateway(cfg)
    first, second = client_of(one), client_of(two)
    assert httpx.post(one.url + "/experiments", json=AB).status_code == 201
    until(lambda: "x-gatewise-arm" in ask(second, "probe")[0], "replica two runs it", 3)

    in_experiment = 0
    served_by_two: list[tuple[str, str]] = []
    for i in range(10):
        in_experiment += "x-gatewise-arm" in ask(first, f"one-{i}")[0]
        headers, answer_id = ask(second, f"two-{i}")
        in_experiment += "x-gatewise-arm" in headers
        served_by_two.append((headers["x-gatewise-arm"], answer_id))
    # Ratings of replica two's answers, given to replica one, count for their arms.
    expected = {"control": 0, "challenger": 0}
    for arm, answer_id in served_by_two[:4]:
        expected[arm] += 1
        rated = httpx.post(
            one.url + "/v1/feedback", json={"response_id": answer_id, "overall": 4}, headers=KEY
        )
        assert rated.status_code == 200, rated.text

    def totals(gw: GatewayProcess) -> tuple[int, int]:
        arms = httpx.get(gw.url + "/experiments/ab").json()["arms"]
        return sum(a["answers"] for a in arms), sum(a["n"] for a in arms)

    def agreed() -> bool:
        answers_one, rated_one = totals(one)
        return (
            totals(two) == (answers_one, rated_one)
            and rated_one == 4
            and (answers_one >= in_experiment)
        )

    until(agreed, "both replicas report every answer and rating", 5)
    assert httpx.post(two.url + "/experiments/ab/stop").status_code == 200
    until(lambda: "x-gatewise-arm" not in ask(first, "after")[0], "stopped on one too", 3)
    refused = httpx.post(one.url + "/experiments/ab/promote", json={"arm": "control"})
    assert refused.status_code == 409
