"""The serving process collects garbage in bounded young passes, never walks its start-up
objects, and runs full collections only when a worker is quiet (or long overdue)."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.server.app import app_factory
from gateway.server.collector import BUSY_THRESHOLDS, TICK, Collector
from gateway.server.gctune import THRESHOLDS, tune

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def restored_gc() -> Iterator[None]:
    """The test process keeps its own collector settings."""
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_tune_freezes_what_exists_and_leaves_full_collections_to_the_sweeper(
    restored_gc: None,
) -> None:
    assert gc.get_threshold() != THRESHOLDS
    survivor = [object() for _ in range(3)]  # lists are tracked; this one lives on
    tune()
    assert gc.get_threshold() == THRESHOLDS
    assert THRESHOLDS[2] >= 1 << 30  # no count of middle passes reaches it: never by itself
    assert gc.get_freeze_count() > 10_000  # the interpreter, starlette, uvicorn, ...
    assert not any(o is survivor for o in gc.get_objects())  # frozen: walked by no collection


def test_worker_processes_tune_the_collector_once_the_app_is_built(
    restored_gc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWISE_CONFIG", str(ROOT / "gateway.yaml"))
    log = logging.getLogger("gatewise")  # app_factory configures it for the process
    for attr in ("handlers", "level", "propagate"):
        monkeypatch.setattr(log, attr, getattr(log, attr))
    assert gc.get_threshold() != THRESHOLDS
    app_factory()
    assert gc.get_threshold() == THRESHOLDS
    assert gc.get_freeze_count() > 0


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _collector(clock: _Clock, runs: list[int], thresholds: list | None = None) -> Collector:
    sink = thresholds if thresholds is not None else []
    return Collector(quiet=10, every=60, overdue=1800, clock=clock, collect=runs.append,
                     set_threshold=lambda *t: sink.append(t))  # fmt: skip


def test_both_young_generations_are_collected_on_every_tick() -> None:
    clock, runs = _Clock(), []
    collector = _collector(clock, runs)
    for _ in range(4):
        collector.tick(still_open=5_000)
    assert runs == [1, 1, 1, 1]


def test_with_few_connections_open_the_thresholds_run_the_young_collections() -> None:
    clock, runs = _Clock(), []
    collector = _collector(clock, runs)  # quiet: 10
    for _ in range(4):
        collector.tick(still_open=10)
    assert runs == []  # short requests: their objects die by reference count
    collector.tick(still_open=11)
    assert runs == [1]


def test_the_thresholds_are_tight_only_while_the_clock_collects() -> None:
    """Short requests get the larger young generation (cheaper: fewer passes); a worker
    holding many streams gets the tight ones as a net under the clock's passes."""
    clock, runs, thresholds = _Clock(), [], []
    collector = _collector(clock, runs, thresholds)
    collector.tick(still_open=5)
    assert thresholds == []  # tune()'s THRESHOLDS are in force already
    collector.tick(still_open=5_000)
    collector.tick(still_open=4_000)
    assert thresholds == [BUSY_THRESHOLDS]
    collector.tick(still_open=3)
    assert thresholds == [BUSY_THRESHOLDS, THRESHOLDS]
    assert THRESHOLDS[0] > BUSY_THRESHOLDS[0] and THRESHOLDS[1] > BUSY_THRESHOLDS[1]


def test_the_collector_ticks_on_the_loop_once_started() -> None:
    scheduled: list[tuple[float, object]] = []

    class Loop:
        def call_later(self, delay: float, callback: object) -> None:
            scheduled.append((delay, callback))

    runs: list[int] = []
    collector = _collector(_Clock(), runs)
    collector.start(Loop(), connections=list(range(11)))  # type: ignore[arg-type]
    assert collector.running and len(scheduled) == 1 and scheduled[0][0] == TICK
    scheduled[0][1]()  # type: ignore[operator]
    assert runs == [1] and len(scheduled) == 2  # collected, and the next tick is due


def test_a_full_collection_waits_for_a_quiet_moment_with_something_to_collect() -> None:
    clock, runs = _Clock(), []
    collector = _collector(clock, runs)
    gc.collect(1)  # something reached the oldest generation since its last collection
    clock.now += 30
    collector.tick(still_open=0)
    assert 2 not in runs  # quiet, but the last full collection is too recent
    clock.now += 60
    collector.tick(still_open=5_000)
    assert 2 not in runs  # due, but 5,000 open connections would make a long pause
    collector.tick(still_open=10)
    assert runs.count(2) == 1
    clock.now += 61
    gc.collect()  # the oldest generation was just collected: nothing new in it
    collector.tick(still_open=0)
    assert runs.count(2) == 1


def test_under_unbroken_load_an_overdue_full_collection_runs_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, runs = _Clock(), []
    collector = _collector(clock, runs)
    clock.now += 1799
    collector.tick(still_open=9_000)
    assert 2 not in runs
    clock.now += 2
    with caplog.at_level(logging.WARNING, "gatewise.gc"):
        collector.tick(still_open=9_000)
    assert runs.count(2) == 1
    assert "full garbage collection after 1801 s of load" in caplog.text
    assert "9000 connections open" in caplog.text
