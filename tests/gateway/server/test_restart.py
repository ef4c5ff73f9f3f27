"""Blacklist durations and recovery on an injected clock, through the app, across restarts.

Every app here runs against the same SQLite file and the same fake clock; a failing and a
healthy configuration of the same mock model stand in for an upstream that breaks and mends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from gateway.core.config import parse_config
from gateway.server.app import Gateway, create_app

HI = [{"role": "user", "content": "hi"}]
AUTH = {"authorization": "Bearer test-key"}
HOUR = 3600.0


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def config(db: Path, *, flaky_fails: bool) -> Any:
    return parse_config(
        {
            "server": {"api_keys": ["test-key"]},
            "providers": [{"name": "sim", "type": "mock"}],
            "models": [
                {
                    "name": "flaky",
                    "provider": "sim",
                    "priors": {"accuracy": 9},
                    "mock": {"latency_ms": 0, "failure_rate": 1.0 if flaky_fails else 0.0},
                    "fallbacks": ["steady"],  # asked by name, it falls back to steady
                },
                {
                    "name": "steady",
                    "provider": "sim",
                    "priors": {"accuracy": 8},
                    "mock": {"latency_ms": 0},
                },
            ],
            "routes": [{"name": "auto", "models": ["flaky", "steady"]}],
            "selection": {
                "exploration_rate": 0,
                "exploration_bonus": 0,
                "score_refresh_seconds": 0,
            },
            "storage": {"url": f"sqlite:///{db}"},
        }
    )


class Running:
    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.gateway: Gateway = client.app.state.gateway  # type: ignore[attr-defined]

    def ask(self, model: str = "flaky") -> tuple[str, int]:
        """Ask for `model` by name (tried first while healthy); returns (served by, attempts)."""
        body = {"model": model, "messages": HI}
        resp = self.client.post("/v1/chat/completions", json=body, headers=AUTH)
        assert resp.status_code == 200, resp.text
        return resp.headers["x-gatewise-model"], int(resp.headers["x-gatewise-attempts"])

    def benched_for(self, model: str = "flaky") -> float | None:
        until = self.gateway.blacklist.until(model)
        return None if until is None else until - self.gateway.clock()

    def streak(self, model: str = "flaky") -> int:
        return self.gateway.blacklist.consecutive_failures(model)


@contextmanager
def running(db: Path, clock: FakeClock, *, flaky_fails: bool) -> Iterator[Running]:
    """A whole app lifespan: leaving the block is a graceful stop."""
    app = create_app(config(db, flaky_fails=flaky_fails), clock=clock)
    with TestClient(app) as client:
        yield Running(client)


def test_a_failing_model_is_benched_for_an_hour_and_stays_benched_across_a_restart(
    tmp_path: Path,
) -> None:
    db, clock = tmp_path / "gw.db", FakeClock()
    with running(db, clock, flaky_fails=True) as gw:
        assert gw.ask() == ("steady", 2)
        assert gw.ask() == ("steady", 2)
        assert gw.benched_for() is None  # two failures: still in rotation
        assert gw.ask() == ("steady", 2)
        assert gw.benched_for() == HOUR
        assert gw.ask() == ("steady", 1)  # flaky is skipped, not tried
        clock.advance(HOUR - 1)
        assert gw.benched_for() == 1

    with running(db, clock, flaky_fails=True) as gw:
        assert gw.benched_for() == 1  # the same deadline, not a fresh hour
        assert gw.streak() == 3
        assert gw.ask() == ("steady", 1)
        stats = gw.gateway.tracker.stats("flaky", "text-to-text")
        assert stats is not None and stats.failures == 3


def test_a_relapse_after_the_bench_doubles_it_and_a_success_resets_the_streak(
    tmp_path: Path,
) -> None:
    db, clock = tmp_path / "gw.db", FakeClock()
    with running(db, clock, flaky_fails=True) as gw:
        for _ in range(3):
            gw.ask()
        assert gw.benched_for() == HOUR

    with running(db, clock, flaky_fails=True) as gw:
        assert gw.benched_for() == HOUR
        clock.advance(HOUR + 1)
        assert gw.benched_for() is None  # back by itself, nobody cleared it
        assert gw.ask() == ("steady", 2)  # tried again, failed again...
        assert gw.benched_for() == 2 * HOUR  # ...and benched at once, for twice as long
        assert gw.streak() == 4

    with running(db, clock, flaky_fails=False) as gw:  # the upstream is mended
        assert gw.benched_for() == 2 * HOUR  # but the gateway cannot know yet
        assert gw.ask() == ("steady", 1)
        clock.advance(2 * HOUR)
        assert gw.ask() == ("flaky", 1)
        assert gw.streak() == 0
        assert gw.gateway.blacklist.entry("flaky").level == 0  # type: ignore[union-attr]

    with running(db, clock, flaky_fails=True) as gw:  # a fresh streak starts from scratch
        assert gw.streak() == 0
        assert gw.ask() == ("steady", 2)
        assert gw.ask() == ("steady", 2)
        assert gw.benched_for() is None
        assert gw.ask() == ("steady", 2)
        assert gw.benched_for() == HOUR  # the base duration again, not 4 h


def test_the_bench_is_capped(tmp_path: Path) -> None:
    db, clock = tmp_path / "gw.db", FakeClock()
    with running(db, clock, flaky_fails=True) as gw:
        for _ in range(3):
            gw.ask()
        durations = [gw.benched_for()]
        for _ in range(6):
            clock.advance(gw.benched_for() or 0)
            assert gw.ask() == ("steady", 2)
            durations.append(gw.benched_for())
    assert durations == [HOUR * 2**n for n in range(5)] + [86400.0, 86400.0]
