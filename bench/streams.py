"""Thousands of long streams: Gatewise beside the pass-through under real LLM traffic's shape.

    python bench/streams.py [--streams 1000,3000,9500] [--targets gatewise,passthrough]
                            [--duration 30] [--loaders 4] [--chunks 20] [--json out.json]
                            [--api openai|anthropic]

An nginx upstream (its echo module) streams an OpenAI chat completion: a role chunk,
20 content chunks 0.5 s apart (`--chunks`: that many, spread over the same 10 s), a
finish chunk, a usage chunk and [DONE]. With `--api anthropic` it is an Anthropic Messages
stream instead (message_start and content_block_start, the content_block_delta events,
content_block_stop, message_delta, message_stop), asked of Gatewise's /v1/messages and
served by an `anthropic` provider.
For each N, about N/10 new streams a second arrive, so that N are open once the first
have ended; each is a POST read to its end by a raw asyncio client (several processes,
`--loaders`). The target runs pinned to the first CPU, nginx, the clients and this
script to the second (`--workers 2` targets use both). Measured over the steady part
of the run (from 12 s on): errors of any kind (the whole run), time to the first event
(p50/p99), the added gap between content chunks (the gap minus the 0.5 s nginx waits;
p50/p99/max), a health probe's latency (a fresh connection to /healthz every 50 ms; p99;
with `--probe-port`, Gatewise is also given a probe port, probed the same way; the same
probe of nginx's own /healthz is the measurement's floor, the second CPU's load),
the target's CPU (% of one core), its RSS per open stream, its CPU per event the
clients received, and its longest garbage-collection pause (every collection timed
with gc.callbacks in the target: bench/gcprobe/sitecustomize.py). See bench/README.md.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import json
import multiprocessing
import os
import resource
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench.*` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness
from bench.harness import Child

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")
CONTENT_CHUNKS = 20  # --chunks; a stream lasts STREAM_SECONDS whatever their number
STREAM_SECONDS = 10.0
GAP = STREAM_SECONDS / CONTENT_CHUNKS  # seconds nginx waits before each content chunk


API = "openai"  # --api: the shape of the streams, and the API Gatewise is asked through
HEAD_EVENTS = 1  # events in a stream's first write (before the first content chunk)
END = b"[DONE]"  # the stream's last bytes


def _shape(chunks: int, api: str = "openai") -> None:
    """Set the content chunks per stream and its API (this process's; the loaders are told
    too)."""
    global CONTENT_CHUNKS, GAP, API, HEAD_EVENTS, END
    CONTENT_CHUNKS, GAP = chunks, STREAM_SECONDS / chunks
    API = api
    HEAD_EVENTS, END = (2, b"event: message_stop") if api == "anthropic" else (1, b"[DONE]")


STEADY_FROM = 12.0  # seconds into a run: every stream open then began in the run's steady state
PROBE_EVERY = 0.05
TARGETS = ("gatewise", "passthrough", "gatewise-2w", "nginx", "relay")
# "nginx" (an nginx proxy) and "relay" (bench/relay.py, bytes copied by uvloop) are the
# references: what a forwarded event costs in C, and at least in CPython, on this machine.

_HEAD = (
    '{"id":"chatcmpl-bench0003","object":"chat.completion.chunk","created":1700000000,'
    '"model":"bench","system_fingerprint":"fp_bench","choices":[{"index":0,"delta":'
)
ROLE = (
    _HEAD + '{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}'
)
CONTENT = _HEAD + '{"content":"token %d, "},"logprobs":null,"finish_reason":null}],"usage":null}'
FINISH = _HEAD + '{},"logprobs":null,"finish_reason":"stop"}],"usage":null}'
USAGE = (
    '{"id":"chatcmpl-bench0003","object":"chat.completion.chunk","created":1700000000,'
    '"model":"bench","system_fingerprint":"fp_bench","choices":[],"usage":{"prompt_tokens":12,'
    '"completion_tokens":20,"total_tokens":32}}'
)


_ANTHROPIC_HEAD = (
    '{"type":"message_start","message":{"id":"msg_bench0003","type":"message",'
    '"role":"assistant","model":"bench","content":[],"stop_reason":null,'
    '"stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":1}}}'
)
_ANTHROPIC_CONTENT = (
    '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"token %d, "}}'
)


def anthropic_steps() -> list[str]:
    """The echo module's steps for one Anthropic Messages stream of CONTENT_CHUNKS deltas."""

    def event(name: str, data: str) -> str:
        return f"            echo 'event: {name}\\ndata: {data}\\n';"

    start = '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}'
    steps = [event("message_start", _ANTHROPIC_HEAD), event("content_block_start", start),
             "            echo_flush;"]  # fmt: skip
    for i in range(CONTENT_CHUNKS):
        steps += [f"            echo_sleep {GAP};",
                  event("content_block_delta", _ANTHROPIC_CONTENT % i)]  # fmt: skip
        if i < CONTENT_CHUNKS - 1:
            steps.append("            echo_flush;")
    delta = ('{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
             f'"usage":{{"output_tokens":{CONTENT_CHUNKS}}}}}')  # fmt: skip
    stop = '{"type":"message_stop"}'
    steps += [event("content_block_stop", '{"type":"content_block_stop","index":0}'),
              event("message_delta", delta), event("message_stop", stop)]  # fmt: skip
    return steps


