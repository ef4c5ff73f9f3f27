"""The blacklist: benching after consecutive failures, escalation, expiry, reset, persistence.

Time is a fake clock; nothing here sleeps.
"""

from __future__ import annotations

import orjson
import pytest

from gateway.routing.blacklist import Blacklist

HOUR = 3600.0
T0 = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def fail(bl: Blacklist, model: str, times: int) -> list:
    return [bl.failure(model, f"boom {i}") for i in range(times)]


def bench_duration(bl: Blacklist, clock: Clock, model: str) -> float:
    until = bl.until(model)
    assert until is not None, f"{model} should be benched"
    return until - clock()


def relapse(bl: Blacklist, clock: Clock, model: str) -> float:
    """Let the current bench expire, fail once more, return the new bench's length."""
    clock.now = bl.until(model) + 1
    assert not bl.is_blacklisted(model)
    assert bl.failure(model, "again") is not None
    return bench_duration(bl, clock, model)


def test_not_blacklisted_before_threshold(clock: Clock) -> None:
    bl = Blacklist(clock=clock)
    assert fail(bl, "m", 2) == [None, None]
    assert not bl.is_blacklisted("m")
    assert bl.until("m") is None
    assert bl.consecutive_failures("m") == 2
    assert bl.active() == []


def test_durations_double_with_each_relapse(clock: Clock) -> None:
    bl = Blacklist(clock=clock)
    results = fail(bl, "m", 3)
    assert results[:2] == [None, None]
    entry = results[2]
    assert entry is not None and entry.model == "m"
    assert entry.since == clock() and entry.until == clock() + HOUR
    assert entry.last_error == "boom 2"
    assert bench_duration(bl, clock, "m") == HOUR  # 3 failures -> 1 h
    assert relapse(bl, clock, "m") == 2 * HOUR  # 4th -> 2 h
    assert relapse(bl, clock, "m") == 4 * HOUR  # 5th -> 4 h
    assert bl.consecutive_failures("m") == 5
    assert bl.entry("m").level == 3


def test_duration_is_capped_at_max_seconds(clock: Clock) -> None:
    bl = Blacklist(base_seconds=HOUR, max_seconds=3 * HOUR, clock=clock)
    fail(bl, "m", 3)
    durations = [bench_duration(bl, clock, "m")]
    durations += [relapse(bl, clock, "m") for _ in range(3)]
    assert durations == [HOUR, 2 * HOUR, 3 * HOUR, 3 * HOUR]


def test_comes_back_by_itself_when_the_clock_passes_until(clock: Clock) -> None:
    bl = Blacklist(clock=clock)
    fail(bl, "m", 3)
    until = bl.until("m")
    clock.now = until - 0.001
    assert bl.is_blacklisted("m")
    assert [e.model for e in bl.active()] == ["m"]
    clock.now = until
    assert not bl.is_blacklisted("m")
    assert bl.until("m") is None
    assert bl.active() == []


def test_reads_change_nothing_when_a_bench_runs_out(clock: Clock) -> None:
    bl = Blacklist(threshold=3, base_seconds=HOUR, clock=clock)
    fail(bl, "m", 3)
    version, snapshot = bl.version, bl.snapshot()
    clock.advance(HOUR)
    assert not bl.is_blacklisted("m") and bl.until("m") is None and bl.active() == []
    assert (bl.version, bl.snapshot()) == (version, snapshot)
    assert bl.any_benched()  # kept until the next write, which drops it
    bl.failure("other")
    assert not bl.any_benched()


def test_every_change_bumps_the_version(clock: Clock) -> None:
    bl = Blacklist(threshold=2, clock=clock)
    version = bl.version
    fail(bl, "m", 2)
    bl.success("m")
    bl.clear("m")
    assert bl.version == version + 4


def test_success_resets_the_streak(clock: Clock) -> None:
    bl = Blacklist(clock=clock)
    fail(bl, "m", 3)
    relapse(bl, clock, "m")  # now at level 2 (2 h)
    clock.now = bl.until("m") + 1
    bl.success("m")
    assert bl.consecutive_failures("m") == 0
    assert fail(bl, "m", 2) == [None, None]
    assert not bl.is_blacklisted("m")
    bl.failure("m")
    assert bench_duration(bl, clock, "m") == HOUR  # back to 1 h, not 4 h


def test_success_while_benched_lets_the_model_back(clock: Clock) -> None:
    bl = Blacklist(clock=clock)
    fail(bl, "m", 3)
    bl.success("m")
    assert not bl.is_blacklisted("m")


def test_failures_while_benched_do_not_extend_or_escalate(clock: Clock) -> None:
    bl = Blacklist(clock=clock)
    fail(bl, "m", 3)
    until = bl.until("m")
    for _ in range(5):
        clock.advance(60)
        assert bl.failure("m", "still down") is None
    assert bl.until("m") == until
    assert bl.entry("m").level == 1
    assert bl.entry("m").last_error == "still down"
    assert relapse(bl, clock, "m") == 2 * HOUR  # the next relapse is the 2nd bench, not later


