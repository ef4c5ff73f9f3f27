"""The serving process collects garbage rarely and never walks its start-up objects."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.server.app import app_factory
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


def test_tune_freezes_what_exists_and_raises_the_thresholds(restored_gc: None) -> None:
    assert gc.get_threshold() != THRESHOLDS
    survivor = [object() for _ in range(3)]  # lists are tracked; this one lives on
    tune()
    assert gc.get_threshold() == THRESHOLDS
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
