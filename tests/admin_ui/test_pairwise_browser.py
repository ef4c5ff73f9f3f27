"""Blind pairwise judging on /feedback, in headless Chromium."""

from __future__ import annotations

import time

import httpx
import pytest

pytestmark = pytest.mark.browser

QUESTION = [{"role": "user", "content": "Which colour is the sky?"}]


def with_comparison(ui_config):
    config = ui_config(
        extra_models=[{"name": "gamma", "provider": "mock", "mock": {"latency_ms": 0, "seed": 3}}],
        extra_routes=[{"name": "solo", "models": ["alpha"]}],
    )
    config["comparisons"] = [
        {"route": "solo", "challenger": "gamma", "sample": 1.0, "max_daily_usd": 5}
    ]
    return config


def comparisons(gw) -> dict:
    return httpx.get(gw.url + "/comparisons").json()


def test_a_pair_is_judged_blind_and_the_verdict_recorded(
    start_gateway, ui_config, sdk_for, tab, expect
):
    gw = start_gateway(with_comparison(ui_config))
    ours = sdk_for(gw.url).chat.completions.create(model="solo", messages=QUESTION)
    ours_text = ours.choices[0].message.content
    deadline = time.monotonic() + 15
    while comparisons(gw)["comparisons"][0]["pairs"] < 1:  # the challenger's answer is in
        assert time.monotonic() < deadline
        time.sleep(0.05)

    page = tab.page
    page.goto(gw.url + "/feedback")
    panel = page.get_by_role("region", name="Compare two answers")
    expect(panel.locator("#pw-prompt")).to_have_text("user: Which colour is the sky?")
    first = panel.locator('[data-side="a"] blockquote')
    second = panel.locator('[data-side="b"] blockquote')
    expect(first).not_to_be_empty()
    texts = [first.inner_text(), second.inner_text()]
    assert ours_text in texts  # one of the two is the client's answer, the other gamma's
    a_model = "alpha" if texts[0] == ours_text else "gamma"
    b_model = "gamma" if a_model == "alpha" else "alpha"
    # Blind: nothing but the answers themselves (the mock's name itself in them) says who.
    around = panel.inner_text().replace(texts[0], "").replace(texts[1], "")
    assert "alpha" not in around and "gamma" not in around

    panel.get_by_role("button", name="A is better").click()
    result = panel.locator("#pw-result")
    expect(result).to_contain_text("verdict saved")
    expect(result).to_contain_text(f"A was {a_model}, B was {b_model}.")
    expect(panel.locator("#pw-empty")).to_have_text("No pair of answers is waiting to be judged.")
    # The standings, closed while judging, take the verdict in: the winner first.
    details = panel.locator("#pw-details")
    expect(details).not_to_have_attribute("open", "")
    details.locator("summary").click()
    ratings = panel.locator("#pw-ratings tbody tr")
    expect(ratings).to_have_count(2)
    expect(ratings.first).to_have_attribute("data-model", a_model)
    expect(panel.locator("#pw-pairs tbody")).to_contain_text("alpha vs gamma")
    expect(panel.locator("#pw-decided")).to_contain_text("not decided yet")
    expect(panel.locator('[data-comparison="solo-vs-gamma"]')).to_have_text(
        "solo-vs-gamma: solo against gamma, 100% sampled; today $0 of $5.00 (1 answers); "
        "1 of 1 pairs judged."
    )

    results = comparisons(gw)["results"]
    [pair] = results["pairs"]
    assert (pair["model_a"], pair["model_b"], pair["judgements"]) == ("alpha", "gamma", 1)
    assert (pair["a_wins"], pair["b_wins"]) == ((1, 0) if a_model == "alpha" else (0, 1))
    assert results["ratings"][0]["model"] == a_model
    assert comparisons(gw)["comparisons"][0]["judged"] == 1
    assert tab.errors == []


def test_skip_shows_the_next_pair_and_comes_back_round(
    start_gateway, ui_config, sdk_for, tab, expect
):
    gw = start_gateway(with_comparison(ui_config))
    sdk = sdk_for(gw.url)
    for question in ("First question?", "Second question?"):
        sdk.chat.completions.create(model="solo", messages=[{"role": "user", "content": question}])
    deadline = time.monotonic() + 15
    while comparisons(gw)["comparisons"][0]["pairs"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    page = tab.page
    page.goto(gw.url + "/feedback")
    prompt = page.locator("#pw-prompt")
    expect(prompt).to_have_text("user: Second question?")  # the newest first
    page.get_by_role("button", name="Skip").click()
    expect(prompt).to_have_text("user: First question?")
    page.get_by_role("button", name="Skip").click()
    expect(prompt).to_have_text("user: Second question?")  # passed over both: round again
    page.get_by_role("button", name="Tie").click()
    expect(page.locator("#pw-result")).to_contain_text("a tie")
    expect(prompt).to_have_text("user: First question?")
    assert comparisons(gw)["results"]["pairs"][0]["ties"] == 1
    assert tab.errors == []
