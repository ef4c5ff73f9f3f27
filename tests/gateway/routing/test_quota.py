"""Per-key rate limits and budgets: a sliding minute, UTC days and months, the fleet's
counts added up, and the headers OpenAI clients read. Time is an injected clock."""

from __future__ import annotations

import asyncio
import math
import random
from datetime import UTC, datetime

import pytest

from gateway.core.config import KeyBudget, KeyRateLimit
from gateway.core.errors import (
    ConcurrencyLimitExceeded,
    QuotaExceeded,
    RateLimitExceeded,
    TokenRateLimitExceeded,
)
from gateway.core.headers import header_strings
from gateway.core.keys import Tenant
from gateway.routing.quota import STOPPED, USAGE, Quota, QuotaShare, Usage
from gateway.storage import SQLiteStore, create_store

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


def headers(admission: tuple[str | None, bytes]) -> dict[str, str]:
    return header_strings(admission[1])


def test_a_key_without_limits_is_not_counted() -> None:
    quota = Quota(Clock())
    assert quota.admit(Tenant("free")) == (None, b"")
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
    assert dict(info.value.headers) == {  # the refusal says it too, as OpenAI's does
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "20s",
    }
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
    assert quota.refusals == {("team", "tokens"): 1}
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
    assert quota.refusals == {("team", "budget"): 1}
    clock.now += 12 * 3600
    quota.admit(team)
    assert quota.report("team")["spend_month"] == pytest.approx(1.2)
    assert quota.report("team")["spend_day"] == 0


def test_a_spent_monthly_budget_and_a_fallback_route() -> None:
    clock = Clock()
    quota = Quota(clock)
    team = limited(monthly_usd=2.0, when_exhausted={"route": "cheap"})
    assert quota.admit(team)[0] is None
    quota.record("team", 0, 2.5)
    assert quota.admit(team)[0] == "cheap"  # served, by the cheaper route
    clock.now = datetime(2027, 1, 1, 0, 0, 1, tzinfo=UTC).timestamp()
    assert quota.admit(team)[0] is None  # a new month


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


class Reference:
    """What the limits mean, worked out the slow way from every request and answer kept:
    the gate's shortcuts must decide exactly as this does."""

    def __init__(self, tenant: Tenant) -> None:
        self.tenant = tenant
        self.requests: list[float] = []
        self.answers: list[tuple[float, int, float]] = []  # (when, tokens, cost)

    def admit(self, now: float) -> tuple[str | None, dict[str, str]]:
        second = int(now)
        recent = [t for t in self.requests if int(t) > second - 60]
        used = [(t, n) for t, n, _ in self.answers if int(t) > second - 60]
        day = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
        spent_day = sum(c for t, _, c in self.answers if _day(t) == day)
        spent_month = sum(c for t, _, c in self.answers if _day(t)[:7] == day[:7])
        route = None
        budget = self.tenant.budget
        if budget is not None:
            daily, monthly = budget.daily_usd, budget.monthly_usd
            over_day = daily is not None and spent_day >= daily
            if over_day or (monthly is not None and spent_month >= monthly):
                if isinstance(budget.when_exhausted, str):
                    raise QuotaExceeded("spent")
                route = budget.when_exhausted.route
        out: dict[str, str] = {}
        limit = self.tenant.rate_limit
        if limit is not None:
            seconds = [int(t) for t in recent] + [int(t) for t, n in used if n]
            reset = min(seconds) + 60 - now if seconds else 0.0
            wait = str(max(1, math.ceil(reset)))
            rpm, tpm = limit.requests_per_minute, limit.tokens_per_minute
            tokens = sum(n for _, n in used)
            if rpm is not None and len(recent) >= rpm:
                raise RateLimitExceeded("requests", retry_after=int(wait))
            if tpm is not None and tokens >= tpm:
                raise TokenRateLimitExceeded("tokens", retry_after=int(wait))
            whole = min(60, max(1, math.ceil(reset or 60)))
            resets = "1m0s" if whole == 60 else f"{whole}s"
            if rpm is not None:
                out["x-ratelimit-limit-requests"] = str(rpm)
                out["x-ratelimit-remaining-requests"] = str(rpm - len(recent) - 1)
                out["x-ratelimit-reset-requests"] = resets
            if tpm is not None:
                out["x-ratelimit-limit-tokens"] = str(tpm)
                out["x-ratelimit-remaining-tokens"] = str(max(0, tpm - tokens))
                out["x-ratelimit-reset-tokens"] = resets
        self.requests.append(now)
        return route, out


