"""What the gateway learns survives it: attempts and state reach the database after a
graceful stop, the next process starts from them, and no request ever waits for the store."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

import gateway.server.app
from gateway.core.config import parse_config
from gateway.core.types import Attempt
from gateway.server.app import Gateway, create_app
from gateway.storage import SQLiteStore
from tests.conftest import upstream_config
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream

HI = [{"role": "user", "content": "hi"}]
AUTH = {"authorization": "Bearer test-key"}
TEXT = "text-to-text"


# -- a real process, stopped and started again on the same file -----------------------------


def e2e_config(upstream: FakeUpstream) -> dict[str, Any]:
    cfg = upstream_config(upstream)
    priors = {"alpha": 9, "beta": 8, "gamma": 7}
    for model in cfg["models"]:
        if model["name"] in priors:
            model["priors"] = {"accuracy": priors[model["name"]]}
        if model["name"] == "alpha":
            model["fallbacks"] = ["beta", "gamma"]  # asked by name, alpha falls back to them
    cfg["selection"] = {"exploration_rate": 0, "exploration_bonus": 0, "score_refresh_seconds": 0}
    return cfg


def post(gw: GatewayProcess, model: str) -> httpx.Response:
    body = {"model": model, "messages": HI}
    resp = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp


def stop_gracefully(gw: GatewayProcess) -> None:
    # uvicorn re-raises the SIGTERM it handled once shutdown is complete; -9 would mean killed.
    assert gw.stop() in (0, -signal.SIGTERM)


def test_state_is_written_on_stop_and_restored_by_the_next_process(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    db = tmp_path / "gatewise.db"
    upstream.behave("alpha-up", status=500)
    first = start_gateway(e2e_config(upstream))
    for _ in range(3):  # by name, alpha is tried first while healthy
        assert post(first, "alpha").headers["x-gatewise-model"] == "beta"
    stop_gracefully(first)

    with sqlite3.connect(db) as conn:
        attempts = conn.execute("SELECT model, ok FROM attempts ORDER BY id").fetchall()
        states = {
            (kind, key): orjson.loads(data)
            for kind, key, data in conn.execute("SELECT kind, key, data FROM state")
        }
    assert attempts == [("alpha", 0), ("beta", 1)] * 3
    published = {  # each process publishes its own stats, under its name in the fleet
        key.split("\x1f", 1)[1]: data for (kind, key), data in states.items() if kind == "stats"
    }
    assert published[f"alpha\x1f{TEXT}"]["failures"] == 3
    assert published[f"beta\x1f{TEXT}"]["successes"] == 3
    benched = states[("blacklist", "alpha")]
    assert benched["consecutive_failures"] == 3
    assert benched["until"] > time.time() + 3000

    upstream.behaviours.clear()  # alpha is healthy again, but nobody has seen it yet
    upstream.seen.clear()
    second = start_gateway(e2e_config(upstream))
    resp = post(second, "alpha")
    assert resp.headers["x-gatewise-model"] == "beta"
    assert resp.headers["x-gatewise-attempts"] == "1"
    assert upstream.models_called() == ["beta-up"]

    [entry] = httpx.get(second.url + "/performance/blacklisted").json()["data"]
    assert entry["model"] == "alpha"
    assert entry["consecutive_failures"] == 3
    assert entry["until"] == benched["until"]
    perf = httpx.get(second.url + "/performance", params={"conversation_type": TEXT}).json()
    by_model = {row["model"]: row for row in perf["data"]}
    assert by_model["alpha"]["failures"] == 3
    assert by_model["beta"]["successes"] == 4  # three from the first run, one now


# -- in process: a store that only writes when the test lets it ------------------------------


class GatedStore(SQLiteStore):
    """A SQLite file whose writes block until `gate` is set.

    `rows()` and `states()` read it through a second connection, so they see what has been
    committed, and work after the gateway has closed the store.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()  # a write is waiting at the gate

    async def write_attempts(self, attempts: Sequence[Attempt], batch: str | None = None) -> None:
        self.entered.set()
        await self.gate.wait()
        await super().write_attempts(attempts, batch)

    async def save_states(self, items: Sequence[tuple[str, str, dict]]) -> None:
        self.entered.set()
        await self.gate.wait()
        await super().save_states(items)

    async def rows(self) -> int:
        async with SQLiteStore(self.path) as reader:
            return (await reader.counts())["attempts"]

    async def states(self, kind: str) -> dict[str, dict[str, Any]]:
        async with SQLiteStore(self.path) as reader:
            return await reader.load_states(kind)


