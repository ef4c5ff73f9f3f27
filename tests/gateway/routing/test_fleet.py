"""Fleet sharing, in process: several trackers and blacklists on one real store learn as
one; counts are exact, benches travel, a new process starts from the fleet's state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.core.types import Attempt
from gateway.routing.blacklist import Blacklist
from gateway.routing.fleet import STATS, STOPPED, Fleet
from gateway.routing.recorder import learn
from gateway.routing.tracker import Tracker
from gateway.storage import SQLiteStore, Store
from tests.support.postgres import new_pg_schema

TT = "text-to-text"
T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def attempt(model: str = "alpha", ok: bool = True, latency_ms: float = 100.0) -> Attempt:
    return Attempt(
        "req", "resp" if ok else None, 1, model, "up", TT, "auto", "accuracy", ok,
        latency_ms=latency_ms, timestamp=T0, counts_as_failure=not ok,
    )  # fmt: skip


class Process:
    """One worker's routing state on the shared store."""

    def __init__(self, origin: str, store: Store, clock: Clock) -> None:
        self.tracker = Tracker(clock=clock)
        self.blacklist = Blacklist(threshold=3, clock=clock)
        self.fleet = Fleet(origin, self.tracker, self.blacklist, store, clock=clock)

    def serve(self, n: int, model: str = "alpha", ok: bool = True) -> None:
        for _ in range(n):
            learn(self.tracker, self.blacklist, attempt(model, ok))

    async def round(self) -> None:
        await self.fleet.sync_blacklist()
        await self.fleet.publish()
        await self.fleet.pull()

    def requests(self, model: str = "alpha") -> int:
        stats = self.tracker.stats(model, TT)
        return stats.requests if stats is not None else 0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    async with SQLiteStore(tmp_path / "fleet.db") as opened:
        yield opened


async def test_two_processes_see_the_sum_of_what_both_served(store: Store) -> None:
    clock = Clock()
    a, b = Process("a", store, clock), Process("b", store, clock)
    a.serve(7)
    b.serve(5)
    for _ in range(3):  # rounds repeat: nothing is counted twice
        await a.round()
        await b.round()
    assert a.requests() == b.requests() == 12
    a.serve(1)  # its own fresh observation counts at once, before any round
    assert a.requests() == 13
    await a.round()
    await b.round()
    assert b.requests() == 13
    assert a.tracker.own()[("alpha", TT)].requests == 8  # what it publishes: its own only
    assert a.fleet.peers == b.fleet.peers == 1


async def test_a_new_process_starts_from_the_fleet_state(store: Store) -> None:
    clock = Clock()
    old = Process("old", store, clock)
    old.serve(10)
    old.serve(3, model="beta", ok=False)
    assert old.blacklist.is_blacklisted("beta")
    await old.fleet.close()  # a graceful stop publishes everything

    new = Process("new", store, clock)
    await new.fleet.load()
    assert new.requests() == 10 and new.requests("beta") == 3
    assert new.blacklist.is_blacklisted("beta")
    assert new.blacklist.consecutive_failures("beta") == 3
    new.serve(1)
    assert new.requests() == 11


async def test_a_bench_and_its_end_travel_between_processes(store: Store) -> None:
    clock = Clock()
    a, b = Process("a", store, clock), Process("b", store, clock)
    a.serve(3, ok=False)
    assert a.blacklist.is_blacklisted("alpha") and not b.blacklist.is_blacklisted("alpha")
    await a.fleet.sync_blacklist()
    await b.fleet.sync_blacklist()
    assert b.blacklist.is_blacklisted("alpha")
    assert b.blacklist.until("alpha") == a.blacklist.until("alpha")
    clock.now += 1
    b.blacklist.clear("alpha")  # an operator lets it back, through b
    await b.fleet.sync_blacklist()
    await a.fleet.sync_blacklist()
    assert not a.blacklist.is_blacklisted("alpha")
    await a.fleet.sync_blacklist()  # and the older bench stays gone
    assert not a.blacklist.is_blacklisted("alpha")


async def test_a_bench_taken_in_clears_the_recent_record_there_too(store: Store) -> None:
    clock = Clock()
    a, b = Process("a", store, clock), Process("b", store, clock)
    b.serve(2, ok=False)  # failing on b as well, not yet benched there
    a.serve(3, ok=False)
    await a.fleet.sync_blacklist()
    await b.fleet.sync_blacklist()
    stats = b.tracker.stats("alpha", TT)
    assert stats is not None and stats.recent_success_rate is None


async def test_a_silent_peer_still_counts_but_no_longer_steers(store: Store) -> None:
    clock = Clock()
    a, b = Process("a", store, clock), Process("b", store, clock)
    a.blacklist.threshold = 1000  # failing, but not benched
    a.serve(30, ok=False)
    await a.fleet.publish()
    b.serve(5)
    await b.fleet.pull()
    assert b.requests() == 35
    worried = b.tracker.stats("alpha", TT).recent_success_rate  # type: ignore[union-attr]
    clock.now += 3600  # a has said nothing for an hour
    await b.fleet.pull()
    stats = b.tracker.stats("alpha", TT)
    assert stats is not None and stats.requests == 35
    assert stats.recent_success_rate is not None and worried is not None
    assert stats.recent_success_rate > 0.9 > worried
    assert b.fleet.peers == 0


