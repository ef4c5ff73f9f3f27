"""The feedback form, on the dashboard and on /feedback, in headless Chromium."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.browser

HI = [{"role": "user", "content": "hi"}]
XSS = "<script>window.__xss=1</script> <img src=x onerror=window.__xss=2>"


def test_rating_from_the_dashboard_reaches_the_api(start_gateway, ui_config, sdk_for, tab, expect):
    gw = start_gateway(ui_config())
    sdk = sdk_for(gw.url)
    answer = sdk.chat.completions.create(model="alpha", messages=HI)
    sdk.chat.completions.create(model="beta", messages=HI)
    page = tab.page
    page.goto(gw.url + "/model-performance")
    page.get_by_label("Recent answer").select_option(answer.id)
    expect(page.get_by_label("Response id")).to_have_value(answer.id)
    preview = page.locator("#fb-preview")
    expect(preview.locator('[data-field="model"]')).to_have_text("alpha")
    expect(preview.locator("blockquote")).to_have_text(answer.choices[0].message.content)
    ratings = page.get_by_role("group", name="Ratings")
    ratings.get_by_role("group", name="Overall").get_by_label("4").check()
    ratings.get_by_role("group", name="Accuracy").get_by_label("5").check()
    page.get_by_label("Comment (optional)").fill("Good enough")
    page.get_by_role("button", name="Submit rating").click()
    result = page.locator("#fb-result")
    expect(result).to_contain_text("rating saved for alpha")
    expect(result).to_contain_text("accuracy 5, overall 4")
    body = httpx.get(gw.url + "/evaluations/model/alpha").json()
    [aggregate] = body["feedback"]
    assert aggregate["overall"] == 4 and aggregate["accuracy"] == 5
    assert body["feedback_history"][0]["comment"] == "Good enough"
    # The ratings reset, the table and the recent list pick the rating up.
    expect(page.locator("#fb-overall-skip")).to_be_checked()
    expect(page.locator('#perf tr[data-model="alpha"] [data-col="fb_overall"]')).to_contain_text(
        "4.00"
    )
    expect(page.locator("#recent-list")).to_contain_text("Good enough")
    assert tab.errors == []


def test_comment_markup_is_shown_as_text(start_gateway, ui_config, sdk_for, tab, expect):
    gw = start_gateway(ui_config())
    answer = sdk_for(gw.url).chat.completions.create(model="beta", messages=HI)
    page = tab.page
    page.goto(gw.url + "/feedback")
    page.get_by_label("Response id").fill(answer.id)
    expect(page.locator('#fb-preview [data-field="model"]')).to_have_text("beta")
    page.locator("#fb-helpfulness-2").check()
    page.get_by_label("Comment (optional)").fill(XSS)
    page.get_by_role("button", name="Submit rating").click()
    expect(page.locator("#fb-result .comment")).to_have_text(XSS)
    assert page.locator("#fb-result script, #fb-result img").count() == 0
    page.goto(gw.url + "/model-performance")
    recent = page.locator("#recent-list")
    expect(recent.locator(".comment")).to_have_text(XSS)
    assert page.locator("#recent-list script, #recent-list img").count() == 0
    assert page.evaluate("window.__xss") is None
    assert tab.errors == []


def test_form_explains_what_is_wrong(start_gateway, ui_config, sdk_for, tab, expect):
    gw = start_gateway(ui_config())
    answer = sdk_for(gw.url).chat.completions.create(model="alpha", messages=HI)
    page = tab.page
    page.goto(gw.url + "/feedback")
    submit = page.get_by_role("button", name="Submit rating")
    id_msg = page.locator("#fb-id-msg")
    ratings_msg = page.locator("#fb-ratings-msg")
    expect(page.get_by_label("Recent answer")).to_contain_text(answer.id)
    submit.click()
    expect(id_msg).to_have_text("Enter a response id or pick a recent answer.")
    expect(ratings_msg).to_have_text("Give at least one rating from 1 to 5.")
    page.get_by_label("Response id").fill(answer.id)
    submit.click()
    expect(id_msg).to_have_text("")
    expect(ratings_msg).to_have_text("Give at least one rating from 1 to 5.")
    # An unknown id: the server's message, next to the field.
    page.get_by_label("Response id").fill("chatcmpl-does-not-exist")
    page.locator("#fb-relevance-3").check()
    expect(ratings_msg).to_have_text("")
    submit.click()
    expect(id_msg).to_have_text("No answer with response id 'chatcmpl-does-not-exist' is known.")
    expect(page.get_by_label("Response id")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#fb-result")).to_have_text("")
    assert httpx.get(gw.url + "/evaluations/model/alpha").json()["feedback"] == []
    # The only console noise is the 404 of the unknown id.
    assert all("404" in e for e in tab.errors), tab.errors
