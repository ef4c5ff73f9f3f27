"""Keys as identities, end to end: a real gateway with named keys, the official SDK, and
the store across a restart. An answer belongs to the key that received it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
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