def _day(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d")


def _random_tenant(rng: random.Random) -> Tenant:
    rpm = rng.choice([None, rng.randint(1, 25)])
    tpm = rng.choice([None, rng.randint(50, 600)])
    budget: dict[str, object] = {}
    if rng.random() < 0.7:
        budget = {"daily_usd": rng.choice([None, rng.uniform(0.05, 1.0)]),
                  "monthly_usd": rng.uniform(0.5, 3.0),
                  "when_exhausted": rng.choice(["reject", {"route": "cheap"}])}  # fmt: skip
    if rpm is None and tpm is None and not budget:
        rpm = 10
    return Tenant(
        "team",
        rate_limit=KeyRateLimit(requests_per_minute=rpm, tokens_per_minute=tpm)
        if rpm is not None or tpm is not None
        else None,
        budget=KeyBudget.model_validate(budget) if budget else None,
    )


@pytest.mark.parametrize("seed", range(10))
def test_admission_decides_as_counting_every_request_would(seed: int) -> None:
    """Random traffic (bursts within a second, pauses across the window's edge, days and
    months ending, limits changed at runtime, reports read in between): every request
    is let through, routed or refused, with the same headers, as the slow reference
    decides, and the counts reported are its counts."""
    rng = random.Random(seed)
    clock = Clock(datetime(2026, 12, 31, 23, 50, 0, tzinfo=UTC).timestamp())
    quota = Quota(clock)
    team = _random_tenant(rng)
    reference = Reference(team)
    outcomes: set[str] = set()
    for _ in range(700):
        roll = rng.random()
        if roll < 0.6:
            try:
                expected: object = reference.admit(clock.now)
            except (QuotaExceeded, RateLimitExceeded, TokenRateLimitExceeded) as exc:
                expected = (type(exc), exc.retry_after if not isinstance(exc, QuotaExceeded) else 0)
            try:
                route, got = quota.admit(team)
                actual: object = (route, header_strings(got))
            except (QuotaExceeded, RateLimitExceeded, TokenRateLimitExceeded) as exc:
                actual = (type(exc), exc.retry_after if not isinstance(exc, QuotaExceeded) else 0)
            assert actual == expected
            outcomes.add(str(actual[0]))  # type: ignore[index]
        elif roll < 0.85 and reference.requests:
            tokens, cost = rng.choice([0, rng.randint(1, 80)]), rng.uniform(0.0, 0.08)
            quota.record("team", tokens, cost)
            reference.answers.append((clock.now, tokens, cost))
        elif roll < 0.88:
            report = quota.report("team")
            second = int(clock.now)
            assert report["requests_last_minute"] == sum(
                1 for t in reference.requests if int(t) > second - 60
            )
            today = _day(clock.now)
            assert report["requests_day"] == sum(1 for t in reference.requests if _day(t) == today)
            answers = reference.answers
            assert report["tokens_last_minute"] == sum(
                n for t, n, _ in answers if int(t) > second - 60
            )
            assert report["tokens_day"] == sum(n for t, n, _ in answers if _day(t) == today)
            assert report["spend_day"] == pytest.approx(
                sum(c for t, _, c in answers if _day(t) == today), abs=1e-5
            )
        elif roll < 0.89:
            team = _random_tenant(rng)  # its limits changed at runtime
            reference.tenant = team
        else:
            pause = [rng.uniform(0, 0.3)] * 6 + [rng.uniform(1, 5), rng.uniform(55, 65)]
            clock.now += rng.choice(pause)
    assert len(outcomes) >= 2, outcomes  # a limit was reached, not only let through


async def test_what_the_fleet_counted_counts_within_the_same_second() -> None:
    """A share round brings the others' requests; the very next request here is checked
    against them, not against what this process knew when its second began."""
    clock = Clock()
    async with SQLiteStore(":memory:") as store:
        a, b = Quota(clock), Quota(clock)
        share_a, share_b = QuotaShare("a", a, store), QuotaShare("b", b, store)
        team = limited(rpm=5)
        assert headers(a.admit(team))["x-ratelimit-remaining-requests"] == "4"
        for _ in range(3):
            b.admit(team)
        await share_b.round()
        await share_a.round()
        assert headers(a.admit(team))["x-ratelimit-remaining-requests"] == "0"
        with pytest.raises(RateLimitExceeded):
            a.admit(team)
        await share_a.round()  # what `a` let through is published, gates or not
        await share_b.round()
        assert b.report("team")["requests_last_minute"] == 5


# -- many origins: a fleet that restarted often ---------------------------------------


def _peer_usage(rng: random.Random, now: float) -> Usage:
    """What another origin published: counted just now, a while ago, or days ago."""
    usage = Usage()
    when = now - rng.choice([0, 0, 5, 50, 70, 3600, 86400, 40 * 86400])
    for _ in range(rng.randint(1, 4)):
        usage.add(when, requests=rng.randint(0, 3), tokens=rng.randint(0, 50),
                  cost=rng.uniform(0, 0.2))  # fmt: skip
    return usage


@pytest.mark.parametrize("seed", range(6))
def test_with_many_origins_admission_counts_every_one_of_them(seed: int) -> None:
    """Idle and stopped origins are kept apart from the active ones for speed; every
    decision must still be the one a count over every origin gives: a budget just
    under or over the fleet's spend today and this month, a rate limit just under or
    over its requests in the last minute, across seconds, hours, days and months."""
    rng = random.Random(seed)
    clock = Clock(datetime(2026, 11, 28, 23, 59, 0, tzinfo=UTC).timestamp())
    quota = Quota(clock)
    origins = [f"host:{i}" for i in range(60)]
    for origin in origins:
        quota.take(origin, "team", _peer_usage(rng, clock.now))
    checked = 0
    for _ in range(400):
        clock.now += rng.choice([1, 1, 2, 30, 61, 3600, 86400])
        for origin in rng.sample(origins, rng.randint(0, 3)):
            quota.take(origin, "team", _peer_usage(rng, clock.now))
        quota.settle()
        now, day = clock.now, _day(clock.now)
        counted = [quota.own.get("team"), *(p.get("team") for p in quota.peers.values())]
        usages = [u for u in counted if u is not None]
        spent_day = sum(u.spend_day for u in usages if u.day == day)
        spent_month = sum(u.spend_month for u in usages if u.month == day[:7])
        requests = sum(u.recent(now)[0] for u in usages)
        which = rng.choice(["daily", "monthly", "rpm"])
        over = rng.random() < 0.5
        if which == "rpm":
            rpm = int(requests) if over else int(requests) + 1
            tenant = limited(rpm=max(rpm, 1))
            refused = requests >= max(rpm, 1)
        else:
            spent = spent_day if which == "daily" else spent_month
            cap = spent * (0.999 if over else 1.001) + (0 if over else 1e-6)
            if cap <= 0:
                continue
            tenant = limited(**{f"{which}_usd": cap})
            refused = spent >= cap
        try:
            quota.admit(tenant)
            passed = True
        except (QuotaExceeded, RateLimitExceeded):
            passed = False
        assert passed is not refused, (which, over)
        checked += 1
    assert checked > 300


# -- stopped processes: one row for all of them ------------------------------------------


async def test_stopped_processes_fold_into_one_row_and_the_fleets_figures_hold(
    store_url: str,
) -> None:
    """Every restart is a new origin, so each stopped process's rows would stay for good,
    read at every start and by every check. A process that stops folds its rows into
    one row per key for all stopped ones (two stopping at once, each on its own
    connection, here): the figures do not move, for a process that runs on (which reads
    every row again, or it would count the stopped twice) or one started later."""
    clock = Clock(NOON - 86400)  # "a" counts yesterday, the others today
    stores = [create_store(store_url) for _ in range(4)]
    for store in stores:
        await store.open()
    try:
        quotas = {origin: Quota(clock) for origin in ("host:1:a", "host:2:b", "host:3:c")}
        shares = {o: QuotaShare(o, q, s) for (o, q), s in zip(quotas.items(), stores, strict=False)}
        team = limited(rpm=100, daily_usd=10.0, monthly_usd=100.0)
        for (origin, quota), (requests, spend) in zip(
            quotas.items(), [(3, 0.7), (2, 0.4), (1, 0.2)], strict=True
        ):
            for _ in range(requests):
                quota.admit(team)
            quota.record("team", 10 * requests, spend)
            await shares[origin].round()
            clock.now = NOON
        for share in shares.values():
            await share.round()
        running = quotas["host:3:c"]
        before = running.report("team")
        assert before["spend_day"] == pytest.approx(0.6) and before["spend_month"] == pytest.approx(
            1.3
        )

        await asyncio.gather(shares["host:1:a"].stop(), shares["host:2:b"].stop())
        assert sorted(await stores[3].load_states(USAGE)) == [
            "host:3:c\x1fteam",
            f"{STOPPED}\x1fteam",
        ]
        clock.now += 1
        await shares["host:3:c"].round()
        assert running.report("team") == before
        later = Quota(clock)
        await QuotaShare("host:4:d", later, stores[3]).round()
        assert later.report("team") == before
        with pytest.raises(QuotaExceeded):  # the stopped processes' spend still counts
            later.admit(limited(rpm=100, monthly_usd=1.3))
    finally:
        for store in stores:
            await store.close()


# -- answers in flight ------------------------------------------------------------------


def concurrent(cap: int, rpm: int | None = None) -> Tenant:
    return Tenant("team", rate_limit=KeyRateLimit(requests_per_minute=rpm, max_concurrent=cap))


def test_a_key_has_at_most_max_concurrent_answers_in_flight() -> None:
    clock = Clock()
    quota = Quota(clock)
    team = concurrent(2)
    quota.admit(team)
    quota.admit(team)
    with pytest.raises(ConcurrencyLimitExceeded) as info:
        quota.admit(team)
    assert info.value.retry_after == 1 and "2 answers in flight" in info.value.message
    assert isinstance(info.value, RateLimitExceeded)  # a 429 as OpenAI's clients retry it
    quota.leave("team")
    quota.admit(team)  # one ended: room for one
    assert quota.report("team")["in_flight"] == 2
    assert quota.report("team")["requests_day"] == 3  # the refused one was not counted
    assert quota.refusals == {("team", "concurrency"): 1}  # for /metrics


def test_a_request_refused_by_its_rate_limit_is_not_in_flight() -> None:
    quota = Quota(Clock())
    team = concurrent(5, rpm=1)
    quota.admit(team)
    with pytest.raises(RateLimitExceeded):
        quota.admit(team)
    assert quota.in_flight("team", NOON) == 1
    quota.leave("team")
    quota.leave("team")  # more ends than admissions never go below none
    assert quota.in_flight("team", NOON) == 0


async def test_the_fleets_answers_in_flight_count_while_their_origin_is_alive() -> None:
    """Another origin's count is believed while it is fresh: a live origin publishes it
    every round while it has any; one that crashed stops counting by itself."""
    clock = Clock()
    async with SQLiteStore(":memory:") as store:
        a, b = Quota(clock), Quota(clock)
        share_a, share_b = QuotaShare("a", a, store), QuotaShare("b", b, store)
        team = concurrent(3)
        for _ in range(2):
            a.admit(team)
        await share_a.round()
        await share_b.round()
        b.admit(team)
        with pytest.raises(ConcurrencyLimitExceeded):
            b.admit(team)  # 2 in a, 1 here
        assert b.report("team")["in_flight"] == 3
        # a stays alive (its rounds go on, nothing else changing): still counted
        clock.now += 60
        await share_a.round()
        await share_b.round()
        with pytest.raises(ConcurrencyLimitExceeded):
            b.admit(team)
        # a crashes: no more rounds; past `stale_after` its answers stop counting
        clock.now += share_b.quota.stale_after + 1
        await share_b.round()
        b.admit(team)
        b.admit(team)
        assert b.in_flight("team", clock.now) == 3
        # a was only slow: back, it ends its answers, and each side counts the other's
        a.leave("team")
        a.leave("team")
        await share_a.round()
        await share_b.round()
        await share_a.round()
        assert b.in_flight("team", clock.now) == 3 and a.in_flight("team", clock.now) == 3


async def test_a_stopped_process_leaves_no_answer_in_flight() -> None:
    clock = Clock()
    async with SQLiteStore(":memory:") as store:
        a = Quota(clock)
        share_a = QuotaShare("host:1:a", a, store)
        team = concurrent(1)
        a.admit(team)
        await share_a.stop()  # stopped with its answer cut
        later = Quota(clock)
        await QuotaShare("host:2:b", later, store).round()
        later.admit(team)
        assert later.report("team")["in_flight"] == 1