async def test_rows_from_before_origins_and_unreadable_rows(store: Store) -> None:
    clock = Clock()
    legacy = Process("x", store, clock)
    legacy.serve(4)
    data = legacy.tracker.own()[("alpha", TT)].to_dict()
    await store.save_states(
        [(STATS, f"alpha\x1f{TT}", data), (STATS, f"z\x1fbeta\x1f{TT}", {"requests": 1})]
    )
    fresh = Process("fresh", store, clock)
    await fresh.fleet.load()
    assert fresh.requests() == 4  # what a single process stored before it had a name
    assert fresh.tracker.stats("beta", TT) is None  # unreadable: skipped, not fatal


class Unreachable(SQLiteStore):
    """A store whose reads and writes fail, as a lost database does."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.tried = asyncio.Event()

    async def load_states(self, kind: str, **kwargs: Any) -> dict[str, dict[str, Any]]:
        self.tried.set()
        raise OSError("connection refused")

    async def save_states(self, items: Any) -> None:
        self.tried.set()
        raise OSError("connection refused")


async def test_a_lost_store_does_not_stop_the_fleet_task(tmp_path: Path) -> None:
    store = Unreachable(tmp_path / "lost.db")
    await store.open()
    clock = Clock()
    p = Process("p", store, clock)
    p.fleet.interval = 0.02
    p.serve(3, ok=False)  # a bench to share, which cannot be
    p.fleet.start()
    try:
        await asyncio.wait_for(store.tried.wait(), 5)
        while p.fleet.failures < 2:
            await asyncio.sleep(0.01)
        assert p.blacklist.is_blacklisted("alpha")  # routing goes on with what it knows
        assert set(p.blacklist.unshared()) == {"alpha"}  # kept, to share when it can
    finally:
        await p.fleet.close()
        await store.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        async with SQLiteStore(tmp_path / "fleet.db") as opened:
            yield opened
        return
    async with new_pg_schema() as schema, schema.store() as pg:
        yield pg


async def test_benches_saved_at_once_outlive_a_crash_on_either_store(any_store: Store) -> None:
    """No close(), no round: what save_benches stored is what a restarted process finds."""
    clock = Clock()
    crashed = Process("crashed", any_store, clock)
    crashed.serve(3, model="beta", ok=False)
    crashed.serve(3, model="gamma", ok=False)
    await crashed.fleet.save_benches()
    crashed.blacklist.clear("gamma")  # an operator lets one back...
    await crashed.fleet.save_benches()  # ...and is answered once this returns

    restarted = Process("restarted", any_store, clock)
    await restarted.fleet.load()
    assert restarted.blacklist.is_blacklisted("beta")
    assert not restarted.blacklist.is_blacklisted("gamma")


async def test_prompt_saves_and_rounds_write_one_at_a_time(store: Store) -> None:
    """A bench saved at once and a round at the same moment: neither marks as stored what
    the other has not written."""
    clock = Clock()
    p = Process("p", store, clock)
    p.serve(3, ok=False)
    await asyncio.gather(p.fleet.save_benches(), p.fleet.sync_blacklist(), p.fleet.save_benches())
    assert p.blacklist.unshared() == {}
    fresh = Process("fresh", store, clock)
    await fresh.fleet.load()
    assert fresh.blacklist.is_blacklisted("alpha")


async def test_stopped_processes_fold_into_one_row_and_the_fleet_sees_the_same(
    any_store: Store,
) -> None:
    """Every restart is a new origin. A process that stops folds its rows into one row
    per model for all stopped ones; what the fleet sees does not move: counts, and what
    is recent (weighed by freshness) as it fades, for a process that runs on (it reads
    every row again, or the stopped would count twice) and for one started later."""
    clock = Clock()
    a, b, c = (Process(o, any_store, clock) for o in ("host:1:a", "host:2:b", "host:3:c"))
    a.serve(7)
    await a.round()
    clock.now += 30  # a's row is older: its recent figures weigh less than b's
    b.serve(2, model="alpha", ok=False)  # two: not benched (a bench resets what is recent)
    b.serve(2, model="beta")
    c.serve(1)
    for p in (b, c, a, b, c):
        await p.round()
    c.serve(1)  # not published: c's own

    def view(p: Process, model: str) -> tuple[float, ...]:
        stats = p.tracker.stats(model, TT)
        assert stats is not None
        return (stats.requests, stats.successes, stats.failures, stats.recent_ok,
                stats.recent_n, stats.served_recent)  # fmt: skip

    await c.fleet.pull()  # the view as a pull computes it (answers since shift it a bit)
    before = {m: view(c, m) for m in ("alpha", "beta")}
    await asyncio.gather(a.fleet.close(), b.fleet.close())
    stored = await any_store.load_states(STATS)
    assert {key.split("\x1f")[0] for key in stored} == {"host:3:c", STOPPED}
    await c.fleet.pull()
    for model in ("alpha", "beta"):
        assert view(c, model) == pytest.approx(before[model])
    assert view(c, "alpha")[:3] == (11, 9, 2)
    later = Process("host:4:d", any_store, clock)
    await later.fleet.load()
    assert view(later, "alpha")[:3] == (10, 8, 2)  # c's last answer is not published yet
    assert view(later, "beta")[:3] == (2, 2, 0)
    await c.fleet.close()
    stored = await any_store.load_states(STATS)
    assert {key.split("\x1f")[0] for key in stored} == {STOPPED}
    last = Process("host:5:e", any_store, clock)
    await last.fleet.load()
    assert view(last, "alpha")[:3] == (11, 9, 2)  # every answer, once
