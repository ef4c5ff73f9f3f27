"""Stopping a worker that holds thousands of streams: how they end, and how long it takes.

    python bench/shutdown.py [--streams 1000,5000] [--deadline 2] [--workers 1]
                             [--json out.json]

The nginx upstream of bench/streams.py streams each answer for 10 s. N streams are
opened through one Gatewise worker (pinned to the first CPU; nginx and the client, one
uvloop process, to the second) over a few seconds; once every one has its first event,
the worker gets SIGTERM, with `server.shutdown_timeout` = `--deadline`. Reported per N:
how the streams ended (`told`: an error event with code shutting_down, `data: [DONE]`
and a complete chunked body; `whole`: finished before the deadline; `cut`: closed
without an end), when the told ones heard it after the deadline (p50/p99/max), how long
the worker took from the signal to its exit, and the attempts it stored, by class
(read from its SQLite file after the exit). See bench/README.md ("Stopping").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench.*` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness, streams
from bench.harness import Child

ROOT = Path(__file__).resolve().parents[1]
TOLD = b'"code":"shutting_down"'
END = b"data: [DONE]\n\n\r\n0\r\n\r\n"  # the marker's chunk, then the body's last chunk


class _Stream(asyncio.Protocol):
    """One streamed answer, kept until the connection closes."""

    def __init__(self, request: bytes, first: asyncio.Event, n: list[int], total: int) -> None:
        self.request = request
        self.first, self.seen, self.total = first, n, total
        self.data = bytearray()
        self.ended_at = 0.0
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        had_event = b"\n\n" in self.data
        self.data += data
        if not had_event and b"\n\n" in self.data[self.data.find(b"\r\n\r\n") + 4 :]:
            self.seen[0] += 1
            if self.seen[0] == self.total:
                self.first.set()
        if self.data.endswith(END):
            self.ended_at = time.monotonic()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    @property
    def outcome(self) -> str:
        if not self.data.endswith(END):
            return "cut"
        return "told" if TOLD in self.data else "whole"


async def _clients(port: int, key: str, n: int, ramp: float, pid: int) -> dict[str, Any]:
    body = b'{"model":"bench-stream","stream":true,"messages":[{"role":"user","content":"hi"}]}'
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    loop = asyncio.get_running_loop()
    first, seen = asyncio.Event(), [0]
    opened: list[_Stream] = []
    began = time.monotonic()
    for i in range(n):
        delay = began + i * ramp / n - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        _, proto = await loop.create_connection(
            lambda: _Stream(request, first, seen, n), "127.0.0.1", port
        )
        opened.append(proto)
    await asyncio.wait_for(first.wait(), 30)
    signalled = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    await asyncio.wait([s.closed for s in opened], timeout=60)
    return {"signalled": signalled, "streams": opened}


def run(n: int, deadline: float, workers: int, tmp: Path) -> dict[str, Any]:
    streams._shape(streams.CONTENT_CHUNKS)
    cores = sorted(os.sched_getaffinity(0))
    target, load = str(cores[0]), str(cores[-1])
    work = tmp / f"n{n}"
    (work / "nginx").mkdir(parents=True)
    up_port, port = harness.free_port(), harness.free_port()
    conf = work / "nginx" / "nginx.conf"
    conf.write_text(streams.nginx_conf(up_port, work / "nginx", 2 * n + 1000))
    nginx = Child("nginx", ["nginx", "-p", str(work / "nginx"), "-c", str(conf)], load,
                  log=work / "nginx.log").start()  # fmt: skip
    key = "gw-" + secrets.token_hex(12)
    yaml = streams.gateway_yaml(f"http://127.0.0.1:{up_port}", key, 20_000, None)
    (work / "gatewise.yaml").write_text(
        yaml.replace("server:", f"server:\n  shutdown_timeout: {deadline}", 1)
    )
    cmd = [sys.executable, "-m", "gateway", "serve", "--config", str(work / "gatewise.yaml"),
           "--port", str(port), "--workers", str(workers)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    gw = Child("gatewise", cmd, target, env=env, cwd=work, log=work / "gatewise.log")
    try:
        harness.wait_ready(nginx, up_port, "/healthz", 10)
        gw.start()
        harness.wait_ready(gw, port, "/readyz", 60)
        os.sched_setaffinity(0, {int(load)})
        got = asyncio.run(_clients(port, key, n, max(1.0, n / 1500), gw.pid))
        assert gw.proc is not None
        gw.proc.wait(timeout=60)
        exited = time.monotonic() - got["signalled"]
    finally:
        gw.stop()
        nginx.stop()
        os.sched_setaffinity(0, set(cores))
    outcomes = [s.outcome for s in got["streams"]]
    heard = [s.ended_at - got["signalled"] - deadline
             for s in got["streams"] if s.outcome == "told"]  # fmt: skip
    with sqlite3.connect(work / "streams-bench.db") as db:
        stored = dict(
            db.execute("SELECT coalesce(error_class, 'ok'), count(*) FROM attempts GROUP BY 1")
        )
    return {
        "streams": n,
        "workers": workers,
        "deadline_s": deadline,
        **{kind: outcomes.count(kind) for kind in ("told", "whole", "cut")},
        "told_after_deadline_ms": {
            "p50": _ms(heard, 0.5),
            "p99": _ms(heard, 0.99),
            "max": _ms(heard, 1.0),
        },
        "exit_after_signal_s": round(exited, 2),
        "stored": stored,
        "traceback_in_log": "Traceback" in (work / "gatewise.log").read_text(errors="replace"),
    }


def _ms(values: list[float], q: float) -> float | None:
    seconds = harness._pct(values, q)
    return None if seconds is None else round(1000 * seconds, 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--streams", default="1000,5000", help="N streams held, comma-separated")
    p.add_argument("--deadline", type=float, default=2.0, help="server.shutdown_timeout, s")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a file per client stream
    rows = []
    with tempfile.TemporaryDirectory(prefix="gw-shutdown-") as tmp:
        for n in (int(x) for x in a.streams.split(",")):
            row = run(n, a.deadline, a.workers, Path(tmp))
            print(json.dumps(row), flush=True)
            rows.append(row)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
