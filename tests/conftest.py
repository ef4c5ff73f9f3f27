"""Shared fixtures: real fake upstreams and real gateway processes on loopback."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.gateway import GatewayProcess
from tests.support.postgres import new_pg_schema
from tests.support.upstream import FakeUpstream


def pytest_configure(config: pytest.Config) -> None:
    # A developer's $GATEWISE_STORAGE_URL would move every test gateway onto that database;
    # a test that wants one passes it explicitly.
    os.environ.pop("GATEWISE_STORAGE_URL", None)


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    """One fake upstream shared by a module's tests (with a module-scoped `gw`)."""
    server = FakeUpstream().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fresh(up: FakeUpstream) -> None:
    """Forget what the shared upstream was told and saw (use with usefixtures)."""
    up.behaviours.clear()
    up.seen.clear()
    up.disconnected.clear()


@pytest.fixture
def client(gw: GatewayProcess) -> Iterator[openai.OpenAI]:
    """The official SDK pointed at the module's gateway, `gw`, with its test key."""
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="test-key", max_retries=0) as c:
        yield c


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    started: list[GatewayProcess] = []

    def start(
        config: dict[str, Any], env: dict[str, str] | None = None, args: Sequence[str] = ()
    ) -> GatewayProcess:
        workdir = tmp_path / f"gw{len(started)}"
        workdir.mkdir()
        config.setdefault("storage", {"url": f"sqlite:///{tmp_path / 'gatewise.db'}"})
        process = GatewayProcess(config, workdir, env, args)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()


def upstream_config(upstream: FakeUpstream, **overrides: Any) -> dict[str, Any]:
    """A gateway configuration whose models all live on the fake upstream."""
    config: dict[str, Any] = {
        "server": {"api_keys": ["test-key"], "max_body_bytes": 4096},
        "providers": [
            {
                "name": "up",
                "type": "openai",
                "base_url": upstream.url,
                "api_key": "sk-upstream-secret-123456",
                "timeout": 5,
            },
        ],
        "models": [
            {
                "name": "alpha",
                "provider": "up",
                "upstream_model": "alpha-up",
                "context_window": 1000,
                "pricing": {"input_per_million": 1, "output_per_million": 2},
            },
            {"name": "beta", "provider": "up", "upstream_model": "beta-up", "context_window": 8000},
            {
                "name": "gamma",
                "provider": "up",
                "upstream_model": "gamma-up",
                "context_window": 32000,
            },
            {"name": "embedder", "provider": "up", "conversation_types": ["embedding"]},
            {"name": "painter", "provider": "up", "conversation_types": ["text-to-image"]},
            {"name": "speaker", "provider": "up", "conversation_types": ["text-to-audio"]},
            {"name": "filmmaker", "provider": "up", "conversation_types": ["text-to-video"]},
        ],
        "routes": [
            {"name": "auto", "models": ["alpha", "beta", "gamma"], "optimization": "accuracy"}
        ],
    }
    config.update(overrides)
    return config


@pytest.fixture(params=["sqlite", "postgres"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Where a fleet of gateways keeps its state: one SQLite file, or a PostgreSQL schema
    of the test's own (skipped without a test server, failed in CI)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fleet.db'}"
        return
    async with new_pg_schema() as schema:
        yield schema.gateway_url
