"""The dashboard's per-prompt routing panel in headless Chromium against a live gateway:
what each model's learner rests on, as the operator reads it."""

from __future__ import annotations

import httpx
import openai
import pytest

pytestmark = pytest.mark.browser


def cell(page, model: str, col: str):
    return page.locator(f'#prompts tbody tr[data-model="{model}"] [data-col="{col}"]')


def test_the_panel_shows_the_ratings_each_learner_rests_on(start_gateway, ui_config, tab, expect):
    gw = start_gateway(
        ui_config(extra_routes=[{"name": "smart", "models": ["alpha", "beta"], "per_prompt": True}])
    )
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0) as sdk:
        for i in range(4):
            reply = sdk.chat.completions.create(
                model="smart", messages=[{"role": "user", "content": f"What is {i} + {i}?"}]
            )
            rated = httpx.post(
                gw.url + "/v1/feedback", json={"response_id": reply.id, "accuracy": 5}
            )
            assert rated.status_code == 200
    page = tab.page
    page.goto(gw.url + "/model-performance")
    expect(page.get_by_role("heading", name="Per-prompt routing")).to_be_visible()
    total = 0
    for model in ("alpha", "beta"):
        expect(cell(page, model, "route")).to_have_text("smart")
        total += int(cell(page, model, "ratings").inner_text())
    assert total == 4
    assert tab.errors == []


def test_without_per_prompt_routes_there_is_no_panel(start_gateway, ui_config, tab, expect):
    gw = start_gateway(ui_config())
    page = tab.page
    page.goto(gw.url + "/model-performance")
    expect(page.locator("#prompts table")).to_have_count(1)  # drawn, and empty
    expect(page.get_by_role("heading", name="Per-prompt routing")).to_be_hidden()
    assert tab.errors == []
