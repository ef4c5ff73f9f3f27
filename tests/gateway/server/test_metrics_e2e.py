"""GET /metrics on a real gateway with two workers: the sums of what both served, exact."""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.server.workers import reuse_port_supported
from tests.conftest import upstream_config
from tests.gateway.server.test_workers import (
    listening_processes,
    server_side_owners,
    two_workers,
)
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.skipif(not reuse_port_supported(), reason="Linux SO_REUSEPORT")

ROOT = Path(__file__).resolve().parents[3]
ADMIN = {"authorization": "Bearer admin-secret"}
SCRAPER = {"authorization": "Bearer metrics-secret"}
KEY = {"authorization": "Bearer test-key"}
CHAT = "/v1/chat/completions"
BENCHED = "gatewise_model_blacklisted"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(gw: GatewayProcess, headers: dict[str, str] = SCRAPER) -> Samples:
    """One scrape on a new connection (so on either worker), parsed by prometheus_client."""
    answer = httpx.get(gw.url + "/metrics", headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(answer.text)


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape_one(gw: GatewayProcess) -> tuple[int, Samples]:
    """A scrape on a new connection, and the worker that answered it: the process that
    holds the server end of the connection while it is still open."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.connect()
        assert conn.sock is not None
        client_port = conn.sock.getsockname()[1]
        conn.request("GET", "/metrics", headers=SCRAPER)
        answer = conn.getresponse()
        text = answer.read().decode()
        assert answer.status == 200, text
        owner = server_side_owners(gw.port, {client_port})[client_port]
    finally:
        conn.close()
    return owner, parse(text)


def each_worker_until(
    gw: GatewayProcess, workers: set[int], ready: Callable[[Samples], bool]
) -> dict[int, Samples]:
    """Scrapes until every worker has answered one that is `ready` (what a worker knows
    of the others arrives with the fleet's rounds): worker -> that scrape."""
    seen: dict[int, Samples] = {}
    deadline = time.monotonic() + 15
    while set(seen) != workers:
        assert time.monotonic() < deadline, f"not ready on every worker: {set(seen)}"
        worker, samples = scrape_one(gw)
        assert worker in workers
        if ready(samples):
            seen[worker] = samples
        else:
            time.sleep(0.05)  # polling: the next fleet round is due within a second
    return seen


def total(samples: Samples, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def ask(client: httpx.Client | None, gw: GatewayProcess, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if client is None:  # a new connection: either worker
        return httpx.post(gw.url + CHAT, json=body, headers=KEY, timeout=10)
    return client.post(gw.url + CHAT, json=body, headers=KEY, timeout=10)


def test_a_burst_is_counted_exactly_across_two_workers(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess]
) -> None:
    config = upstream_config(upstream)
    config["server"].update(admin_token="admin-secret", metrics_token="metrics-secret")
    models = {m["name"]: m for m in config["models"]}
    models["alpha"]["fallbacks"] = ["beta"]
    models["gamma"]["pricing"] = {"input_per_million": 1, "output_per_million": 2}
    config["routes"] = [{"name": "solo", "models": ["gamma"]}]
    config["selection"] = {"blacklist_threshold": 3, "exploration_rate": 0}
    gw = two_workers_with(upstream, start_gateway, config)

    # 12 answers by the route, each on a new connection: spread over both workers.
    for _ in range(12):
        assert ask(None, gw, "solo").status_code == 200
    # One the upstream refuses (400): no fallback, nobody blamed.
    upstream.behave("gamma-up", status=400, times=1)
    assert ask(None, gw, "solo").status_code == 400
    # alpha fails three times on one connection (one worker: its streak benches alpha);
    # beta answers each as the fallback.
    upstream.behave("alpha-up", status=500, times=3)
    with httpx.Client() as client:
        for _ in range(3):
            answer = ask(client, gw, "alpha")
            assert answer.status_code == 200 and answer.json()["model"] == "beta"
    # The worker that saw the streak benches alpha; the other adopts it from the store.
    workers = listening_processes(gw.port) - {gw.proc.pid}
    assert len(workers) == 2
    each_worker_until(gw, workers, lambda s: total(s, BENCHED, model="alpha") == 1)
    # Benched, alpha is not tried: beta answers at the first attempt.
    answer = ask(None, gw, "alpha")
    assert answer.status_code == 200 and answer.json()["model"] == "beta"

    # Two connections an inbound limit closes (not HTTP), on either worker.
    for _ in range(2):
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
            sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 400")

    trips = "gatewise_inbound_limit_trips_total"
    views = each_worker_until(
        gw,  # each worker's own counts and the other's latest published ones
        workers,
        lambda s: (
            total(s, "gatewise_requests_total") == 17
            and total(s, trips, cause="invalid_request") == 2
        ),
    )
    chat = "chat.completions"
    for samples in views.values():  # either worker says the same
        assert total(samples, "gatewise_workers") == 2
        assert total(samples, "gatewise_requests_total") == 17
        assert total(samples, "gatewise_requests_total", route="solo", model="gamma",
                     outcome="success") == 12  # fmt: skip
        assert total(samples, "gatewise_requests_total", route="solo", model="",
                     outcome="bad_request") == 1  # fmt: skip
        assert total(samples, "gatewise_requests_total", model="beta", outcome="fallback") == 3
        assert total(samples, "gatewise_requests_total", model="beta", outcome="success") == 1
        attempts = "gatewise_attempts_total"
        assert total(samples, attempts) == 20
        assert total(samples, attempts, model="gamma", provider="up", outcome="success") == 12
        assert total(samples, attempts, model="gamma", outcome="bad_request") == 1
        assert total(samples, attempts, model="alpha", outcome="server_error") == 3
        assert total(samples, attempts, model="beta", outcome="success", endpoint=chat) == 4
        latency = "gatewise_upstream_latency_seconds_count"
        assert total(samples, latency, model="alpha") == 3
        assert total(samples, latency, model="gamma") == 13
        assert total(samples, "gatewise_time_to_first_token_seconds_count", model="beta") == 4
        assert total(samples, "gatewise_overhead_seconds_count") == 16  # answered requests
        tokens = "gatewise_tokens_total"
        assert total(samples, tokens, model="gamma", direction="input") == 12 * 11
        assert total(samples, tokens, model="gamma", direction="output") == 12 * 7
        assert total(samples, tokens, model="beta", direction="output") == 4 * 7
        assert total(samples, "gatewise_cost_total", model="gamma") == pytest.approx(
            12 * (11 * 1 + 7 * 2) / 1e6
        )
        assert total(samples, BENCHED, model="alpha") == 1
        assert total(samples, BENCHED, model="beta") == 0
        assert total(samples, "gatewise_model_blacklist_remaining_seconds", model="alpha") > 3000
        assert total(samples, "gatewise_storage_dropped_rows_total") == 0
        assert total(samples, "gatewise_storage_degraded") == 0
        assert total(samples, trips, cause="invalid_request") == 2
        score = total(samples, "gatewise_selection_score", model="gamma", optimization="cost")
        assert score != 0
    dashboard_reads_what_is_exported(samples)
    # Nothing secret or unbounded in a label.
    labels = {value for (_, ls) in samples for _, value in ls}
    assert not {"test-key", "admin-secret", "metrics-secret", "hi"} & labels
    assert not [v for v in labels if v.startswith("chatcmpl-")]


def dashboard_reads_what_is_exported(samples: Samples) -> None:
    """Every query of deploy/grafana-dashboard.json names series this scrape has, grouped
    by labels they carry, and every $variable it uses is defined: a renamed metric or
    label breaks this test, not the operators' dashboard."""
    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    labels_of: dict[str, set[str]] = {}
    for name, ls in samples:
        labels_of.setdefault(name, set()).update(k for k, _ in ls)
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    for expr in exprs:
        names = set(re.findall(r"\bgatewise_[a-z_]+", expr))
        assert names, expr
        for name in names:
            assert name in labels_of, f"{name} (in {expr!r}) is not exported"
            for group in re.findall(r"by \(([^)]*)\)", expr):
                wanted = {label.strip() for label in group.split(",")}
                assert wanted <= labels_of[name] | {"instance", "job"}, (name, wanted)
        for variable in re.findall(r"\$(\w+)", expr):
            assert variable.startswith("__") or variable in defined, (variable, expr)


def two_workers_with(
    upstream: FakeUpstream, start: Callable[..., GatewayProcess], config: dict[str, object]
) -> GatewayProcess:
    return two_workers(upstream, lambda _config, **kw: start(config, **kw))


def test_a_scrape_counts_the_connections_both_workers_hold(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess]
) -> None:
    config = upstream_config(upstream)
    config["server"].update(admin_token="admin-secret", metrics_token="metrics-secret")
    gw = two_workers_with(upstream, start_gateway, config)
    workers = listening_processes(gw.port) - {gw.proc.pid}  # type: ignore[union-attr]
    held = "gatewise_open_connections"
    # 8 clients that stay (a stream's client, between two events), spread by address hash
    clients = [socket.create_connection(("127.0.0.1", gw.port), timeout=10) for _ in range(8)]
    try:
        # 8, the scrape's own, and at most a scrape or two the other worker still held
        # when it last published its gauges.
        # The accept queue is a moment's count: a scrape's own connection may be in it as
        # a worker publishes, so each worker is asked until it shows none waiting.
        views = each_worker_until(
            gw,
            workers,
            lambda s: 9 <= total(s, held) <= 11 and total(s, "gatewise_accept_queue") == 0,
        )
        for samples in views.values():
            assert total(samples, "gatewise_accept_queue") == 0  # every one taken
            assert 0 <= total(samples, "gatewise_event_loop_lag_seconds") < 5
    finally:
        for client in clients:
            client.close()
    each_worker_until(gw, workers, lambda s: total(s, held) <= 3)


def test_metrics_need_the_metrics_or_the_admin_token(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess]
) -> None:
    config = upstream_config(upstream)
    config["server"].update(admin_token="admin-secret", metrics_token="metrics-secret")
    gw = start_gateway(config)
    assert httpx.get(gw.url + "/metrics", timeout=10).status_code == 401
    assert httpx.get(gw.url + "/metrics", headers=KEY, timeout=10).status_code == 401
    scrape(gw, SCRAPER)
    scrape(gw, ADMIN)
    # The metrics token reads /metrics and nothing else.
    assert httpx.get(gw.url + "/admin/keys", headers=SCRAPER, timeout=10).status_code == 401