def nginx_conf(port: int, work: Path, connections: int) -> str:
    """The upstream: /slow/v1/chat/completions (or, `--api anthropic`, /slow/v1/messages)
    streams, /healthz answers."""
    if API == "anthropic":
        path, steps = "/slow/v1/messages", anthropic_steps()
    else:
        path, steps = "/slow/v1/chat/completions", openai_steps()
    location = f"""        location = {path} {{
            default_type text/event-stream;
            add_header cache-control no-cache;
{chr(10).join(steps)}
        }}"""
    http = "    keepalive_requests 10000000;\n    keepalive_timeout 300s;"
    return _nginx(work, port, connections, http, location, f"load_module {ECHO_MODULE};\n")


def openai_steps() -> list[str]:
    """The echo module's steps for one chat completion stream of CONTENT_CHUNKS chunks."""
    steps = [f"            echo 'data: {ROLE}\\n';", "            echo_flush;"]
    for i in range(CONTENT_CHUNKS):
        steps += [f"            echo_sleep {GAP};", f"            echo 'data: {CONTENT % i}\\n';"]
        if i < CONTENT_CHUNKS - 1:
            steps.append("            echo_flush;")
    steps += [f"            echo 'data: {FINISH}\\n';", f"            echo 'data: {USAGE}\\n';",
              "            echo 'data: [DONE]\\n';"]  # fmt: skip
    return steps


def proxy_conf(port: int, upstream: int, work: Path, connections: int) -> str:
    """The reference target: nginx proxying the streams unbuffered, over kept-alive
    upstream connections (what the issue's "nginx: 9 µs per event" measured)."""
    http = f"""    upstream slow {{
        server 127.0.0.1:{upstream};
        keepalive 1024;
    }}"""
    location = """        location / {
            proxy_pass http://slow;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 60s;
        }"""
    return _nginx(work, port, connections, http, location)


def _nginx(
    work: Path, port: int, connections: int, http: str, location: str, modules: str = ""
) -> str:
    """One nginx worker's configuration, its files under `work`: `http` and `location`
    are what the upstream and the proxy differ by; /healthz answers in both."""
    temp = "\n".join(f"    {k}_temp_path {work}/{k};" for k in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))  # fmt: skip
    return f"""{modules}worker_processes 1;
worker_rlimit_nofile {connections + 100};
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{
    worker_connections {connections};
    multi_accept on;
}}
http {{
    access_log off;
    server_tokens off;
{temp}
{http}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /healthz {{
            default_type application/json;
            return 200 '{{"status":"ok"}}';
        }}
{location}
    }}
}}
"""


