"""Comparisons' sampling and bounds, with scripted providers and a real SQLite store:
which answers are shadowed, the cap on calls in flight, the daily cap across two
processes, and shutdown."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.core.config import parse_config
from gateway.routing.blacklist import Blacklist
from gateway.routing.catalog import Catalog
from gateway.routing.comparisons import SPEND, STOPPED, Comparisons, prompt_text
from gateway.routing.dispatch import Dispatcher, Job, Outcome, ReplyJob
from gateway.storage import SQLiteStore, Store
from providers.base import Call, Endpoint, Provider, Reply, Usage

T0 = 1_700_000_000.0
HI = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "stream": True,
      "stream_options": {"include_usage": True}}  # fmt: skip


class Gated(Provider):
    """Answers at once, except the challenger ("c-up"), which waits for `gate`."""

    endpoints = frozenset({Endpoint.CHAT})

    def __init__(self) -> None:
        super().__init__("up")
        self.gate = asyncio.Event()
        self.calls: list[Call] = []

    async def send(self, call: Call) -> Reply:
        self.calls.append(call)
        if call.upstream_model == "c-up":
            await self.gate.wait()
        body = {"choices": [{"message": {"role": "assistant", "content": call.upstream_model}}]}
        return Reply(body, Usage(1_000_000, 0))  # a million prompt tokens: $ = input price


class Ranked:
    def rank(self, job: Job[Any, Any]) -> list[Any]:
        return list(job.target.candidates)


class Sink:
    def __init__(self) -> None:
        self.seen: list[Outcome] = []

    def record(self, outcome: Outcome) -> None:
        self.seen.append(outcome)

    def unanswered(self, job: Any, kind: str) -> None:
        pass


def config(**comparison: Any) -> Any:
    return parse_config({
        "providers": [{"name": "up", "type": "mock"}],
        "models": [
            {"name": "a", "provider": "up", "upstream_model": "a-up"},
            {"name": "b", "provider": "up", "upstream_model": "b-up"},
            {"name": "c", "provider": "up", "upstream_model": "c-up",
             "pricing": {"input_per_million": 0.02}},
        ],
        "routes": [{"name": "solo", "models": ["a"]}, {"name": "other", "models": ["b"]},
                   {"name": "with-c", "models": ["c"]}],
        "comparisons": [{"route": "solo", "challenger": "c", "sample": 1.0,
                         "max_daily_usd": 0.05, **comparison}],
    })  # fmt: skip


class Process:
    """One gateway process's part: a dispatcher whose answers are offered to comparisons."""

    def __init__(self, store: Store, origin: str, **comparison: Any) -> None:
        cfg = config(**comparison)
        self.provider = Gated()
        self.catalog = Catalog(cfg, {"up": self.provider})
        self.sink = Sink()
        self.now = T0
        self.comparisons = Comparisons(
            cfg.comparisons, self.catalog, self.sink, Blacklist(3, 60, 600), store, origin,
            clock=lambda: self.now, rng=random.Random(1),
        )  # fmt: skip
        self.dispatcher = Dispatcher(
            self.catalog, Ranked(), self.sink, wall=lambda: self.now, shadows=self.comparisons
        )

    async def answer(self, route: str = "solo", owner: str | None = "team") -> Outcome:
        target = self.catalog.resolve(route, "text-to-text")
        job = ReplyJob("req-1", Endpoint.CHAT, target, dict(HI), owner=owner)
        exchange = await self.dispatcher.run(job)
        return exchange.close()

    def status(self) -> dict[str, Any]:
        [status] = self.comparisons.status()
        return status

    async def settle(self) -> None:
        while self.comparisons._tasks:
            await asyncio.sleep(0)


@pytest.fixture
async def store() -> AsyncIterator[SQLiteStore]:
    async with SQLiteStore(":memory:") as s:
        yield s


async def test_only_the_routes_answers_by_others_than_the_challenger_are_shadowed(store) -> None:
    p = Process(store, "o1")
    p.provider.gate.set()
    await p.answer("other")
    await p.answer("with-c")
    await p.settle()
    assert [c.upstream_model for c in p.provider.calls] == ["b-up", "c-up"]  # no shadow
    ours = await p.answer("solo")
    await p.settle()
    shadow = p.sink.seen[-1]
    assert shadow.job.shadow and not ours.job.shadow
    assert shadow.job.owner == "team" and shadow.job.request_id == "req-1-shadow"
    assert shadow.job.target.route is None and shadow.job.conversation_id is None
    sent = p.provider.calls[-1]
    assert sent.upstream_model == "c-up" and sent.stream is False
    assert sent.body["stream"] is False and "stream_options" not in sent.body
    pair = await store.pair_of(ours.job.response_id, shadow.job.response_id)
    assert pair is not None
    assert (pair["model_a"], pair["model_b"], pair["owner"]) == ("a", "c", "team")
    assert (pair["answer_a"], pair["answer_b"], pair["prompt"]) == ("a-up", "c-up", "user: hi")
    assert pair["cost_b"] == pytest.approx(0.02)
    status = p.status()
    assert status["shadows"] == 1 and status["spent_usd"] == pytest.approx(0.02)


