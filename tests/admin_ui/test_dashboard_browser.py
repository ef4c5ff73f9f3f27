"""The /model-performance dashboard in headless Chromium against a live gateway process."""

from __future__ import annotations

import re

import httpx
import openai
import pytest

pytestmark = pytest.mark.browser

HI = [{"role": "user", "content": "hi"}]


def traffic(sdk: openai.OpenAI, alpha: int = 3, beta: int = 2, embeddings: int = 1) -> list[str]:
    ids = []
    for model, n in (("alpha", alpha), ("beta", beta)):
        for _ in range(n):
            ids.append(sdk.chat.completions.create(model=model, messages=HI).id)
    for _ in range(embeddings):
        sdk.embeddings.create(model="embedder", input="hello")
    return ids


def cell(page, model: str, col: str, ctype: str | None = None):
    row = f'#perf tbody tr[data-model="{model}"]'
    if ctype:
        row += f'[data-type="{ctype}"]'
    return page.locator(f'{row} [data-col="{col}"]')


def test_table_shows_the_models_that_served_traffic(start_gateway, ui_config, sdk_for, tab, expect):
    gw = start_gateway(ui_config())
    traffic(sdk_for(gw.url))
    page = tab.page
    page.goto(gw.url + "/model-performance")
    expect(cell(page, "alpha", "requests")).to_have_text("3")
    expect(cell(page, "beta", "requests")).to_have_text("2")
    expect(cell(page, "embedder", "requests")).to_have_text("1")
    expect(cell(page, "alpha", "failures")).to_have_text("0")
    expect(cell(page, "alpha", "success_rate")).to_have_text("100%")
    expect(page.locator("#empty")).to_be_hidden()
    # Busiest first by default; a header button sorts by model name, then reverses.
    expect(page.locator("#perf tbody tr").first).to_have_attribute("data-model", "alpha")
    header = page.locator("#perf thead th", has=page.get_by_role("button", name="Model"))
    page.get_by_role("button", name="Model", exact=True).click()
    expect(header).to_have_attribute("aria-sort", "ascending")
    models = page.locator("#perf tbody tr").evaluate_all("rs => rs.map(r => r.dataset.model)")
    assert models == sorted(models)
    page.get_by_role("button", name="Model", exact=True).press("Enter")
    expect(header).to_have_attribute("aria-sort", "descending")
    expect(page.locator("#perf tbody tr").first).to_have_attribute("data-model", "embedder")
    # New traffic shows up without a reload.
    traffic(sdk_for(gw.url), alpha=2, beta=0, embeddings=0)
    expect(cell(page, "alpha", "requests")).to_have_text("5")
    assert tab.errors == []


def test_conversation_type_filter(start_gateway, ui_config, sdk_for, tab, expect):
    gw = start_gateway(ui_config())
    traffic(sdk_for(gw.url))
    page = tab.page
    page.goto(gw.url + "/model-performance")
    rows = page.locator("#perf tbody tr")
    expect(cell(page, "embedder", "requests")).to_have_text("1")
    page.get_by_label("Conversation type").select_option("embedding")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-model", "embedder")
    expect(page.locator("#rank-type")).to_have_text("(embedding)")
    page.get_by_label("Conversation type").select_option("text-to-text")
    expect(rows).to_have_count(2)
    expect(cell(page, "alpha", "requests", "text-to-text")).to_have_text("3")
    expect(page.locator('#perf tbody tr[data-model="embedder"]')).to_have_count(0)
    page.get_by_label("Conversation type").select_option("text-to-image")
    expect(page.get_by_role("heading", name="No text-to-image traffic yet")).to_be_visible()
    assert tab.errors == []