def test_clear_lets_the_model_back_and_resets(clock: Clock) -> None:
    bl = Blacklist(clock=clock)
    fail(bl, "m", 3)
    relapse(bl, clock, "m")
    assert bl.clear("m") is True
    assert not bl.is_blacklisted("m")
    assert bl.consecutive_failures("m") == 0
    assert bl.clear("m") is False  # nothing left to clear
    assert fail(bl, "m", 2) == [None, None]
    bl.failure("m")
    assert bench_duration(bl, clock, "m") == HOUR


def test_clear_of_unknown_model_is_harmless(clock: Clock) -> None:
    bl = Blacklist(clock=clock)
    assert bl.clear("never-seen") is False
    assert not bl.is_blacklisted("never-seen")


def test_models_are_independent(clock: Clock) -> None:
    bl = Blacklist(clock=clock)
    fail(bl, "a", 3)
    fail(bl, "b", 2)
    assert bl.is_blacklisted("a")
    assert not bl.is_blacklisted("b")


def test_a_snapshot_adopted_by_a_new_process_keeps_benches_and_streaks(clock: Clock) -> None:
    bl = Blacklist(clock=clock)
    fail(bl, "expired", 3)  # benched for 1 h from T0
    clock.advance(1800)
    fail(bl, "active", 3)
    relapse(bl, clock, "active")  # level 2: benched 2 h from T0 + 1 h 30 min + 1 s
    active_until = bl.until("active")
    fail(bl, "flaky", 2)
    data = orjson.loads(orjson.dumps(bl.snapshot()))

    later = Clock(clock() + 60)  # past the "expired" bench, within the "active" one
    restored = Blacklist(clock=later)
    assert restored.adopt(data) == ["active"]  # the one bench it starts in
    assert restored.is_blacklisted("active")
    assert restored.until("active") == active_until
    assert not restored.is_blacklisted("expired")
    assert not restored.is_blacklisted("flaky")
    assert restored.consecutive_failures("flaky") == 2
    assert [e.model for e in restored.active()] == ["active"]
    # The streak survives: the next relapse of "active" escalates to 4 h.
    assert relapse(restored, later, "active") == 4 * HOUR
    # And "flaky" needs only one more failure.
    assert restored.failure("flaky") is not None


def test_adopt_skips_unreadable_entries(clock: Clock) -> None:
    bl = Blacklist(clock=clock)
    bl.adopt({"bad": {"model": "bad", "unknown_field": 1}, "ok": {"model": "ok"}})
    assert bl.entry("bad") is None
    assert bl.entry("ok") is not None


def test_bench_changes_are_shared_once_and_the_newest_change_wins(clock: Clock) -> None:
    here, there = Blacklist(clock=clock), Blacklist(clock=clock)
    fail(here, "m", 3)
    fail(here, "n", 2)  # a streak, not a bench: nothing to share
    assert set(here.unshared()) == {"m"}
    shared = orjson.loads(orjson.dumps(here.unshared()))
    here.shared(shared)
    assert here.unshared() == {}
    assert there.adopt(shared) == ["m"] and there.is_blacklisted("m")
    assert there.unshared() == {}  # what it took in is not its own to share again
    clock.advance(1)
    there.clear("m")  # an operator lets it back on the other process
    assert here.adopt(there.unshared()) == ["m"] and not here.is_blacklisted("m")
    assert there.adopt(shared) == []  # the older bench does not come back
    assert not there.is_blacklisted("m")


def test_a_success_that_ends_a_bench_is_shared(clock: Clock) -> None:
    bl = Blacklist(clock=clock)
    fail(bl, "m", 3)
    bl.shared(bl.unshared())
    clock.advance(1)
    bl.success("m")
    assert bl.unshared()["m"]["until"] is None


@pytest.mark.parametrize("threshold", [1, 5])
def test_threshold_is_configurable(clock: Clock, threshold: int) -> None:
    bl = Blacklist(threshold=threshold, clock=clock)
    fail(bl, "m", threshold - 1)
    assert not bl.is_blacklisted("m")
    assert bl.failure("m") is not None
    assert bench_duration(bl, clock, "m") == HOUR


def test_an_entry_that_changed_while_it_was_being_stored_stays_to_be_shared(
    clock: Clock,
) -> None:
    bl = Blacklist(clock=clock)
    fail(bl, "m", 3)
    being_stored = orjson.loads(orjson.dumps(bl.unshared()))
    clock.advance(1)
    bl.clear("m")  # an operator lets it back while the bench is on its way to the store
    bl.shared(being_stored)
    assert bl.unshared()["m"]["until"] is None  # the let-back is stored next, not lost
