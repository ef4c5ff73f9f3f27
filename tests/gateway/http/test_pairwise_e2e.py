"""POST /v1/feedback/pairwise and GET /comparisons through a real gateway process."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest
from scipy import stats

from tests.conftest import upstream_config
from tests.support.upstream import FakeUpstream

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def gw(start_gateway, upstream: FakeUpstream):
    config = upstream_config(upstream)
    config["server"]["api_keys"] = [
        {"name": "team-a", "key": "key-a"},
        {"name": "team-b", "key": "key-b"},
    ]
    config["routes"].append({"name": "solo", "models": ["alpha"]})
    config["comparisons"] = [
        {"route": "solo", "challenger": "gamma", "sample": 1.0, "max_daily_usd": 5}
    ]
    return start_gateway(config)


def answer(gw, key: str, model: str = "solo") -> str:
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0) as sdk:
        return sdk.chat.completions.create(model=model, messages=HI).id


def judge(gw, key: str, body: Any) -> httpx.Response:
    return httpx.post(
        gw.url + "/v1/feedback/pairwise", json=body, headers={"authorization": f"Bearer {key}"}
    )


def pending(gw, key: str) -> httpx.Response:
    return httpx.get(
        gw.url + "/v1/feedback/pairwise/next", headers={"authorization": f"Bearer {key}"}
    )


def next_pair(gw, key: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while (found := pending(gw, key)).status_code == 404:
        assert time.monotonic() < deadline, found.text
        time.sleep(0.05)
    assert found.status_code == 200, found.text
    return found.json()


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_bad_verdicts_get_clear_errors(gw) -> None:
    alpha = answer(gw, "key-a", "alpha")
    beta = answer(gw, "key-a", "beta")
    theirs = answer(gw, "key-b", "gamma")

    error = error_of(judge(gw, "key-a", {"a": alpha, "b": "chatcmpl-nope", "winner": "a"}), 404)
    assert error["param"] == "b" and error["code"] == "response_not_found"
    assert "chatcmpl-nope" in error["message"]
    # Another key's answer is, to this key, an unknown one.
    error = error_of(judge(gw, "key-a", {"a": theirs, "b": alpha, "winner": "tie"}), 404)
    assert error["param"] == "a"
    error = error_of(judge(gw, "key-a", {"a": alpha, "b": alpha, "winner": "a"}), 422)
    assert error["param"] == "b" and "same answer" in error["message"]
    error = error_of(judge(gw, "key-a", {"a": alpha, "b": beta, "winner": "first"}), 422)
    assert error["param"] == "winner"
    assert error["message"] == '\'winner\' must be one of "a", "b" or "tie", got "first".'
    error = error_of(judge(gw, "key-a", {"a": alpha, "winner": "a"}), 422)
    assert error["param"] == "b"
    error = error_of(judge(gw, "key-a", {"a": alpha, "b": beta, "winner": "a", "x": 1}), 422)
    assert error["param"] == "x"
    error = error_of(judge(gw, "key-a", [alpha, beta]), 400)
    assert "JSON object" in error["message"]
    bad_json = httpx.post(
        gw.url + "/v1/feedback/pairwise",
        content=b"{not json",
        headers={"authorization": "Bearer key-a", "content-type": "application/json"},
    )
    assert (
        bad_json.status_code == 400 and bad_json.json()["error"]["type"] == "invalid_request_error"
    )
    same_model = answer(gw, "key-a", "alpha")
    error = error_of(judge(gw, "key-a", {"a": alpha, "b": same_model, "winner": "a"}), 422)
    assert "compares two models" in error["message"]
    assert judge(gw, "nope", {"a": alpha, "b": beta, "winner": "a"}).status_code == 401

    # A good one, then the same two answers the other way round: it replaces the first.
    first = judge(gw, "key-a", {"a": alpha, "b": beta, "winner": "a"})
    assert first.status_code == 200, first.text
    assert first.json() == {
        "object": "pairwise_feedback", "a": alpha, "b": beta, "winner": "a",
        "model_a": "alpha", "model_b": "beta", "pair_id": None, "replaced_previous": False,
    }  # fmt: skip
    again = judge(gw, "key-a", {"a": beta, "b": alpha, "winner": "tie"}).json()
    assert again["replaced_previous"] is True
    results = httpx.get(gw.url + "/comparisons").json()["results"]
    assert results["pairs"] == [{
        "model_a": "alpha", "model_b": "beta", "judgements": 1, "a_wins": 0, "b_wins": 0,
        "ties": 1, "a_win_rate": None, "a_win_rate_ci": None,
    }]  # fmt: skip


def test_comparisons_report_win_rates_and_bradley_terry(gw) -> None:
    verdicts = ["b", "b", "a", "b", "tie"]  # the challenger (gamma, shown as b) wins 3 of 4
    for winner in verdicts:
        answer(gw, "key-a")
        pair = next_pair(gw, "key-a")
        # Blind: which side is the challenger's is known only to the gateway (and the test,
        # by its text: every model answers the same here, so by the pair's own ids).
        sides = {pair["first"]["response_id"], pair["second"]["response_id"]}
        b_side = max(sides, key=lambda rid: judge_model(gw, rid))
        a_side = (sides - {b_side}).pop()
        out = judge(gw, "key-a", {"a": a_side, "b": b_side, "winner": winner})
        assert out.status_code == 200, out.text
        assert out.json()["pair_id"] == pair["pair_id"]
    # Every pair is judged; team-b has none of its own to judge.
    assert error_of(pending(gw, "key-a"), 404)["code"] == "no_pending_pair"
    assert error_of(pending(gw, "key-b"), 404)["code"] == "no_pending_pair"

    body = httpx.get(gw.url + "/comparisons").json()
    [comparison] = body["comparisons"]
    assert comparison["name"] == "solo-vs-gamma" and comparison["challenger"] == "gamma"
    assert comparison["pairs"] == 5 and comparison["judged"] == 5 and comparison["shadows"] == 5
    results = body["results"]
    [pair] = results["pairs"]
    low, high = stats.binomtest(1, 4).proportion_ci(0.95, method="wilson")
    assert pair == {
        "model_a": "alpha", "model_b": "gamma", "judgements": 5, "a_wins": 1, "b_wins": 3,
        "ties": 1, "a_win_rate": 0.25, "a_win_rate_ci": [round(low, 4), round(high, 4)],
    }  # fmt: skip
    gamma, alpha = results["ratings"]
    assert (gamma["model"], gamma["rank"], alpha["model"], alpha["rank"]) == (
        "gamma",
        1,
        "alpha",
        2,
    )
    assert gamma["rating"] > 1000 > alpha["rating"]
    assert gamma["rating"] - 1000 == pytest.approx(1000 - alpha["rating"], abs=0.2)
    assert gamma["rating_ci"][0] < gamma["rating"] < gamma["rating_ci"][1]
    assert gamma["judgements"] == alpha["judgements"] == 5
    assert results["order_decided"] is False  # five judgements decide nothing
    # Only this route's verdicts; an unknown route is an error in the API's shape.
    assert httpx.get(gw.url + "/comparisons?route=auto").json()["results"]["pairs"] == []
    assert error_of(httpx.get(gw.url + "/comparisons?route=nope"), 422)["param"] == "route"


def judge_model(gw, response_id: str) -> str:
    """Which model gave an answer, as the admin sees it."""
    return httpx.get(f"{gw.url}/admin/responses/{response_id}").json()["model"]


def test_comparisons_and_blind_pairs_are_the_admins(start_gateway, upstream) -> None:
    config = upstream_config(upstream)
    config["server"]["admin_token"] = "admin-secret"
    gw = start_gateway(config)
    for method, path in (("GET", "/comparisons"), ("GET", "/admin/pairs/next"),
                         ("POST", "/admin/feedback/pairwise")):  # fmt: skip
        refused = httpx.request(method, gw.url + path, json={})
        assert refused.status_code == 401, path
        assert refused.json()["error"]["code"] == "invalid_admin_token"
    ok = httpx.get(gw.url + "/comparisons", headers={"authorization": "Bearer admin-secret"})
    assert ok.status_code == 200
    assert ok.json() == {
        "object": "comparisons", "comparisons": [],
        "results": {**ok.json()["results"], "pairs": [], "ratings": [], "order_decided": False},
    }  # fmt: skip
    # The client key's own queue is not the admin's: a key sees none of it here.
    assert pending(gw, "test-key").json()["error"]["code"] == "no_pending_pair"
