"""The /model-performance dashboard in headless Chromium against a live gateway process."""

from __future__ import annotations

import contextlib
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


NAMES = ["gpt-4o-mini-compatible", "claude-3-5-haiku-latest", "llama-3.1-70b-instruct",
         "mistral-large-2411", "qwen2.5-72b-instruct", "flaky-one"]  # fmt: skip


def many_models_config(ui_config):
    """Eight text models (long names, tiny prices: costs in millionths of a dollar), one
    failing half its attempts, never benched, so that a reliability suggestion appears."""
    extra = [
        {
            "name": name,
            "provider": "mock",
            "pricing": {"input_per_million": 0.05, "output_per_million": 0.1},
            "mock": {
                "latency_ms": 0,
                "completion_tokens": 8,
                "seed": i,
                **({"failure_rate": 0.5} if name == "flaky-one" else {}),
            },
        }
        for i, name in enumerate(NAMES, 10)
    ]
    cfg = ui_config(extra_models=extra, extra_routes=[{"name": "all", "models": NAMES}])
    cfg["selection"]["blacklist_threshold"] = 1000
    return cfg


def busy(sdk: openai.OpenAI) -> str:
    answer = ""
    for name in ["alpha", "beta", *NAMES]:
        for _ in range(30 if name == "flaky-one" else 2):
            # flaky-one, asked by name, answers with its failure half the time
            with contextlib.suppress(openai.APIStatusError):
                answer = sdk.chat.completions.create(model=name, messages=HI).id
    return answer


READABLE = """() => {
  for (const d of document.querySelectorAll("details")) d.open = true;
  return document.body.innerText;
}"""


@pytest.mark.parametrize("width", [1400, 1920])
def test_what_the_user_reads(start_gateway, ui_config, sdk_for, tab, expect, width):
    gw = start_gateway(many_models_config(ui_config))
    sdk = sdk_for(gw.url)
    answer = busy(sdk)
    httpx.post(gw.url + "/v1/feedback", json={"response_id": answer, "overall": 4})
    page = tab.page
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(gw.url + "/model-performance")
    expect(cell(page, "flaky-one", "requests")).to_have_text("30")
    expect(page.locator("#evaluation .suggestions")).to_contain_text("flaky-one")

    # The whole models table is in the window: no column off-screen, nothing to scroll.
    box = page.locator("#perf").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, box
    wrap = page.locator("#perf").evaluate(
        "t => [t.parentElement.scrollWidth, t.parentElement.clientWidth]"
    )
    assert wrap[0] <= wrap[1], wrap
    status = page.locator('#perf thead th:has(button[data-key="status"])').bounding_box()
    assert status is not None and status["x"] + status["width"] <= width

    text = page.evaluate(READABLE)
    for wrong in ("[object", "undefined", "NaN", "Infinity"):
        assert wrong not in text, wrong
    # Score parts and a suggestion's evidence read as names and numbers.
    parts = page.locator('[data-optimization="accuracy"] dl.parts').first
    expect(parts).to_contain_text("success rate")
    assert re.search(r"value\s*\n?\s*\d", parts.inner_text())
    evidence = page.locator("#evaluation .suggestions li", has_text="flaky-one").first
    expect(evidence.locator("dl.parts")).to_contain_text("failure rate")
    # A simulated model's failures are its configuration, not an API key.
    expect(evidence).to_contain_text("failure_rate")
    expect(evidence).not_to_contain_text("API key")
    expect(page.locator("#rank-note")).to_contain_text("above 1")

    # Six charts, none empty; axes in plain figures; the model lines told apart.
    figures = page.locator("#charts figure")
    expect(figures).to_have_count(6)
    for i in range(6):
        expect(figures.nth(i).locator("svg.chart")).to_be_visible()
    page.get_by_label("Chart metric").select_option("cost")
    by_model = page.locator("figure", has=page.get_by_text("Cost by model", exact=True))
    expect(by_model.locator("polyline")).to_have_count(8)
    for name in ("Cost", "Cost by model", "Requests and failures"):
        caption = page.locator("figcaption", has_text=re.compile(f"^{name}$"))
        ticks = page.locator("figure", has=caption).locator("text.tick").all_text_contents()
        y_ticks = [t for t in ticks if not re.fullmatch(r"\d\d:\d\d", t)]
        assert len(set(y_ticks)) == 3, y_ticks  # no two ticks alike ("0, 1, 1")
        assert all(re.fullmatch(r"\$?\d[\d,]*(\.\d+)?( µ\$)?", t) for t in y_ticks), y_ticks
    # The axes' formats on the amounts that read $7.5e-7, 0000015 or $1.000 before (the
    # traffic above is too fresh to be drawn: its minute has not ended).
    shown = page.evaluate(
        """async () => {
          const { fmt } = await import("/ui/dom.js");
          const tiny = fmt.costAxis(1.5e-6), small = fmt.costAxis(0.02), one = fmt.costAxis(2);
          return [tiny(7.5e-7), tiny(1.5e-6), small(0.01), one(1), fmt.cost(7.5e-7),
                  fmt.cost(1), fmt.count(0.5), fmt.ms(0.5)];
        }"""
    )
    assert shown == ["0.75 µ$", "1.5 µ$", "$0.01", "$1", "$0.00000075", "$1.00", "0.5", "0.5 ms"]
    styles = by_model.locator("polyline").evaluate_all(
        "ls => ls.map(l => l.getAttribute('stroke') + ' ' + l.getAttribute('stroke-dasharray'))"
    )
    assert len(set(styles)) == 8, styles
    # The minute still filling is not drawn (it would show as a drop at the right edge).
    last = page.locator("#charts figure").first.locator("text.tick").last.text_content()
    now = page.evaluate(
        "() => new Date().toLocaleTimeString([], "
        "{hour: '2-digit', minute: '2-digit', hour12: false})"
    )
    assert last != now
    assert tab.errors == []
