"""Heartbeats, and the rows of a process that died without folding them: a process that
outlives it folds them, on SQLite and on PostgreSQL, once, and the fleet's figures hold."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.core.config import KeyBudget, KeyRateLimit, parse_config
from gateway.core.keys import Tenant
from gateway.routing.origins import ALIVE, STOPPED, Origins, fold_origins
from gateway.routing.quota import USAGE, Quota, QuotaShare
from gateway.server.app import Gateway
from gateway.storage import SQLiteStore, create_store
from tests.conftest import upstream_config
from tests.support.upstream import FakeUpstream

DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 10, 12, 0, 0, tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.now


def team() -> Tenant:
    return Tenant(
        "team",
        rate_limit=KeyRateLimit(requests_per_minute=100),
        budget=KeyBudget(daily_usd=50.0, monthly_usd=100.0),
    )


def added(into: dict[str, Any] | None, part: dict[str, Any]) -> dict[str, Any]:
    return {"n": part["n"] + (into["n"] if into else 0)}


async def test_a_dead_process_is_folded_once_and_the_fleets_spend_holds(store_url: str) -> None:
    """A process killed without a graceful stop leaves its usage rows. Processes that
    outlive it fold them a day after its last heartbeat (two at once here, each on its
    own connection), not before; the month's spend reads the same for a process that
    runs on and for one started later."""
    clock = Clock()
    stores = [create_store(store_url) for _ in range(4)]
    for store in stores:
        await store.open()
    try:
        quotas = {o: Quota(clock) for o in ("host:1:dead", "host:2:a", "host:3:b")}
        shares = {o: QuotaShare(o, q, s) for (o, q), s in zip(quotas.items(), stores, strict=False)}
        origins = {
            o: Origins(s, o, shares[o].folds, clock=clock)
            for o, s in zip(quotas, stores, strict=False)
        }
        for (origin, quota), spend in zip(quotas.items(), [0.7, 0.4, 0.2], strict=True):
            quota.admit(team())
            quota.record("team", 10, spend)
            await shares[origin].round()
            await origins[origin].beat()
        running = quotas["host:2:a"]
        await shares["host:2:a"].round()
        before = running.report("team")["spend_month"]
        assert before == pytest.approx(1.3)
        # host:1:dead is killed: no more heartbeats, its rows stay.

        clock.now += DAY - 1
        await origins["host:3:b"].beat()
        assert await origins["host:2:a"].beat() == []  # silent for a day less a second
        assert len(await stores[3].load_states(USAGE)) == 3

        clock.now += 2
        folded = await asyncio.gather(origins["host:2:a"].beat(), origins["host:3:b"].beat())
        assert {origin for dead in folded for origin in dead} == {"host:1:dead"}
        assert set(await stores[3].load_states(USAGE)) == {
            f"{STOPPED}\x1fteam",
            "host:2:a\x1fteam",
            "host:3:b\x1fteam",
        }
        assert set(await stores[3].load_states(ALIVE)) == {"host:2:a", "host:3:b"}
        await shares["host:2:a"].round()  # sees the folded row change: reads all again
        assert running.report("team")["spend_month"] == pytest.approx(before)
        later = Quota(clock)
        await QuotaShare("host:4:c", later, stores[3]).round()
        assert later.report("team")["spend_month"] == pytest.approx(before)
    finally:
        for store in stores:
            await store.close()


async def test_only_the_dead_origins_rows_are_folded_of_every_kind_given() -> None:
    async with SQLiteStore(":memory:") as store:
        await store.save_states(
            [
                ("one", "host:1:a\x1fx", {"n": 1}),
                ("one", "host:1:a\x1fy", {"n": 2}),
                ("one", "host:1:ab\x1fx", {"n": 4}),  # another origin, the same prefix
                ("one", f"{STOPPED}\x1fx", {"n": 8}),
                ("two", "host:1:a\x1fz", {"n": 16}),
            ]
        )
        assert await fold_origins(store, {"host:1:a", "host:9:z"}, "one", added) == 2
        assert await store.load_states("one") == {
            "host:1:ab\x1fx": {"n": 4},
            f"{STOPPED}\x1fx": {"n": 9},
            f"{STOPPED}\x1fy": {"n": 2},
        }
        assert await fold_origins(store, {"host:1:ab"}, "one", added) == 1
        assert await store.load_states("one") == {
            f"{STOPPED}\x1fx": {"n": 13},
            f"{STOPPED}\x1fy": {"n": 2},
        }
        assert await store.load_states("two") == {"host:1:a\x1fz": {"n": 16}}


async def test_a_stopped_process_forgets_its_heartbeat_and_one_taken_for_dead_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    async with SQLiteStore(":memory:") as store:
        alive = Origins(store, "host:1:a", [("one", added)], clock=clock)
        await alive.beat()
        assert await store.load_states(ALIVE) == {"host:1:a": {"at": clock.now}}
        await store.delete_state(ALIVE, "host:1:a")  # what a process that outlived it does
        with caplog.at_level(logging.ERROR, logger="gatewise.origins"):
            await alive.beat()
        assert "taken for dead" in caplog.text
        alive.start()
        await alive.close()
        assert await store.load_states(ALIVE) == {}


def test_the_gateway_folds_every_kind_its_processes_share(upstream: FakeUpstream) -> None:
    """Every state kind keyed by origin is in the folds: a kind left out would pile up
    a row per crash again."""
    gateway = Gateway(parse_config(upstream_config(upstream)))
    kinds = {kind for kind, _ in gateway.origins.folds}
    assert kinds == {"stats", "prompts", "usage", "comparison_spend", "experiment_stats"}
    assert gateway.origins.origin == gateway.fleet.origin