def gateway_yaml(upstream: str, key: str, connections: int, inbound: int | None) -> str:
    """The full product path (routing, tracking, evaluation, SQLite), one model;
    `inbound`: the workers' max_connections (None: the default, from the file limit)."""
    limit = f"\n  max_connections: {inbound}" if inbound else ""
    if API == "anthropic":
        kind, base = "anthropic", f"{upstream}/slow"
    else:
        kind, base = "openai", f"{upstream}/slow/v1"
    return f"""server:{limit}
  api_keys: ["{key}"]
  admin_token: "{secrets.token_hex(12)}"
  log_level: warning
providers:
  - {{name: slow, type: {kind}, base_url: "{base}", timeout: 30,
      max_connections: {connections}}}
models:
  - name: bench-stream
    provider: slow
    upstream_model: bench
    pricing: {{input_per_million: 2.50, output_per_million: 10.00}}
storage:
  url: "sqlite:///streams-bench.db"
"""


# -- the load: one process of many ------------------------------------------------------


class _Stream(asyncio.Protocol):
    """One streamed request read to its end; times every SSE event."""

    def __init__(self, request: bytes, rec: _Record, done: asyncio.Future[None]) -> None:
        self.request = request
        self.rec = rec
        self.done = done
        self.head = b""
        self.status = 0
        self.tail = b""
        self.events = 0
        self.last = 0.0
        self.sent = 0.0
        self.finished = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.sent = time.monotonic()
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if not self.status:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            self.status = int(self.head[9:12])
            data = self.head[end + 4 :]
            self.head = b""
            if self.status != 200:
                self.rec.error(f"http {self.status}")
                self.finished = True
                self._close()
                return
            self.rec.opened()
        seen = self.tail + data
        count = seen.count(b"\n\n")
        self.tail = data[-1:]
        rec = self.rec
        for _ in range(count):
            index = self.events
            self.events += 1
            if rec.drain[0] <= now <= rec.drain[1]:
                rec.events_in_drain += 1
            if rec.window[0] <= now <= rec.window[1]:
                rec.events_in_window += 1
                if index == 0:
                    rec.ttfb.append(now - self.sent)
                elif HEAD_EVENTS <= index < HEAD_EVENTS + CONTENT_CHUNKS:
                    rec.gaps.append(now - self.last - GAP)
            self.last = now
        if END in seen:
            self.finished = True
            rec.completed += 1
            rec.open -= 1
            self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished:
            self.rec.error("reset" if exc else "closed early")
            if self.status == 200:
                self.rec.open -= 1
        if not self.done.done():
            self.done.set_result(None)


class _Record:
    def __init__(self, window: tuple[float, float]) -> None:
        self.window = window
        # After the last arrival: streams only forwarded (and ended), none begun.
        self.drain = (window[1] + 0.5, window[1] + STREAM_SECONDS - 2)
        self.events_in_drain = 0
        self.ttfb = array.array("d")
        self.gaps = array.array("d")
        self.events_in_window = 0
        self.completed = 0
        self.started = 0
        self.errors: dict[str, int] = {}
        self.open = self.peak = 0  # streams answered 200 and not ended

    def opened(self) -> None:
        self.open += 1
        self.peak = max(self.peak, self.open)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def _one(port: int, request: bytes, rec: _Record) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    rec.started += 1
    try:
        transport, proto = await asyncio.wait_for(
            loop.create_connection(lambda: _Stream(request, rec, done), "127.0.0.1", port), 10
        )
    except (TimeoutError, OSError) as exc:
        rec.error("connect " + type(exc).__name__)
        return
    # No event for this long: a stalled stream. Twice the gap between chunks at least, or
    # with one chunk (10 s after the first event) a stream whose first event came before
    # this wait began was called stalled a moment before its next one.
    stall = max(STREAM_SECONDS, 2 * GAP)
    while not done.done():
        seen = proto.events
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(done), stall)
        if not done.done() and proto.events == seen:
            rec.error("timeout")
            if proto.status == 200:
                rec.open -= 1
            proto.finished = True
            transport.abort()
            await done


