"""Measuring tools for bench/overhead.py: processes, /proc counters, wrk, a streaming client.

Every child runs in its own session (so its whole tree is found by session id and
killed by process group), pinned with `taskset`. Everything has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "WRK_LUA",
    "Child",
    "cpu_jiffies",
    "free_port",
    "own_ticks",
    "serve_gateway",
    "stream_requests",
    "wait_ready",
    "wrk",
    "wrk_async",
]

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WRK_LUA = BENCH / "wrk" / "chat.lua"
TICK_US = 1e6 / os.sysconf("SC_CLK_TCK")
# wrk and the mock upstream are not under test. As SCHED_BATCH processes they never
# preempt the target when they wake: where they share its CPU they run when it waits.
# With the default policy, two workers sharing both CPUs with them were preempted 1.6
# times per request (bench/README.md, "Scheduling").
BATCH = ["chrt", "--batch", "0"]


@functools.cache
def batch_prefix() -> list[str]:
    """BATCH, or nothing where the system refuses the policy (the run records which)."""
    try:
        done = subprocess.run([*BATCH, "true"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return BATCH if done.returncode == 0 else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Child:
    """A process tree started with `taskset -c cpus` in a new session."""

    name: str
    cmd: list[str]
    cpus: str
    env: dict[str, str] | None = None
    cwd: Path | None = None
    batch: bool = False
    log: Path | None = None
    proc: subprocess.Popen | None = None
    started: float = 0.0
    startup_ms: float = 0.0
    stopped: bool = False
    _out: object = field(default=None, repr=False)

    def start(self) -> Child:
        self._out = open(self.log, "wb") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [*(batch_prefix() if self.batch else []), "taskset", "-c", self.cpus, *self.cmd],
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pids(self) -> list[int]:
        """Every live process of this child's session (workers included)."""
        out = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                stat = _stat(int(entry))
                if stat and int(stat[3]) == self.pid:  # field 6: session id
                    out.append(int(entry))
        return out

    def cpu_ticks(self) -> int:
        total = 0
        for pid in self.pids():
            stat = _stat(pid)
            if stat:
                total += int(stat[11]) + int(stat[12])  # fields 14, 15: utime, stime
        return total

    def pin(self, cpus: str) -> None:
        """Move every process and thread of the tree to `cpus` (as if started there)."""
        if cpus == self.cpus:
            return
        for pid in self.pids():
            subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)],
                           capture_output=True, timeout=10, check=False)  # fmt: skip
        self.cpus = cpus

    def peak_rss_mb(self) -> dict[int, float]:
        """VmHWM (peak resident set) of each process of the tree, in MB."""
        out = {}
        for pid in self.pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        out[pid] = int(line.split()[1]) / 1024
        return out

    def log_tail(self, n: int = 20) -> str:
        if not self.log or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        if self.proc is None or self.stopped:
            return
        self.stopped = True
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and (self.alive() or self.pids()):
                time.sleep(0.02)
            if not self.alive() and not self.pids():
                break
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=1)
        if hasattr(self._out, "close"):
            self._out.close()


def cpu_jiffies(cpus: list[int]) -> dict[int, tuple[int, int]]:
    """CPU -> (busy, total) jiffies since boot, from /proc/stat."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            counts = [int(v) for v in values[:8]]
            out[int(name[3:])] = (sum(counts) - counts[3] - counts[4], sum(counts))  # less idle
    return out


def own_ticks() -> float:
    """CPU ticks of this script and its waited-for children (wrk)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    seconds = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    return seconds * os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields from 3 (state) on


