"""What counting for /metrics costs per attempt, and what prometheus_client would cost.

    python bench/metrics_cost.py [--number 200000]

Times, with timeit, in µs per call (best of 5):
- `RoutingMetrics.observe` on a successful answer (what the recorder adds per attempt);
- `Recorder.record` on that answer, with the counting and with it replaced by a no-op;
- the same counts through prometheus_client objects with cached labelled children, in
  its default (in-memory) mode and in multiprocess mode (PROMETHEUS_MULTIPROC_DIR: an
  mmap'd write under a lock per value), each in a fresh interpreter, since the mode is
  chosen when prometheus_client is imported.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the gateway importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMETHEUS = """
from prometheus_client import Counter, Histogram
requests = Counter("r", "", ["route", "model", "endpoint", "outcome"], registry=None)
attempts = Counter("a", "", ["route", "model", "provider", "endpoint", "outcome"], registry=None)
tokens = Counter("t", "", ["model", "key", "direction"], registry=None)
cost = Counter("c", "", ["model", "key"], registry=None)
latency = Histogram("l", "", ["model", "provider"], registry=None)
ttft = Histogram("f", "", ["model"], registry=None)
overhead = Histogram("o", "", ["endpoint"], registry=None)
children = (
    requests.labels("auto", "m", "chat.completions", "success"),
    attempts.labels("auto", "m", "p", "chat.completions", "success"),
    tokens.labels("m", "k", "input"), tokens.labels("m", "k", "output"),
    cost.labels("m", "k"),
    latency.labels("m", "p"), ttft.labels("m"), overhead.labels("chat.completions"),
)
r, a, ti, to, c, l, f, o = children
def count():
    r.inc(); a.inc(); ti.inc(1000); to.inc(10); c.inc(0.001)
    l.observe(0.02); f.observe(0.02); o.observe(0.00005)
"""


def best(statement: str, setup: str | dict[str, object], number: int) -> float:
    if isinstance(setup, dict):
        runs = timeit.repeat(statement, globals=setup, number=number, repeat=5)
    else:
        runs = timeit.repeat(statement, setup=setup, number=number, repeat=5)
    return min(runs) / number * 1e6


def prometheus_client_cost(number: int, multiprocess: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    with tempfile.TemporaryDirectory() as directory:
        if multiprocess:
            env["PROMETHEUS_MULTIPROC_DIR"] = directory
        code = (
            "import timeit\n"
            f"setup = {PROMETHEUS!r}\n"
            f"runs = timeit.repeat('count()', setup=setup, number={number}, repeat=5)\n"
            f"print(min(runs) / {number} * 1e6)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
    return float(out.stdout)


def tracing_cost(number: int) -> float:
    """A request answered at its first attempt: its span and the attempt's, made and
    handed to a BatchSpanProcessor whose exporter drops them (the export's own cost, in
    the SDK's thread, is not counted)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from gateway.routing.tracing import Tracing
    from tests.gateway.routing.test_recorder import Chain

    class Drop(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    tracing = Tracing(provider.get_tracer("bench"))
    chain = Chain()
    outcome = chain.outcome()
    outcome.job.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    try:
        return best("observe(outcome)", {"observe": tracing.observe, "outcome": outcome}, number)
    finally:
        provider.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--number", type=int, default=200_000)
    number = parser.parse_args().number

    from tests.gateway.routing.test_recorder import Chain

    chain = Chain()
    outcome = chain.outcome()
    outcome.timings = type(outcome.timings)(20.0, 20.0, 0.05)
    outcome.job.owner = "k"
    metrics = chain.recorder.metrics
    chain.writer.queue_size = 10**9  # keep enqueue on its normal path
    observe = best("observe(outcome)", {"observe": metrics.observe, "outcome": outcome}, number)
    space = {"record": chain.recorder.record, "outcome": outcome}
    counting = metrics.observe
    with_counts, without = [], []
    for _ in range(3):  # interleaved: the chain's queues grow as it runs
        metrics.observe = counting  # type: ignore[method-assign]
        with_counts.append(best("record(outcome)", space, number // 3))
        metrics.observe = lambda outcome: None  # type: ignore[method-assign]
        without.append(best("record(outcome)", space, number // 3))
    print(f"RoutingMetrics.observe:                 {observe:.2f} µs/attempt")
    print(f"Recorder.record with counting:          {min(with_counts):.2f} µs/attempt")
    print(f"Recorder.record, counting a no-op:      {min(without):.2f} µs/attempt")
    plain = prometheus_client_cost(number, multiprocess=False)
    mmap = prometheus_client_cost(number // 4, multiprocess=True)
    print(f"tracing on (2 spans, batched, no export): {tracing_cost(number // 10):.2f} µs/request")
    print(f"prometheus_client, in memory:           {plain:.2f} µs/attempt")
    print(f"prometheus_client, multiprocess (mmap): {mmap:.2f} µs/attempt")


if __name__ == "__main__":
    main()