async def _load(
    port: int, path: str, key: str, rate: float, start: float, duration: float,
    window: tuple[float, float],
) -> dict[str, Any]:  # fmt: skip
    body = b'{"model":"bench-stream","stream":true,"messages":[{"role":"user","content":"hi"}]'
    body += b',"max_tokens":100}' if API == "anthropic" else b"}"
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body
    rec = _Record(window)
    tasks: set[asyncio.Task[None]] = set()
    n = 0
    while True:
        at = start + n / rate
        if at >= start + duration:
            break
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.ensure_future(_one(port, request, rec))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
    if tasks:
        await asyncio.wait(tasks, timeout=STREAM_SECONDS + 15)
    return {
        "ttfb": rec.ttfb.tobytes(), "gaps": rec.gaps.tobytes(), "events": rec.events_in_window,
        "drain_events": rec.events_in_drain, "peak_open": rec.peak,
        "errors": rec.errors, "started": rec.started, "completed": rec.completed,
    }  # fmt: skip


def _loader(conn: Any, cpu: int, chunks: int, api: str, *args: Any) -> None:
    _shape(chunks, api)
    os.sched_setaffinity(0, {cpu})
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import uvloop

    conn.send(uvloop.run(_load(*args)))
    conn.close()


# -- the health probe and the target's counters ------------------------------------------


async def _probe(port: int, until: float, window: tuple[float, float]) -> list[float]:
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    out: list[float] = []
    while time.monotonic() < until:
        began = time.monotonic()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
            writer.write(request)
            await asyncio.wait_for(reader.read(), 10)
            writer.close()
            took = time.monotonic() - began
        except (TimeoutError, OSError):
            took = 10.0
        if window[0] <= began <= window[1]:
            out.append(took)
        await asyncio.sleep(max(0.0, PROBE_EVERY - (time.monotonic() - began)))
    return out


def _rss_kib(child: Child) -> int:
    total = 0
    for pid in child.pids():
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def _waited_s(child: Child) -> float:
    """Seconds the target's threads have waited, runnable, for a CPU (schedstat)."""
    total = 0
    for pid in child.pids():
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def _gc(folder: Path, window: tuple[float, float]) -> dict[str, Any]:
    longest, longest_cpu, in_window, counts = 0.0, 0.0, 0.0, [0, 0, 0]
    by_gen = [0.0, 0.0, 0.0]
    for path in folder.glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(path.read_text())
            counts = [a + b for a, b in zip(counts, state["counts"], strict=True)]
            for at, gen, ms, cpu_ms in state["pauses"]:
                if window[0] <= at <= window[1]:
                    longest = max(longest, ms)
                    longest_cpu = max(longest_cpu, cpu_ms)
                    by_gen[gen] = max(by_gen[gen], ms)
                    in_window += ms
    return {"gc_max_ms": longest, "gc_max_cpu_ms": longest_cpu, "gc_max_ms_by_generation": by_gen,
            "gc_ms_over_1ms_in_window": in_window, "gc_counts": counts}  # fmt: skip