async def test_the_share_sampled_is_the_configured_one(store) -> None:
    p = Process(store, "o1", sample=0.25, max_daily_usd=1000, max_concurrent=256)
    p.provider.gate.set()
    for _ in range(400):
        await p.answer()
    await p.settle()
    assert 70 <= p.status()["shadows"] <= 130  # 100 expected; 4.6 sd either way


async def test_calls_in_flight_are_bounded_and_stopping_cancels_them(store) -> None:
    p = Process(store, "o1", max_concurrent=2, max_daily_usd=100)
    for _ in range(5):
        await p.answer()
    await asyncio.sleep(0)  # the shadow tasks start, and wait at the challenger
    status = p.status()
    assert status["in_flight"] == 2 and status["dropped"] == 3 and status["shadows"] == 0
    await p.comparisons.stop()
    assert p.status()["in_flight"] == 0
    cancelled = [o for o in p.sink.seen if o.job.shadow]
    assert len(cancelled) == 2 and all(o.error is not None for o in cancelled)
    assert {o.error.kind for o in cancelled if o.error} == {"client_gone"}
    assert await store.pair_counts() == []


async def test_the_daily_cap_holds_across_processes_and_renews_the_next_day(store) -> None:
    one, two = Process(store, "o1"), Process(store, "o2")  # $0.02 a shadow, $0.05 a day
    one.provider.gate.set()
    two.provider.gate.set()
    for _ in range(2):
        await one.answer()
        await one.settle()
    await one.comparisons.round()
    await two.comparisons.round()  # two learns one spent $0.04
    await two.answer()
    await two.settle()  # $0.06 now: the cap is reached
    await two.comparisons.round()
    await one.comparisons.round()
    for p in (one, two):
        status = p.status()
        assert status["spent_usd"] == pytest.approx(0.06) and status["cap_reached"] is True
        await p.answer()
        await p.settle()
        assert p.status()["capped"] == 1
    assert sum(c.upstream_model == "c-up" for p in (one, two) for c in p.provider.calls) == 3
    one.now += 86400  # a new UTC day
    await one.answer()
    await one.settle()
    assert one.status()["shadows"] == 1 and one.status()["spent_usd"] == pytest.approx(0.02)
    # What each day cost the fleet: one's own, and two's as it was last published.
    history = one.status()["history"]
    assert [(h["day"], h["shadows"]) for h in history] == [("2023-11-15", 1), ("2023-11-14", 3)]
    assert history[1]["spent_usd"] == pytest.approx(0.06)


async def test_a_stopping_process_folds_its_spend_and_the_fleet_sees_the_same(store) -> None:
    """Every restart is a new origin: a process that stops adds its spend into the
    stopped processes' row and deletes its own; the others read every row again, so the
    day's cap and history hold, counted once, here and in a process started later."""
    one, two, three = Process(store, "h:1:a"), Process(store, "h:2:b"), Process(store, "h:3:c")
    one.now = T0 - 86400  # a shadow of the day before, too
    one.provider.gate.set()
    await one.answer()
    await one.settle()
    one.now = T0
    for p in (one, two):
        p.provider.gate.set()
        await p.answer()
        await p.settle()
    for p in (one, two, three, three):
        await p.comparisons.round()
    before = {k: v for k, v in three.status().items() if k != "in_flight"}
    assert before["spent_usd"] == pytest.approx(0.04)
    await asyncio.gather(one.comparisons.stop(), two.comparisons.stop())
    origins = {key.split("\x1f")[0] for key in await store.load_states(SPEND)}
    assert origins == {STOPPED}  # three spent nothing: it has no row
    await three.comparisons.round()
    assert {k: v for k, v in three.status().items() if k != "in_flight"} == before
    later = Process(store, "h:4:d")
    await later.comparisons.round()
    assert {k: v for k, v in later.status().items() if k != "in_flight"} == before
    assert [h["shadows"] for h in later.status()["history"]] == [2, 1]


def test_the_prompt_a_judge_reads() -> None:
    body = {
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Look:"},
                                         {"type": "image_url", "image_url": {"url": "x"}}]},
            {"role": "assistant", "content": "A cat."},
        ],
    }  # fmt: skip
    assert prompt_text(body) == "system: Be brief.\nuser: Look: [image_url]\nassistant: A cat."
    assert prompt_text({"prompt": "Once upon"}) == "Once upon"
    assert prompt_text({"input": "x" * 50_000}) == "x" * 20_000