def test_no_console_errors_across_the_dashboard(start_gateway, ui_config, sdk_for, tab, expect):
    gw = start_gateway(ui_config())
    ids = traffic(sdk_for(gw.url))
    httpx.post(
        gw.url + "/v1/feedback", json={"response_id": ids[0], "overall": 5}
    ).raise_for_status()
    page = tab.page
    page.goto(gw.url + "/model-performance")
    expect(cell(page, "alpha", "fb_overall")).to_contain_text("5.00")
    for figure in (
        "Requests and failures",
        "Latency (p50 and p95)",
        "Cost",
        "Requests by model",
        "Feedback per model",
    ):
        caption = page.locator("figcaption").get_by_text(figure, exact=True)
        expect(page.locator("figure", has=caption).locator("svg.chart")).to_be_visible()
    expect(page.locator('svg[aria-label^="Requests and failures"]')).to_have_attribute(
        "aria-label", re.compile(r"6 requests, 0 failures")
    )
    for metric in ("failures", "latency_ms", "cost"):
        page.get_by_label("Chart metric").select_option(metric)
    for seconds in ("3600", "86400"):
        page.get_by_label("Time range").select_option(seconds)
    by_model = page.locator("figure", has=page.get_by_text("Cost by model", exact=True))
    expect(by_model.locator("polyline")).not_to_have_count(0)
    # Rankings for every optimization, with each score's parts on demand.
    for opt in ("Cost", "Accuracy", "Creativity", "Speed", "Continuity"):
        expect(page.get_by_role("heading", name=opt, exact=True)).to_be_visible()
    parts = page.locator('[data-optimization="cost"] details').first
    parts.locator("summary").click()
    expect(parts.locator("dl.parts")).to_be_visible()
    expect(page.locator("#evaluation")).to_contain_text("Answers logged")
    # The details stay open across a poll.
    page.wait_for_function("document.getElementById('updated').textContent !== 'never'")
    before = page.locator("#updated").text_content()
    expect(page.locator("#updated")).not_to_have_text(before)
    expect(parts).to_have_attribute("open", "")
    assert tab.errors == []


def test_empty_state_until_traffic_arrives(start_gateway, ui_config, sdk_for, tab, expect):
    gw = start_gateway(ui_config())
    page = tab.page
    page.goto(gw.url + "/model-performance")
    empty = page.locator("#empty")
    expect(empty).to_be_visible()
    expect(empty).to_contain_text("No traffic yet")
    expect(page.locator("#empty-base")).to_have_text(gw.url + "/v1")
    expect(cell(page, "alpha", "requests")).to_have_text("0")
    sdk_for(gw.url).chat.completions.create(model="auto", messages=HI)
    expect(empty).to_be_hidden()
    assert tab.errors == []


def test_admin_token_prompt(start_gateway, ui_config, sdk_for, tab, expect):
    gw = start_gateway(ui_config(admin_token="ui-admin-secret"))
    traffic(sdk_for(gw.url))
    page = tab.page
    page.goto(gw.url + "/model-performance")
    token = page.get_by_label("Admin token", exact=True)
    expect(token).to_be_visible()
    expect(token).to_have_attribute("type", "password")
    token.fill("wrong")
    token.press("Enter")
    expect(page.locator("#auth")).to_contain_text("That token was rejected")
    page.get_by_label("Admin token", exact=True).fill("ui-admin-secret")
    page.get_by_role("button", name="Unlock").click()
    expect(cell(page, "alpha", "requests")).to_have_text("3")
    expect(page.locator("#auth form")).to_have_count(0)
    assert page.evaluate("sessionStorage.getItem('gatewise.adminToken')") == "ui-admin-secret"
    assert "ui-admin-secret" not in page.url
    # A reload in the same tab keeps the token; no prompt.
    page.reload()
    expect(cell(page, "beta", "requests")).to_have_text("2")
    expect(page.locator("#auth form")).to_have_count(0)
    # Only the wrong token's 401s are logged; nothing else.
    assert all("401" in e for e in tab.errors), tab.errors


def test_blacklist_countdown_and_clear(start_gateway, ui_config, sdk_for, tab, expect):
    broken = {"name": "broken", "provider": "mock", "mock": {"latency_ms": 0, "failure_rate": 1.0}}
    gw = start_gateway(
        ui_config(extra_models=[broken], extra_routes=[{"name": "shaky", "models": ["broken"]}])
    )
    sdk = sdk_for(gw.url)
    for _ in range(3):
        with pytest.raises(openai.APIError):
            sdk.chat.completions.create(model="shaky", messages=HI)
    page = tab.page
    page.goto(gw.url + "/model-performance")
    row = page.locator('#blacklist tr[data-model="broken"]')
    expect(row).to_be_visible()
    expect(row.locator("td").first).to_have_text("3")
    expect(row).to_contain_text("mock")  # the last error names the mock upstream
    clock = row.locator(".countdown")
    expect(clock).to_have_text(re.compile(r"^\d+:\d\d(:\d\d)?$"))
    first = clock.text_content()
    expect(clock).not_to_have_text(first)  # it ticks every second
    expect(cell(page, "broken", "status")).to_have_text("blacklisted")
    page.get_by_role("button", name="Clear broken from the blacklist").click()
    expect(page.locator("#blacklist-empty")).to_be_visible()
    expect(page.locator("#status")).to_contain_text("broken was cleared")
    assert httpx.get(gw.url + "/performance/blacklisted").json()["data"] == []
    assert tab.errors == []
