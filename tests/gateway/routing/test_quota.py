"""Per-key rate limits and budgets: a sliding minute, UTC days and months, the fleet's
counts added up, and the headers OpenAI clients read. Time is an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.core.config import KeyBudget, KeyRateLimit
from gateway.core.errors import QuotaExceeded, RateLimitExceeded, TokenRateLimitExceeded
from gateway.core.keys import Tenant
from gateway.routing.quota import Quota, QuotaShare
from gateway.storage import SQLiteStore

NOON = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def limited(rpm: int | None = None, tpm: int | None = None, **budget: object) -> Tenant:
    return Tenant(
        "team",
        rate_limit=KeyRateLimit(requests_per_minute=rpm, tokens_per_minute=tpm),
        budget=KeyBudget.model_validate(budget) if budget else None,
    )


def headers(admission: object) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in admission.headers}  # type: ignore[attr-defined]


def test_a_key_without_limits_is_not_counted() -> None:
    quota = Quota(Clock())
    assert quota.admit(Tenant("free")).headers == ()
    assert quota.own == {}


def test_requests_per_minute_is_a_sliding_minute_with_openais_headers() -> None:
    clock = Clock()
    quota = Quota(clock)
    team = limited(rpm=3)
    first = headers(quota.admit(team))
    assert first == {
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "2",
        "x-ratelimit-reset-requests": "1m0s",
    }
    clock.now += 20
    assert headers(quota.admit(team))["x-ratelimit-remaining-requests"] == "1"
    clock.now += 20
    third = headers(quota.admit(team))
    assert third["x-ratelimit-remaining-requests"] == "0"
    assert third["x-ratelimit-reset-requests"] == "20s"  # when the first leaves the window
    with pytest.raises(RateLimitExceeded) as info:
        quota.admit(team)
    assert info.value.retry_after == 20 and "3 requests per minute" in info.value.message
    clock.now += 19.5
    with pytest.raises(RateLimitExceeded):
        quota.admit(team)  # no edge of a fixed minute to slip through
    clock.now += 0.5
    assert headers(quota.admit(team))["x-ratelimit-remaining-requests"] == "0"


def test_tokens_per_minute_counts_what_answers_used() -> None:
    clock = Clock()
    quota = Quota(clock)
    team = limited(tpm=100)
    assert headers(quota.admit(team))["x-ratelimit-remaining-tokens"] == "100"
    quota.record("team", 60, 0.0)
    assert headers(quota.admit(team))["x-ratelimit-remaining-tokens"] == "40"
    quota.record("team", 60, 0.0)  # the answer that crosses the limit was served
    with pytest.raises(TokenRateLimitExceeded) as info:
        quota.admit(team)
    assert info.value.code == "rate_limit_exceeded" and "100 tokens per minute" in str(info.value)
    clock.now += 60
    quota.admit(team)


def test_a_spent_daily_budget_refuses_until_the_next_utc_day() -> None:
    clock = Clock()
    quota = Quota(clock)
    team = limited(daily_usd=1.0, monthly_usd=10.0)
    quota.admit(team)
    quota.record("team", 0, 0.6)
    quota.admit(team)  # 0.6 spent: still under
    quota.record("team", 0, 0.6)  # this answer crossed the budget: served
    with pytest.raises(QuotaExceeded) as info:
        quota.admit(team)
    assert info.value.code == "insufficient_quota" and "daily budget of $1" in str(info.value)
    assert info.value.retry_after == 12 * 3600  # from noon to midnight UTC
    clock.now += 12 * 3600
    quota.admit(team)
    assert quota.report("team")["spend_month"] == pytest.approx(1.2)
    assert quota.report("team")["spend_day"] == 0


def test_a_spent_monthly_budget_and_a_fallback_route() -> None:
    clock = Clock()
    quota = Quota(clock)
    team = limited(monthly_usd=2.0, when_exhausted={"route": "cheap"})
    assert quota.admit(team).route is None
    quota.record("team", 0, 2.5)
    assert quota.admit(team).route == "cheap"  # served, by the cheaper route
    clock.now = datetime(2027, 1, 1, 0, 0, 1, tzinfo=UTC).timestamp()
    assert quota.admit(team).route is None  # a new month


async def test_the_fleet_adds_up_and_a_restart_keeps_the_days_spend() -> None:
    """Two processes on one store: each sees the other's requests after a round, and a
    process started later sees the spend of one that has stopped."""
    clock = Clock()
    async with SQLiteStore(":memory:") as store:
        a, b = Quota(clock), Quota(clock)
        share_a = QuotaShare("a", a, store)
        share_b = QuotaShare("b", b, store)
        team = limited(rpm=4, daily_usd=1.0)
        for _ in range(2):
            a.admit(team)
            b.admit(team)
        a.record("team", 10, 0.7)
        b.record("team", 10, 0.4)
        await share_a.round()
        await share_b.round()
        await share_a.round()
        assert a.report("team")["requests_last_minute"] == 4
        with pytest.raises(QuotaExceeded):
            a.admit(team)  # 1.1 spent across the two
        later = Quota(clock)
        await QuotaShare("c", later, store).round()
        report = later.report("team")
        assert (report["requests_day"], report["tokens_day"]) == (4, 20)
        assert report["spend_day"] == pytest.approx(1.1)
        with pytest.raises(QuotaExceeded):
            later.admit(team)


async def test_the_report_keeps_each_days_figures_across_the_fleet() -> None:
    clock = Clock()
    async with SQLiteStore(":memory:") as store:
        a, b = Quota(clock), Quota(clock)
        team = limited(rpm=1000)
        a.admit(team)
        a.record("team", 30, 0.25)
        clock.now += 86400  # the next day
        a.admit(team)
        b.admit(team)
        b.record("team", 5, 0.5)
        b.failed("team")
        await QuotaShare("a", a, store).round()
        await QuotaShare("b", b, store).round()
        reader = Quota(clock)
        await QuotaShare("r", reader, store).round()
        assert reader.report("team")["days"] == [
            {"day": "2026-12-04", "spend": 0.5, "requests": 2, "tokens": 5, "errors": 1},
            {"day": "2026-12-03", "spend": 0.25, "requests": 1, "tokens": 30, "errors": 0},
        ]