def wait_ready(child: Child | None, port: int, path: str, timeout: float) -> float:
    """Seconds from the child's spawn to the first 200 on GET path (tight 2 ms poll)."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    started = child.started if child else time.perf_counter()
    deadline = started + timeout
    while time.perf_counter() < deadline:
        if child is not None and not child.alive():
            raise RuntimeError(f"{child.name} exited early:\n{child.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
                s.sendall(request)
                if s.recv(64).startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
                    return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.002)
    name = child.name if child else "target"
    raise RuntimeError(f"{name} not ready on :{port}{path} after {timeout} s")


def _wrk_cmd(url: str, conns: int, seconds: int, cpus: str, batch: bool) -> list[str]:
    return [*(batch_prefix() if batch else []), "taskset", "-c", cpus,
            "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency",
            "--timeout", "10s", "-s", str(WRK_LUA), url]  # fmt: skip


def _wrk_env(model: str, key: str, stream: bool) -> dict[str, str]:
    return {**os.environ, "BENCH_MODEL": model, "BENCH_KEY": key, "BENCH_STREAM": str(int(stream))}


def _parse_wrk(out: str) -> dict:
    match = re.search(r"^WRK_JSON (\{.*\})$", out, re.M)
    if not match:
        raise RuntimeError(f"wrk printed no summary:\n{out[-2000:]}")
    raw = json.loads(match.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = sum(raw[k] for k in ("connect_errors", "read_errors", "write_errors"))
    seconds = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "rps": raw["requests"] / seconds if seconds else 0.0,
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "mean_ms": raw["mean_us"] / 1000,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": socket_errors,
        "timeouts": raw["timeouts"],
        "errors": (int(non2xx.group(1)) if non2xx else 0) + socket_errors + raw["timeouts"],
    }


def wrk(
    url: str, conns: int, seconds: int, model: str, key: str, cpus: str, stream: bool = False,
    batch: bool = True,
) -> dict:  # fmt: skip
    out = subprocess.run(
        _wrk_cmd(url, conns, seconds, cpus, batch),
        env=_wrk_env(model, key, stream),
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=False,
    )
    return _parse_wrk(out.stdout + out.stderr)


async def wrk_async(
    url: str, conns: int, seconds: int, model: str, key: str, cpus: str, stream: bool = False,
    batch: bool = True,
) -> dict:  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *_wrk_cmd(url, conns, seconds, cpus, batch),
        env=_wrk_env(model, key, stream),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), seconds + 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return _parse_wrk(out.decode(errors="replace"))


_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.I)


async def _one_stream(reader, writer, request: bytes) -> tuple[float, float, bool]:
    """(seconds to the first SSE `data:`, seconds to the end, server keeps the connection)."""
    t0 = time.perf_counter()
    writer.write(request)
    buf = b""
    start = -1
    ttfb = None
    length = None
    chunked = False
    keep = True
    while True:
        data = await reader.read(65536)
        if not data:
            raise ConnectionError("connection closed mid-response")
        buf += data
        if start < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                continue
            head = buf[:end]
            status = int(head.split(None, 2)[1])
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {buf[:300]!r}")
            lower = head.lower()
            chunked = b"transfer-encoding: chunked" in lower
            keep = b"connection: close" not in lower
            match = _LENGTH.search(head)
            length = int(match.group(1)) if match else None
            start = end + 4
        if ttfb is None and buf.find(b"data:", start) >= 0:
            ttfb = time.perf_counter() - t0
        if (length is not None and len(buf) - start >= length) or (
            chunked and buf.endswith(b"\r\n0\r\n\r\n")
        ):
            break
    total = time.perf_counter() - t0
    if ttfb is None or b"[DONE]" not in buf:
        raise RuntimeError(f"incomplete stream: {buf[-300:]!r}")
    return ttfb, total, keep


async def stream_requests(
    port: int, path: str, model: str, key: str, count: int, seconds: float
) -> dict:
    """Sequential streaming requests on one keep-alive connection: TTFB and total, in ms."""
    body = (
        b'{"model":"' + model.encode() + b'","stream":true,"messages":['
        b'{"role":"user","content":"Say hello to the benchmark in one short sentence."}]}'
    )
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    ttfb: list[float] = []
    total: list[float] = []
    errors = 0
    first_error = None
    conn = None
    deadline = time.perf_counter() + seconds
    for _ in range(count):
        if time.perf_counter() > deadline:
            break
        try:
            if conn is None:
                conn = await asyncio.open_connection("127.0.0.1", port)
            a, b, keep = await asyncio.wait_for(_one_stream(*conn, request), 10)
            ttfb.append(a * 1000)
            total.append(b * 1000)
        except Exception as exc:  # counted: any failure makes the run invalid
            errors += 1
            first_error = first_error or repr(exc)[:300]
            keep = False
        if not keep and conn is not None:
            conn[1].close()
            conn = None
    if conn is not None:
        conn[1].close()
    return {
        "n": len(ttfb),
        "ttfb_p50_ms": _median(ttfb),
        "total_p50_ms": _median(total),
        "ttfb_p99_ms": _pct(ttfb, 0.99),
        "errors": errors,
        "first_error": first_error,
    }


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request's body off a raw HTTP/1.1 connection (its head read and dropped, its
    body by Content-Length): for the benches' own loopback upstreams."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return await reader.readexactly(length)


@contextlib.contextmanager
def serve_gateway(
    config: dict, work: Path, *, log_level: str | None = "error"
) -> Iterator[tuple[int, subprocess.Popen]]:
    """A `gatewise serve` process with `config` (a dict, written to `work`) on a free
    loopback port, ready: (port, process). Stopped on exit (killed if it will not)."""
    import httpx
    import yaml

    port = free_port()
    path = work / f"gateway-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    logfile = work / f"gateway-{port}.log"
    log = open(logfile, "wb")  # noqa: SIM115 - closed below
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("GATEWISE_STORAGE_URL", None)
    cmd = [sys.executable, "-m", "gateway", "serve", "--config", str(path), "--port", str(port)]
    if log_level is not None:
        cmd += ["--log-level", log_level]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(logfile.read_text())
            time.sleep(0.05)
        yield port, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
