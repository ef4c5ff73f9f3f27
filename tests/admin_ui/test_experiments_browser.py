"""The dashboard's Experiments panel in headless Chromium against a live gateway: each
arm's results as the operator reads them, and a winner promoted from the page."""

from __future__ import annotations

import httpx
import openai
import pytest

pytestmark = pytest.mark.browser

HI = [{"role": "user", "content": "hi"}]
EXPERIMENT = {
    "name": "short-answers",
    "route": "auto",
    "arms": [
        {"name": "control", "model": "alpha"},
        {"name": "brief", "model": "beta", "system_prompt": "Answer briefly."},
    ],
    "metric": "overall",
    "min_samples": 5,
    "expected_samples": 20,
}


def cell(page, experiment: str, arm: str, col: str):
    return page.locator(f'[data-experiment="{experiment}"] tr[data-arm="{arm}"] [data-col="{col}"]')


def test_the_experiments_panel_shows_each_arms_results_and_promotes_the_winner(
    start_gateway, ui_config, tab, expect
):
    gw = start_gateway({**ui_config(), "experiments": [EXPERIMENT]})
    served: dict[str, list[str]] = {"control": [], "brief": []}
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0) as sdk:
        i = 0
        while min(len(ids) for ids in served.values()) < 8:
            raw = sdk.chat.completions.with_raw_response.create(
                model="auto", messages=HI, extra_headers={"x-gatewise-conversation": f"c{i}"}
            )
            served[raw.headers["x-gatewise-arm"]].append(raw.parse().id)
            i += 1
    for arm, score in (("control", 3), ("brief", 5)):
        for answer in served[arm][:8]:
            rated = httpx.post(
                gw.url + "/v1/feedback", json={"response_id": answer, "overall": score}
            )
            assert rated.status_code == 200, rated.text

    page = tab.page
    page.goto(gw.url + "/model-performance")
    expect(page.get_by_role("heading", name="Experiments")).to_be_visible()
    panel = page.locator('[data-experiment="short-answers"]')
    expect(panel.get_by_role("heading")).to_have_text("short-answers on auto")
    expect(panel.locator('[data-col="verdict"]')).to_have_text("winner: brief")
    expect(cell(page, "short-answers", "control", "arm")).to_have_text("control (control)")
    expect(cell(page, "short-answers", "brief", "n")).to_have_text("8")
    expect(cell(page, "short-answers", "brief", "mean")).to_have_text("5")
    expect(cell(page, "short-answers", "control", "mean")).to_have_text("3")
    expect(cell(page, "short-answers", "brief", "status")).to_have_text("winner")
    expect(cell(page, "short-answers", "control", "status")).to_have_text("behind the winner")
    expect(cell(page, "short-answers", "brief", "difference")).to_contain_text("2 (")
    expect(cell(page, "short-answers", "brief", "share")).to_have_text("50.0%")
    expect(panel.locator("figure figcaption")).to_have_text(
        ["overall: each arm's mean so far", "Difference to the control: its interval over time"]
    )
    legend = panel.locator("figure").nth(1).locator(".legend li")
    expect(legend).to_have_text(["brief vs control, lower bound", "brief vs control, upper bound"])

    panel.get_by_role("button", name="Promote brief").click()
    expect(panel.locator('[data-col="verdict"]')).to_have_text("finished: brief promoted")
    expect(panel.get_by_role("button", name="Stop")).to_have_count(0)
    report = httpx.get(gw.url + "/experiments/short-answers").json()
    assert report["finish"]["arm"] == "brief"
    assert tab.errors == []


def test_without_experiments_there_is_no_panel(start_gateway, ui_config, tab, expect):
    gw = start_gateway(ui_config())
    page = tab.page
    page.goto(gw.url + "/model-performance")
    expect(page.locator('#experiments[data-loaded="true"]')).to_have_count(1)  # polled
    expect(page.get_by_role("heading", name="Experiments")).to_be_hidden()
    assert tab.errors == []
