"""The bench harness places its load where it says: CPUs and scheduling policy."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable

import pytest

from bench import harness
from bench.harness import Child

pytestmark = pytest.mark.skipif(
    not (shutil.which("taskset") and shutil.which("chrt")), reason="needs util-linux"
)
SLEEPER = [
    sys.executable,
    "-c",
    "import threading, time; threading.Thread(target=time.sleep, args=(30,)).start(); "
    "time.sleep(30)",
]


def _until(ready: Callable[[], bool], timeout: float = 10) -> None:
    """Poll for a state of another process (not a wait for time)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, "the child did not start its thread"
        time.sleep(0.01)


def _cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def _threads(pid: int) -> list[int]:
    return [int(t) for t in os.listdir(f"/proc/{pid}/task")]


@pytest.mark.parametrize(("batch", "policy"), [(True, os.SCHED_BATCH), (False, os.SCHED_OTHER)])
def test_a_child_runs_under_the_policy_it_asks_for(batch: bool, policy: int) -> None:
    child = Child("sleeper", SLEEPER, str(_cpus()[0]), batch=batch).start()
    try:
        _until(lambda: len(_threads(child.pid)) == 2)
        assert {os.sched_getscheduler(t) for t in _threads(child.pid)} == {policy}
    finally:
        child.stop()


def test_pin_moves_every_thread_of_a_running_child() -> None:
    cpus = _cpus()
    child = Child("sleeper", SLEEPER, str(cpus[0])).start()
    try:
        _until(lambda: len(_threads(child.pid)) == 2)
        assert {tuple(os.sched_getaffinity(t)) for t in _threads(child.pid)} == {(cpus[0],)}
        child.pin(",".join(map(str, cpus)))
        assert {tuple(sorted(os.sched_getaffinity(t))) for t in _threads(child.pid)} == {
            tuple(cpus)
        }
        assert child.cpus == ",".join(map(str, cpus))
    finally:
        child.stop()


def test_where_the_policy_is_refused_the_load_runs_at_the_default(monkeypatch) -> None:
    monkeypatch.setattr(harness, "BATCH", ["false"])  # what a refused chrt returns
    harness.batch_prefix.cache_clear()
    try:
        assert harness._wrk_cmd("http://x/", 50, 1, "1", batch=True)[:2] == ["taskset", "-c"]
    finally:
        harness.batch_prefix.cache_clear()


def test_wrk_runs_batch_unless_told_otherwise() -> None:
    assert harness._wrk_cmd("http://x/", 50, 1, "1", batch=True)[:5] == [
        "chrt", "--batch", "0", "taskset", "-c"
    ]  # fmt: skip
    assert harness._wrk_cmd("http://x/", 50, 1, "1", batch=False)[:2] == ["taskset", "-c"]