def _pct(values: array.array, q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- one run -------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        cores = sorted(os.sched_getaffinity(0))
        self.target_cpus = str(cores[0])
        self.load_cpu = cores[1] if len(cores) > 1 else cores[0]
        self.both = ",".join(str(c) for c in cores[:2])
        self.children: list[Child] = []
        self.upstream_port = 0

    def start_upstream(self, connections: int) -> None:
        port = harness.free_port()
        work = self.tmp / "nginx"
        work.mkdir(exist_ok=True)
        (work / "nginx.conf").write_text(nginx_conf(port, work, connections))
        cmd = ["nginx", "-p", str(work), "-c", str(work / "nginx.conf"), "-e", str(work / "e.log")]
        nginx = Child("nginx", cmd, str(self.load_cpu), log=work / "stdout.log")
        self.children.append(nginx.start())
        harness.wait_ready(nginx, port, "/healthz", 10)
        self.upstream_port = port

    def launch(self, name: str, n: int) -> tuple[Child, int, str, str, Path, int | None]:
        port = harness.free_port()
        probe_port = None
        work = self.tmp / f"{name}-{n}"
        work.mkdir()
        gc_dir = work / "gc"
        gc_dir.mkdir()
        upstream = f"http://127.0.0.1:{self.upstream_port}"
        env = {**os.environ, "PYTHONPATH": f"{self.args.tree}:{BENCH / 'gcprobe'}",
               "BENCH_GC_DIR": str(gc_dir), "PYTHONUNBUFFERED": "1"}  # fmt: skip
        api_path = "/v1/messages" if API == "anthropic" else "/v1/chat/completions"
        key, path, cpus, ready = "none", "/slow" + api_path, self.target_cpus, "/healthz"
        if name == "passthrough":
            env["PASSTHROUGH_POOL"] = "0"  # no limit: a stream holds its connection
            cmd = [sys.executable, str(BENCH / "passthrough.py"), upstream, str(port)]
        elif name == "relay":
            cmd = [sys.executable, str(BENCH / "relay.py"), upstream, str(port)]
        elif name == "nginx":
            conf = work / "nginx.conf"
            conf.write_text(proxy_conf(port, self.upstream_port, work, 2 * n + 1000))
            cmd = ["nginx", "-p", str(work), "-c", str(conf), "-e", str(work / "e.log")]
        else:
            workers = 2 if name.endswith("-2w") else 1
            cpus = self.both if workers == 2 else cpus
            key = "gw-" + secrets.token_hex(12)
            config = work / "gatewise.yaml"
            config.write_text(gateway_yaml(upstream, key, 20_000, self.args.max_connections))
            cmd = [sys.executable, "-m", "gateway", "serve", "--config", str(config),
                   "--port", str(port), "--workers", str(workers)]  # fmt: skip
            if self.args.probe_port:
                probe_port = harness.free_port()
                cmd += ["--probe-port", str(probe_port)]
            path, ready = api_path, "/readyz"
        child = Child(name, cmd, cpus, env=env, cwd=work, log=work / "output.log").start()
        self.children.append(child)
        harness.wait_ready(child, port, ready, 60)
        return child, port, key, path, gc_dir, probe_port

    def measure(self, name: str, n: int) -> dict[str, Any]:
        a = self.args
        child, port, key, path, gc_dir, probe_port = self.launch(name, n)
        try:
            time.sleep(1.0)  # start-up's own collections and imports settle
            rss_idle = _rss_kib(child)
            loaders = a.loaders
            start = time.monotonic() + 0.5
            window = (start + STEADY_FROM, start + a.duration)
            ctx = multiprocessing.get_context("spawn")
            pipes, procs = [], []
            cpu = self.load_cpu if not name.endswith("-2w") else -1
            for i in range(loaders):
                here, there = ctx.Pipe(duplex=False)
                core = cpu if cpu >= 0 else sorted(os.sched_getaffinity(0))[i % 2]
                args = (port, path, key, n / STREAM_SECONDS / loaders, start, a.duration, window)
                proc = ctx.Process(
                    target=_loader, args=(there, core, CONTENT_CHUNKS, API, *args), daemon=True
                )
                proc.start()
                pipes.append(here)
                procs.append(proc)
            probe_until = start + a.duration
            samples: dict[str, Any] = {}

            async def watch() -> list[float]:
                probe = asyncio.ensure_future(_probe(port, probe_until, window))
                if probe_port is not None:
                    aside = asyncio.ensure_future(_probe(probe_port, probe_until, window))
                floor = asyncio.ensure_future(_probe(self.upstream_port, probe_until, window))
                await asyncio.sleep(max(0.0, window[0] - time.monotonic()))
                samples["cpu0"], samples["t0"] = child.cpu_ticks(), time.monotonic()
                samples["wait0"] = _waited_s(child)
                await asyncio.sleep(max(0.0, (window[0] + window[1]) / 2 - time.monotonic()))
                samples["rss"] = _rss_kib(child)
                await asyncio.sleep(max(0.0, window[1] - time.monotonic()))
                samples["cpu1"], samples["t1"] = child.cpu_ticks(), time.monotonic()
                samples["wait1"] = _waited_s(child)
                health = await probe
                if probe_port is not None:
                    samples["probe_port"] = await aside
                samples["floor"] = await floor
                await asyncio.sleep(max(0.0, window[1] + 0.5 - time.monotonic()))
                samples["cpu2"] = child.cpu_ticks()
                await asyncio.sleep(max(0.0, window[1] + STREAM_SECONDS - 2 - time.monotonic()))
                samples["cpu3"] = child.cpu_ticks()
                return health

            health = array.array("d", asyncio.run(watch()))
            results = [p.recv() for p in pipes]
            for proc in procs:
                proc.join(5)
            time.sleep(0.6)  # the probe's last write
            gc_stats = _gc(gc_dir, window)
            alive = child.alive()
        finally:
            child.stop()
        ttfb, gaps = array.array("d"), array.array("d")
        errors: dict[str, int] = {}
        events = started = completed = drained = peak = 0
        for r in results:
            ttfb.frombytes(r["ttfb"])
            gaps.frombytes(r["gaps"])
            events += r["events"]
            drained += r["drain_events"]
            peak += r["peak_open"]
            started += r["started"]
            completed += r["completed"]
            for k, v in r["errors"].items():
                errors[k] = errors.get(k, 0) + v
        seconds = samples["t1"] - samples["t0"]
        tick = os.sysconf("SC_CLK_TCK")
        cpu_s = (samples["cpu1"] - samples["cpu0"]) / tick
        drain_s = (samples["cpu3"] - samples["cpu2"]) / tick
        ms = 1000

        def q(values: array.array, p: float) -> float | None:
            v = _pct(values, p)
            return None if v is None else round(v * ms, 1)

        return {
            "target": name, "api": API, "streams": n, "chunks": CONTENT_CHUNKS, "alive": alive,
            "started": started,
            "completed": completed, "errors": sum(errors.values()), "error_kinds": errors,
            "refused_503": errors.get("http 503", 0),
            "held_peak": peak,  # streams open at once at most (summed over the loaders)
            "ttfb_p50_ms": q(ttfb, 0.5), "ttfb_p99_ms": q(ttfb, 0.99),
            "gap_p50_ms": q(gaps, 0.5), "gap_p99_ms": q(gaps, 0.99),
            "gap_max_ms": round(max(gaps) * ms, 1) if gaps else None,
            "health_p99_ms": q(health, 0.99), "health_probes": len(health),
            "probe_port_p99_ms": q(array.array("d", samples.get("probe_port", ())), 0.99),
            # nginx's own /healthz, probed by the same client: what the probe's numbers
            # include of the second CPU's load (the clients, nginx, this script).
            "probe_floor_p99_ms": q(array.array("d", samples["floor"]), 0.99),
            "cpu_pct": round(cpu_s / seconds * 100, 1),
            # Runnable but not running: the share of the window other processes had.
            "waited_for_cpu_pct": round((samples["wait1"] - samples["wait0"]) / seconds * 100, 1),
            "rss_kib_per_stream": round((samples["rss"] - rss_idle) / n, 1),
            "events_per_s": round(events / seconds),
            "cpu_us_per_event": round(cpu_s / events * 1e6, 1) if events else None,
            "held_us_per_event": round(drain_s / drained * 1e6, 1) if drained else None,
            **gc_stats,
        }  # fmt: skip

    def close(self) -> None:
        for child in reversed(self.children):
            child.stop()


def table(rows: list[dict[str, Any]]) -> str:
    cols = [("target", "target"), ("streams", "N"), ("errors", "errors"),
            ("refused_503", "of which 503"), ("held_peak", "held at most"),
            ("ttfb_p50_ms", "TTFB p50"), ("ttfb_p99_ms", "TTFB p99"),
            ("gap_p50_ms", "gap p50"), ("gap_p99_ms", "gap p99"), ("gap_max_ms", "gap max"),
            ("health_p99_ms", "health p99"), ("probe_port_p99_ms", "probe port p99"),
            ("probe_floor_p99_ms", "probe floor p99"),
            ("cpu_pct", "CPU %"),
            ("waited_for_cpu_pct", "waited %"),
            ("rss_kib_per_stream", "KiB/stream"), ("cpu_us_per_event", "µs/event"),
            ("held_us_per_event", "µs/event held"),
            ("gc_max_ms", "GC max ms"), ("gc_max_cpu_ms", "GC max ms CPU")]  # fmt: skip
    out = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(str(r.get(k)) for k, _ in cols) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", default="1000,3000,9500", help="N open streams, comma-separated")
    p.add_argument("--targets", default="gatewise,passthrough", help=f"of {', '.join(TARGETS)}")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of arrivals per run")
    p.add_argument("--loaders", type=int, default=4, help="client processes")
    p.add_argument("--api", choices=("openai", "anthropic"), default="openai",
                   help="the streams' shape and the API asked (anthropic: /v1/messages; "
                   "not with passthrough)")  # fmt: skip
    p.add_argument("--chunks", type=int, default=CONTENT_CHUNKS,
                   help="content chunks per 10 s stream (a real model sends ~50 a second: "
                   "500 weighs the events against each stream's start and end)")  # fmt: skip
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--max-connections", type=int, default=None,
                   help="Gatewise's server.max_connections per worker (default: from the "
                   "open-file limit); past it a stream is refused with 503")  # fmt: skip
    p.add_argument("--probe-port", action="store_true",
                   help="give Gatewise a probe port (--probe-port) and probe it too")  # fmt: skip
    p.add_argument("--tree", type=Path, default=ROOT,
                   help="the Gatewise source tree to run (another commit's worktree)")  # fmt: skip
    a = p.parse_args(argv)
    # Stopped (a test's timeout): the finally clauses stop nginx and the targets.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if a.duration <= STEADY_FROM + 1:
        p.error(f"--duration must be more than {STEADY_FROM + 1} s")
    if not ECHO_MODULE.exists():
        print(f"streams: nginx's echo module ({ECHO_MODULE}) is needed", file=sys.stderr)
        return 2
    if a.chunks < 1 or round(STREAM_SECONDS / a.chunks, 3) != STREAM_SECONDS / a.chunks:
        # nginx's echo_sleep takes milliseconds at most: 30 chunks (0.333... s) failed
        # every stream with the upstream's error.
        p.error(f"--chunks must split {STREAM_SECONDS:g} s into whole milliseconds")
    _shape(a.chunks, a.api)
    counts = [int(x) for x in a.streams.split(",")]
    targets = a.targets.split(",")
    if a.api == "anthropic" and "passthrough" in targets:
        p.error("the pass-through speaks the chat API only: leave it out with --api anthropic")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    print(f"streams: open-file hard limit {hard}; a 1-worker target needs 2 per stream",
          file=sys.stderr)  # fmt: skip
    for other in ("litellm", "portkey"):
        print(f"streams: {other} not run (not installed here)", file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gw-streams-") as tmp:
        bench = Bench(a, Path(tmp))
        try:
            bench.start_upstream(min(hard - 200, 2 * max(counts) + 1000))
            for n in counts:
                for name in targets:
                    row = bench.measure(name, n)
                    print(json.dumps(row), file=sys.stderr, flush=True)
                    rows.append(row)
        finally:
            bench.close()
    print(table(rows))
    if a.json:
        a.json.write_text(json.dumps({"rows": rows, "argv": sys.argv[1:]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