def mock_config(flush_interval: float) -> dict[str, Any]:
    return {
        "server": {"api_keys": ["test-key"]},
        "providers": [{"name": "sim", "type": "mock"}],
        "models": [{"name": "m1", "provider": "sim", "mock": {"latency_ms": 0}}],
        "storage": {"url": "memory://", "flush_interval": flush_interval},
    }


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> GatedStore:
    gated = GatedStore(tmp_path / "gated.db")
    monkeypatch.setattr(gateway.server.app, "create_store", lambda url, **options: gated)
    return gated


async def started(flush_interval: float) -> tuple[Gateway, httpx.AsyncClient]:
    app = create_app(parse_config(mock_config(flush_interval)))
    gw: Gateway = app.state.gateway
    await gw.start()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
    return gw, client


@pytest.fixture
async def cleanup() -> AsyncIterator[list[Any]]:
    things: list[Any] = []
    yield things
    for thing in things:
        if isinstance(thing, GatedStore):
            thing.gate.set()  # never leave a stop() hanging
        else:
            await thing.aclose()


async def ask(client: httpx.AsyncClient) -> None:
    body = {"model": "m1", "messages": HI}
    resp = await asyncio.wait_for(client.post("/v1/chat/completions", json=body, headers=AUTH), 5)
    assert resp.status_code == 200, resp.text


async def until_true(check: Callable[[], Any], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_requests_do_not_wait_for_a_store_that_is_busy_writing(
    store: GatedStore, cleanup: list[Any]
) -> None:
    gw, client = await started(flush_interval=0.01)
    cleanup += [client, store]
    await ask(client)
    await asyncio.wait_for(store.entered.wait(), 5)  # the writer is stuck in write_attempts

    await asyncio.gather(*(ask(client) for _ in range(20)))
    stats = gw.tracker.stats("m1", TEXT)
    assert stats is not None
    assert stats.requests == stats.successes == 21
    assert await store.rows() == 0
    assert await store.states("stats") == {}

    store.gate.set()

    async def first_batch_landed() -> bool:
        return await store.rows() >= 1

    await until_true(first_batch_landed)
    await gw.stop()
    assert await store.rows() == 21
    [(key, state)] = (await store.states("stats")).items()
    assert key.endswith(f"\x1fm1\x1f{TEXT}") and state["requests"] == 21


async def test_stop_waits_for_the_store_and_writes_everything(
    store: GatedStore, cleanup: list[Any]
) -> None:
    gw, client = await started(flush_interval=3600)  # only the final flush writes
    cleanup += [client, store]
    for _ in range(5):
        await ask(client)
    stats = gw.tracker.stats("m1", TEXT)
    assert stats is not None and stats.requests == 5
    assert await store.rows() == 0

    stopping = asyncio.create_task(gw.stop())
    await asyncio.wait_for(store.entered.wait(), 5)
    await asyncio.sleep(0.05)
    assert not stopping.done()  # shutdown waits for the store...
    assert await store.rows() == 0
    store.gate.set()
    await asyncio.wait_for(stopping, 5)
    assert await store.rows() == 5  # ...and loses nothing
    [state] = (await store.states("stats")).values()
    assert state["requests"] == 5


async def test_stop_during_a_slow_periodic_write_loses_nothing(
    store: GatedStore, cleanup: list[Any]
) -> None:
    gw, client = await started(flush_interval=0.01)
    cleanup += [client, store]
    await ask(client)
    await asyncio.wait_for(store.entered.wait(), 5)  # the periodic flush holds attempt 1
    for _ in range(3):
        await ask(client)

    stopping = asyncio.create_task(gw.stop())
    await asyncio.sleep(0.05)
    store.gate.set()
    await asyncio.wait_for(stopping, 5)
    assert await store.rows() == 4
