"""Metrics: the workers' counts, shared through a directory and summed at the scrape."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.core.config import KeyRateLimit
from gateway.core.errors import RateLimitExceeded
from gateway.core.keys import Tenant
from gateway.routing.metrics import RoutingMetrics
from gateway.routing.quota import Quota
from gateway.routing.selection import Selector
from gateway.server.metrics import Metrics, merge
from gateway.server.workers import accept_queue, reserve_listeners
from tests.gateway.routing.test_recorder import CATALOG, Chain


def test_merge_adds_series_by_series() -> None:
    a = {"attempts": {("x",): [1.0]}, "ttft": {("m",): [1.0, 0.0, 0.5]}}
    b = {"attempts": {("x",): [2.0], ("y",): [1.0]}, "ttft": {("m",): [0.0, 1.0, 2.0]}}
    assert merge([a, b]) == {
        "attempts": {("x",): [3.0], ("y",): [1.0]},
        "ttft": {("m",): [1.0, 1.0, 2.5]},
    }
    assert a["attempts"] == {("x",): [1.0]}  # the inputs stay as they were


def worker(chain: Chain, directory: Path, clock: list[float]) -> Metrics:
    return Metrics(
        RoutingMetrics(),
        chain.writer,
        chain.blacklist,
        Selector(chain.tracker, chain.blacklist, CATALOG.config.selection),
        CATALOG,
        directory=str(directory),
        clock=lambda: clock[0],
    )


def values(metrics: Metrics) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            if not sample.labels or sample.name == "gatewise_requests_total":
                out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


def test_a_scrape_sums_every_worker_and_keeps_a_dead_ones_counts(tmp_path: Path) -> None:
    chain = Chain()
    clock = [1000.0]
    one, two = worker(chain, tmp_path, clock), worker(chain, tmp_path, clock)
    two.pid = one.pid + 1  # two processes, as far as files go
    for _ in range(3):
        one.routing.observe(chain.outcome())
    two.routing.observe(chain.outcome())
    chain.writer.enqueue(chain.outcome().attempt())
    two.write()
    assert values(one)["gatewise_requests_total"] == 4  # its own, live, and two's file
    assert values(one)["gatewise_workers"] == 2
    assert values(one)["gatewise_storage_queued_rows"] == 2  # each process's queue, summed
    clock[0] += 10  # two has stopped writing: its gauges no longer count, its counts do
    assert values(one)["gatewise_requests_total"] == 4
    assert values(one)["gatewise_workers"] == 1
    assert values(one)["gatewise_storage_queued_rows"] == 1


class Held:
    """A worker's server, as the metrics see it (`server.protocol.Inbound`)."""

    def __init__(self, connections: int) -> None:
        self.connections = connections

    def totals(self) -> dict[str, int]:
        return {"header_timeout": 1}

    def open_connections(self) -> int:
        return self.connections


def test_a_scrape_says_what_the_workers_hold_queue_and_how_late_they_run(
    tmp_path: Path,
) -> None:
    chain = Chain()
    clock = [1000.0]
    one, two = worker(chain, tmp_path, clock), worker(chain, tmp_path, clock)
    two.pid = one.pid + 1
    one.inbound, two.inbound = Held(30), Held(12)
    one.lag.note(0.5, 0.040)
    two.lag.note(0.5, 0.300)  # the other worker's loop ran 0.3 s late
    before = accept_queue()  # whatever else this test process listens on
    two.write()
    listener = reserve_listeners("127.0.0.1", 0, 1)[0]
    listener.listen(16)
    clients = [socket.create_connection(listener.getsockname()[:2]) for _ in range(3)]
    try:
        seen = values(one)
        assert seen["gatewise_open_connections"] == 42  # summed over the workers
        assert seen["gatewise_accept_queue"] == 2 * before + 3  # never accepted: queued
        assert seen["gatewise_event_loop_lag_seconds"] == 0.3  # the worst worker's
        trips = [
            sample
            for family in text_string_to_metric_families(one.exposition().decode())
            for sample in family.samples
            if sample.name == "gatewise_inbound_limit_trips_total"
        ]
        assert [(s.labels, s.value) for s in trips] == [({"cause": "header_timeout"}, 2.0)]
        listener.accept()[0].close()
        assert values(one)["gatewise_accept_queue"] == 2 * before + 2
    finally:
        for client in clients:
            client.close()
        listener.close()


def test_a_keys_refusals_are_counted_by_reason_and_summed_over_workers(tmp_path: Path) -> None:
    chain = Chain()
    clock = [1000.0]
    one, two = worker(chain, tmp_path, clock), worker(chain, tmp_path, clock)
    two.pid = one.pid + 1
    one.quota, two.quota = Quota(lambda: clock[0]), Quota(lambda: clock[0])
    team = Tenant("team", rate_limit=KeyRateLimit(requests_per_minute=1, max_concurrent=1))
    for quota in (one.quota, two.quota):
        quota.admit(team)
        for _ in range(2):
            with pytest.raises(RateLimitExceeded):
                quota.admit(team)
    assert one.quota.refusals == {("team", "concurrency"): 2}
    one.quota.leave("team")
    with pytest.raises(RateLimitExceeded):
        one.quota.admit(team)  # room in flight now, but not in the minute
    two.write()
    refusals = {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(one.exposition().decode())
        for sample in family.samples
        if sample.name == "gatewise_key_refusals_total" and sample.labels["key"] == "team"
    }
    assert refusals == {"concurrency": 4.0, "requests": 1.0}
