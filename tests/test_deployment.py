"""The deployment files: compose.yaml's fleet (PostgreSQL, two replicas, nginx in front),
the image's settings, and deploy/nginx.conf run for real in front of two real gateway
replicas on one PostgreSQL schema (Docker itself does not run on this machine)."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import upstream_config
from tests.support.gateway import GatewayProcess
from tests.support.nginx import running_nginx
from tests.support.postgres import PgSchema, new_pg_schema
from tests.support.upstream import FakeUpstream, free_port

ROOT = Path(__file__).resolve().parents[1]
AUTH = {"authorization": "Bearer test-key"}


def test_compose_runs_two_replicas_on_postgresql_behind_one_port() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "gateway1", "gateway2", "nginx"}
    for name in ("gateway1", "gateway2"):
        env = services[name]["environment"]
        assert env["GATEWISE_STORAGE_URL"].startswith("postgresql://")
        assert "GATEWISE_ADMIN_TOKEN" in env  # behind a proxy, loopback-only is no guard
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["nginx"]["ports"] == ["8080:8080"]
    mounted = services["nginx"]["volumes"][0].split(":")[0]
    assert (ROOT / mounted).is_file()
    assert "gateway1:8080" in (ROOT / mounted).read_text()


def test_the_image_runs_unprivileged_with_a_health_check() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.M)
    check = re.search(r"^HEALTHCHECK .*\n?.*127\.0\.0\.1:(\d+)/healthz", dockerfile, re.M)
    assert check is not None
    # On the probe port the command opens, where probes do not queue behind clients.
    serve = re.search(r'^CMD \["gatewise", "serve", .*"--probe-port", "(\d+)"', dockerfile, re.M)
    assert serve is not None and serve.group(1) == check.group(1)


@pytest.fixture
async def schema() -> AsyncIterator[PgSchema]:
    async with new_pg_schema() as made:
        yield made


@pytest.fixture
def nginx_in_front(
    upstream: FakeUpstream,
    schema: PgSchema,  # before start_gateway: the schema outlives the replicas using it
    start_gateway: Callable[..., GatewayProcess],
    tmp_path: Path,
) -> Iterator[tuple[str, list[GatewayProcess]]]:
    cfg = upstream_config(upstream, selection={"exploration_rate": 0})
    cfg["storage"] = {"url": schema.gateway_url, "flush_interval": 0.2}
    replicas = [start_gateway(cfg), start_gateway(cfg)]
    port = free_port()
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    conf = conf.replace("gateway1:8080", f"127.0.0.1:{replicas[0].port}")
    conf = conf.replace("gateway2:8080", f"127.0.0.1:{replicas[1].port}")
    conf = conf.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    conf = conf.replace("worker_processes auto;", "worker_processes 1;")
    url = f"http://127.0.0.1:{port}"
    with running_nginx(conf, tmp_path, url + "/healthz"):
        yield url, replicas


def test_through_nginx_streams_flow_as_they_come_and_the_fleet_counts_as_one(
    nginx_in_front: tuple[str, list[GatewayProcess]], upstream: FakeUpstream
) -> None:
    url, replicas = nginx_in_front
    # The first word, then 30 s of silence: it must reach the client before the silence ends.
    upstream.behave("alpha-up", content="first second", pause_after_first=30)
    body = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with (
        httpx.Client(timeout=10) as http,
        http.stream("POST", url + "/v1/chat/completions", json=body, headers=AUTH) as resp,
    ):
        assert resp.status_code == 200
        assert b"first" in next(resp.iter_bytes())  # within the 10 s timeout, not after 30

    upstream.behaviours.clear()
    ids = []
    for _ in range(10):  # nginx spreads them over both replicas
        reply = httpx.post(
            url + "/v1/chat/completions",
            json={"model": "beta", "messages": [{"role": "user", "content": "hi"}]},
            headers=AUTH,
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
        ids.append(reply.json()["id"])
    for response_id in ids:  # a rating may reach the replica that did not answer
        rated = httpx.post(
            url + "/v1/feedback",
            json={"response_id": response_id, "overall": 5},
            headers=AUTH,
            timeout=10,
        )
        assert rated.status_code == 200, rated.text

    def beta_requests(gw: GatewayProcess) -> int:
        rows = httpx.get(gw.url + "/performance", timeout=10).json()["data"]
        return sum(r["requests"] for r in rows if r["model"] == "beta")

    deadline = time.monotonic() + 10
    while not all(beta_requests(gw) == 10 for gw in replicas):
        assert time.monotonic() < deadline, [beta_requests(gw) for gw in replicas]
        time.sleep(0.05)
