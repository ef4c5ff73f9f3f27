"""The dashboard's Keys panel in headless Chromium against a live gateway: what each
client key used, as the operator reads it, and no secret anywhere on the page."""

from __future__ import annotations

import re

import openai
import pytest

pytestmark = pytest.mark.browser

HI = [{"role": "user", "content": "hi"}]
SECRET = "sk-team-a-very-secret"


def key_cell(page, name: str, col: str):
    return page.locator(f'#keys tbody tr[data-key="{name}"] [data-col="{col}"]')


def test_the_keys_panel_shows_each_keys_use_against_its_limits(
    start_gateway, ui_config, tab, expect
):
    limited = {
        "name": "team-a",
        "key": SECRET,
        "routes": ["auto"],
        "budget": {"daily_usd": 5, "monthly_usd": 100},
        "rate_limit": {"requests_per_minute": 60, "max_concurrent": 8},
    }
    gw = start_gateway(ui_config(api_keys=[limited, {"name": "team-b", "key": "sk-b"}]))
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=SECRET, max_retries=0) as team_a:
        for _ in range(3):
            team_a.chat.completions.create(model="auto", messages=HI)
    page = tab.page
    page.goto(gw.url + "/model-performance")
    expect(page.get_by_role("heading", name="Keys")).to_be_visible()
    expect(key_cell(page, "team-a", "requests_day")).to_have_text("3")
    expect(key_cell(page, "team-a", "scope")).to_have_text("auto")
    expect(key_cell(page, "team-a", "last_minute")).to_have_text("3 of 60")
    expect(key_cell(page, "team-a", "in_flight")).to_have_text("0 of 8")  # all answered
    # Three answers of whichever models the route drew (Thompson sampling): under a
    # dollar, not nothing.
    spent = r"\$0\.0*[1-9]\d*"
    expect(key_cell(page, "team-a", "spend_day")).to_have_text(
        re.compile(rf"^{spent} of \$5(\.0+)?$")
    )
    expect(key_cell(page, "team-a", "spend_month")).to_have_text(
        re.compile(rf"^{spent} of \$100(\.0+)?$")
    )
    expect(key_cell(page, "team-b", "requests_day")).to_have_text("0")
    expect(key_cell(page, "team-b", "scope")).to_have_text("everything")
    assert SECRET not in page.content()
    assert tab.errors == []


def test_without_keys_there_is_no_keys_panel(start_gateway, ui_config, sdk_for, tab, expect):
    gw = start_gateway(ui_config())
    page = tab.page
    page.goto(gw.url + "/model-performance")
    expect(page.locator("#keys table")).to_have_count(1)  # drawn, and empty
    expect(page.get_by_role("heading", name="Keys")).to_be_hidden()
    assert tab.errors == []
