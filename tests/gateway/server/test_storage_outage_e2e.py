"""Storage outages never stop traffic: with PostgreSQL unreachable at start, or lost in the
middle, requests keep succeeding, /readyz says storage is degraded, ratings get 503 with
Retry-After, and what was buffered arrives once the database is back."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from tests.conftest import upstream_config
from tests.support.gateway import GatewayProcess
from tests.support.postgres import PgSchema, new_pg_schema
from tests.support.tcp_proxy import TcpProxy
from tests.support.upstream import FakeUpstream

AUTH = {"authorization": "Bearer test-key"}


@pytest.fixture
async def schema() -> AsyncIterator[PgSchema]:
    async with new_pg_schema() as made:
        yield made


@pytest.fixture
def proxy(schema: PgSchema) -> Iterator[TcpProxy]:
    target = urlsplit(schema.url)
    relay = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432).start()
    try:
        yield relay
    finally:
        relay.stop()


def through(schema: PgSchema, proxy: TcpProxy) -> str:
    """The schema's url, reached through the relay."""
    parts = urlsplit(schema.gateway_url)
    netloc = parts.netloc.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")
    if parts.port is None:
        netloc = parts.netloc.replace(str(parts.hostname), f"127.0.0.1:{proxy.port}")
    return parts._replace(netloc=netloc).geturl()


def start(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess], url: str
) -> GatewayProcess:
    cfg: dict[str, Any] = upstream_config(upstream)
    cfg["storage"] = {"url": url, "flush_interval": 0.2, "share_interval": 0.5}
    return start_gateway(cfg)


def chat(gw: GatewayProcess) -> str:
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    resp = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=10)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["id"])


def storage(gw: GatewayProcess) -> dict[str, Any]:
    resp = httpx.get(gw.url + "/readyz", timeout=10)
    assert resp.status_code == 200  # still ready: traffic does not need the store
    return dict(resp.json()["storage"])


def rate(gw: GatewayProcess, response_id: str) -> httpx.Response:
    rating = {"response_id": response_id, "overall": 4}
    return httpx.post(gw.url + "/v1/feedback", json=rating, headers=AUTH, timeout=10)


def until(check: Callable[[], bool], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.05)


async def stored_attempts(schema: PgSchema) -> int:
    conn = await asyncpg.connect(schema.url, server_settings=schema.settings)
    try:
        return int(await conn.fetchval("SELECT COUNT(*) FROM attempts"))
    finally:
        await conn.close()


def refused_rating(gw: GatewayProcess, response_id: str) -> None:
    refused = rate(gw, response_id)
    assert refused.status_code == 503, refused.text
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "store_unavailable"


async def test_a_database_unreachable_at_start(
    upstream: FakeUpstream,
    schema: PgSchema,  # before start_gateway: the schema outlives the gateway using it
    start_gateway: Callable[..., GatewayProcess],
    proxy: TcpProxy,
) -> None:
    proxy.down()
    gw = start(upstream, start_gateway, through(schema, proxy))
    answers = [chat(gw) for _ in range(5)]
    assert storage(gw)["state"] == "degraded"
    refused_rating(gw, answers[0])
    assert "storage is unavailable at start" in gw.logs()

    proxy.restore()
    until(lambda: storage(gw)["state"] == "ok")
    until(lambda: rate(gw, answers[0]).status_code == 200)
    assert await stored_attempts(schema) == 5  # the buffered attempts arrived
    assert storage(gw)["dropped"] == 0


async def test_a_database_lost_and_back_mid_traffic(
    upstream: FakeUpstream,
    schema: PgSchema,  # before start_gateway: the schema outlives the gateway using it
    start_gateway: Callable[..., GatewayProcess],
    proxy: TcpProxy,
) -> None:
    gw = start(upstream, start_gateway, through(schema, proxy))
    before = [chat(gw) for _ in range(3)]
    until(lambda: storage(gw)["state"] == "ok")

    proxy.down()
    during = [chat(gw) for _ in range(7)]  # answered all the same
    until(lambda: storage(gw)["state"] == "degraded")
    refused_rating(gw, during[-1])
    history = httpx.get(gw.url + "/evaluations", timeout=10)  # the admin API reads the store
    assert history.status_code == 503 and "retry-after" in history.headers
    assert "storage is unavailable" in gw.logs()
    assert "postgres@" not in gw.logs()  # no url (and so no password) in the log

    proxy.restore()
    until(lambda: storage(gw)["state"] == "ok")
    assert rate(gw, before[0]).status_code == 200
    assert await stored_attempts(schema) == 10
