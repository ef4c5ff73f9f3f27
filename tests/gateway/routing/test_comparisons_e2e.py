"""Same-prompt comparisons through a real gateway process: the challenger's shadow call
never reaches or delays the client, its cost is counted, and the day's cap stops it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai

from tests.conftest import upstream_config
from tests.support.upstream import FakeUpstream

HI = [{"role": "user", "content": "Name a colour."}]
CHALLENGER = "The challenger's answer: teal."
# gamma's answers cost (11 + 7) tokens x $1,000 per million = $0.018 each.
PRICE = {"input_per_million": 1000, "output_per_million": 1000}


def comparison_config(upstream: FakeUpstream, **comparison: Any) -> dict[str, Any]:
    config = upstream_config(upstream)
    for model in config["models"]:
        if model["name"] == "gamma":
            model["pricing"] = PRICE
    config["routes"].append({"name": "solo", "models": ["alpha"]})
    config["comparisons"] = [
        {"route": "solo", "challenger": "gamma", "sample": 1.0, "max_daily_usd": 0.03,
         **comparison}
    ]  # fmt: skip
    return config


def wait_for(read: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool]) -> dict:
    """Poll the gateway until `done` holds (it answers within a second or two)."""
    deadline = time.monotonic() + 15
    while True:
        seen = read()
        if done(seen):
            return seen
        assert time.monotonic() < deadline, seen
        time.sleep(0.05)


def test_a_slow_challenger_never_reaches_or_delays_the_client(start_gateway, upstream) -> None:
    gate = threading.Event()
    held = upstream.behave("gamma-up", content=CHALLENGER, hold=gate).held
    gw = start_gateway(comparison_config(upstream))
    status = lambda: httpx.get(gw.url + "/comparisons").json()["comparisons"][0]  # noqa: E731
    # The challenger answers only when the test says (or after a minute): a shadow on the
    # client's path would time this client out.
    sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key="test-key", max_retries=0, timeout=10)

    raw = sdk.chat.completions.with_raw_response.create(model="solo", messages=HI)
    answer = raw.parse()
    # The client has its whole answer, from the route's model; the challenger's upstream
    # has the same prompt (not streamed) and has not answered it.
    assert raw.headers["x-gatewise-model"] == "alpha"
    assert answer.choices[0].message.content == "Hello from the fake upstream."
    assert held.wait(10)
    assert not gate.is_set()
    [shadow] = [s for s in upstream.seen if s.body.get("model") == "gamma-up"]
    assert shadow.body["messages"] == HI and shadow.body.get("stream") is not True
    running = status()
    assert running["in_flight"] == 1 and running["shadows"] == 0 and running["spent_usd"] == 0

    gate.set()
    done = wait_for(status, lambda s: s["pairs"] == 1)
    assert done["shadows"] == 1 and done["in_flight"] == 0
    assert abs(done["spent_usd"] - 0.018) < 1e-9
    assert done["cap_reached"] is False

    # A streamed request: the client's stream is the route's model's; the shadow is not
    # streamed, and it is the one that reaches the cap.
    stream = sdk.chat.completions.create(model="solo", messages=HI, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text and CHALLENGER not in text
    done = wait_for(status, lambda s: s["pairs"] == 2)
    assert abs(done["spent_usd"] - 0.036) < 1e-9 and done["cap_reached"] is True
    shadows = [s for s in upstream.seen if s.body.get("model") == "gamma-up"]
    assert len(shadows) == 2 and shadows[1].body.get("stream") is False

    # Spent: the next answers are not shadowed, and that is counted.
    for _ in range(3):
        sdk.chat.completions.create(model="solo", messages=HI)
    capped = wait_for(status, lambda s: s["capped"] == 3)
    assert capped["shadows"] == 2
    assert len([s for s in upstream.seen if s.body.get("model") == "gamma-up"]) == 2

    # The shadow's answer is its own, stored: it has a response id, it is paired with
    # the client's, and the pair is the client key's to judge.
    pair = httpx.get(
        gw.url + "/v1/feedback/pairwise/next", headers={"authorization": "Bearer test-key"}
    ).json()
    ids = {pair["first"]["response_id"], pair["second"]["response_id"]}
    texts = {pair["first"]["answer"], pair["second"]["answer"]}
    assert texts == {"Hello from the fake upstream.", CHALLENGER}
    assert pair["prompt"] == "user: Name a colour."
    assert "model" not in pair["first"] and "model" not in pair["second"]
    assert len(ids) == 2
    # Both answers were evaluated automatically, each under its own model.
    judged = {
        rid: wait_for(
            lambda rid=rid: httpx.get(f"{gw.url}/admin/responses/{rid}").json(),
            lambda r: r["auto_score"] is not None,
        )
        for rid in ids
    }
    assert {r["model"] for r in judged.values()} == {"alpha", "gamma"}
    assert all(r["auto_score"] == 1.0 and r["owner"] is not None for r in judged.values())
    sdk.close()


def test_the_shadow_is_no_key_spend(start_gateway, upstream) -> None:
    """The client key's budget pays for its own answers, never for the challenger's."""
    config = comparison_config(upstream, max_daily_usd=5)
    config["server"]["api_keys"] = [
        {"name": "team", "key": "team-key", "budget": {"daily_usd": 100}}
    ]
    gw = start_gateway(config)
    sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key="team-key", max_retries=0)
    sdk.chat.completions.create(model="solo", messages=HI)
    wait_for(
        lambda: httpx.get(gw.url + "/comparisons").json()["comparisons"][0],
        lambda s: s["pairs"] == 1,
    )
    usage = httpx.get(gw.url + "/admin/keys/team/usage").json()
    # alpha: 11 x $1 + 7 x $2 per million; gamma's $0.018 is not there.
    assert abs(usage["usage"]["spend_day"] - 0.000025) < 1e-9, usage
    sdk.close()


def test_two_replicas_share_the_spend_the_pairs_and_the_verdicts(
    start_gateway, upstream, store_url
) -> None:
    """The cap is the fleet's: a replica that shadowed nothing sees the other's spend,
    stops sampling once it is reached, and judges the other's pair."""
    config = comparison_config(upstream)  # $0.018 a shadow, $0.03 a day
    config["storage"] = {"url": store_url, "share_interval": 0.2, "flush_interval": 0.2}
    one, two = start_gateway(config), start_gateway(config)
    status = lambda gw: httpx.get(gw.url + "/comparisons").json()["comparisons"][0]  # noqa: E731
    with openai.OpenAI(base_url=one.url + "/v1", api_key="test-key", max_retries=0) as sdk:
        for _ in range(2):
            sdk.chat.completions.create(model="solo", messages=HI)
    seen = wait_for(lambda: status(two), lambda s: s["shadows"] == 2 and s["pairs"] == 2)
    assert seen["cap_reached"] is True and abs(seen["spent_usd"] - 0.036) < 1e-9
    with openai.OpenAI(base_url=two.url + "/v1", api_key="test-key", max_retries=0) as sdk:
        sdk.chat.completions.create(model="solo", messages=HI)
    assert wait_for(lambda: status(two), lambda s: s["capped"] == 1)["shadows"] == 2
    assert len([s for s in upstream.seen if s.body.get("model") == "gamma-up"]) == 2

    pair = httpx.get(two.url + "/admin/pairs/next").json()
    verdict = {"a": pair["first"]["response_id"], "b": pair["second"]["response_id"],
               "winner": "tie"}  # fmt: skip
    judged = httpx.post(two.url + "/admin/feedback/pairwise", json=verdict)
    assert judged.status_code == 200, judged.text
    results = httpx.get(one.url + "/comparisons").json()["results"]
    assert [(p["model_a"], p["model_b"], p["ties"]) for p in results["pairs"]] == [
        ("alpha", "gamma", 1)
    ]


def test_an_anthropic_client_s_request_is_compared_too(start_gateway, upstream) -> None:
    """/v1/messages, streamed: the client's stream is untouched, the challenger gets the
    same conversation (translated for its upstream), not streamed."""
    import anthropic

    upstream.behave("gamma-up", content=CHALLENGER)
    gw = start_gateway(comparison_config(upstream, max_daily_usd=5))
    client = anthropic.Anthropic(base_url=gw.url, api_key="test-key", max_retries=0)
    with client.messages.stream(
        model="solo", max_tokens=50, system="Be brief.", messages=HI
    ) as stream:
        text = "".join(stream.text_stream)
    assert text and CHALLENGER not in text
    wait_for(
        lambda: httpx.get(gw.url + "/comparisons").json()["comparisons"][0],
        lambda s: s["pairs"] == 1,
    )
    [shadow] = [s for s in upstream.seen if s.body.get("model") == "gamma-up"]
    assert shadow.path == "/chat/completions" and shadow.body.get("stream") is not True
    pair = httpx.get(gw.url + "/admin/pairs/next").json()
    assert pair["prompt"] == "system: Be brief.\nuser: Name a colour."
    assert {pair["first"]["answer"], pair["second"]["answer"]} == {text, CHALLENGER}
    client.close()
