"""What an attacker can do to a real gateway, measured: one subcommand per attack.

    python bench/reliability.py inbound [--silent 5000] [--max-connections 2000]
        [--header-timeout S] [--wait 30] [--bomb-mib 128] [--bombs 2]
        [--slow N] [--body-timeout S] [--json PATH]

`inbound` (issue 17, items 1-2) starts one `gatewise serve` worker (built-in mock
model, the default inbound limits but `max_connections`; 0 for any option: the
gateway's default) and measures:

- silent: a client connects and is served (kept alive); then `--silent` connections
  are opened that never send a byte. How many the worker holds and how many it refuses
  (503), how long the kept-alive client waits for /healthz meanwhile, when a new client
  is served again, and when the gateway has closed every silent connection.
- bombs: `--bombs` connections each stream a `--bomb-mib` MiB header at once, while a
  kept-alive client asks /healthz every 20 ms: how much each sent before the gateway
  refused it, how long that took, and the slowest /healthz meanwhile; then one request
  with 10,000 headers (its status and time); the worker's peak RSS.
- slow bodies (`--slow N`): N connections each send a request's head and then its body
  a byte a second: held and refused, the kept-alive and a new client meanwhile, and when
  the worker has closed them all (`--body-timeout`: server.body_timeout).

    python bench/reliability.py bodies [--clients 24] [--body-mib 10]
        [--max-body-memory BYTES] [--hold 20] [--json PATH]

`bodies` (request bodies held in memory, `server.max_body_memory`): one worker whose
mock model answers after `--hold` seconds; `--clients` connections at once each POST a
chat request carrying `--body-mib` MiB of `[{},{},...]` (the most memory parsed JSON
takes for its bytes), while a kept-alive client sends a short chat every 0.2 s. It
reports the answers (200 after the hold, or 503 at once), the short chats' statuses and
slowest time, and the worker's peak RSS. `--max-body-memory 0`: the default (1 GiB);
a huge value stands for no bound.

    python bench/reliability.py answers [--clients 24] [--answer-mib 64] [--trickle 10]
        [--max-body-memory BYTES] [--stream] [--idle S] [--spread S] [--json PATH]

`answers` (whole upstream answers held in memory, the same `server.max_body_memory`):
one worker whose model `m1` is an OpenAI-shaped upstream on loopback (a thread of this
script) that answers every embeddings request with `--answer-mib` MiB of embeddings
(3,072 floats each, as OpenAI writes them), sent in 50 pieces over `--trickle` seconds,
so that every answer is under way at once; `--clients` connections ask for one each at
once, while a kept-alive client sends a short chat (the built-in mock) every 0.2 s. It
reports the answers (200 whole, or 503 dropped), the short chats, and the worker's peak
RSS. With `--stream`, the clients ask for chat streams instead, each of one content
event of `--answer-mib` MiB (a streamed image's partial frame): a stream is held, and
charged, while its event is not yet whole; "200 cut" counts streams that ended midway
with the error event. With `--idle S`, every client reads nothing for S seconds (a 4 KiB
receive buffer), as a slow or hostile reader: what it has not taken waits in the
worker's buffer. With `--spread S`, the clients start one after another over S seconds
instead of at once.

It prints a table row per measurement, with the command, for bench/README.md's
Reliability table, and writes the numbers to --json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import random
import resource
import selectors
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from bench.harness import read_request, serve_gateway  # noqa: E402

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n"


@contextlib.contextmanager
def gateway(work: Path, server: dict[str, Any], hold: float = 0.0) -> Iterator[tuple[int, int]]:
    """A `gatewise serve` worker on a free port: (port, pid). With `hold`, model `m1`
    (route `auto`) answers after that many seconds; `fast` at once."""
    config = {
        "server": server,
        "providers": [{"name": "sim", "type": "mock"}],
        "models": [
            {"name": "m1", "provider": "sim", "mock": {"latency_ms": hold * 1000}},
            {"name": "fast", "provider": "sim"},
        ],
        "routes": [{"name": "auto", "models": ["m1"]}],
        "storage": {"url": f"sqlite:///{work / 'bench.db'}"},
    }
    with serve_gateway(config, work, log_level=None) as (port, proc):
        yield port, proc.pid


def connect(port: int, timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def ask(sock: socket.socket, request: bytes = HEALTHZ) -> tuple[int, float]:
    """`request` (GET /healthz) on a connection, its answer read to the end of its JSON
    body: (status, seconds); (0, seconds) if the connection was closed."""
    began = time.perf_counter()
    try:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                return 0, time.perf_counter() - began
            data += chunk
    except OSError:
        return 0, time.perf_counter() - began
    return int(data.split(b" ", 2)[1]), time.perf_counter() - began


def ask_new(port: int) -> int:
    with contextlib.suppress(OSError), connect(port, timeout=5) as sock:
        return ask(sock)[0]
    return 0


def peak_rss_mib(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _hold(port: int, count: int, wait: float, head: bytes = b"", trickle: bool = False) -> Held:
    """Open `count` connections that send `head` (and, with `trickle`, a byte a second
    after it), beside a kept-alive client; then wait up to `wait` s for the gateway to
    answer or close each, probing for a new client every 0.1 s until one is served."""
    kept = connect(port)
    assert ask(kept)[0] == 200
    began = time.perf_counter()
    socks = []
    for _ in range(count):
        try:
            sock = connect(port, timeout=5)
            if head:
                sock.sendall(head)
        except OSError:
            break  # the gateway (or this process) is out of files: what is held is the answer
        socks.append(sock)
    opened = time.perf_counter() - began
    kept_ms = max(ask(kept)[1] for _ in range(10)) * 1000
    with connect(port, timeout=5) as sock:
        new_status, new_seconds = ask(sock)
    answers: dict[str, int] = {}
    waiting = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        waiting.register(sock, selectors.EVENT_READ)
    closed_after: float | None = None
    served_again: float | None = 0.0 if new_status == 200 else None
    deadline = time.perf_counter() + wait
    next_probe = next_byte = 0.0
    while waiting.get_map() and time.perf_counter() < deadline:
        for key, _ in waiting.select(timeout=0.05):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            status = data[9:12].decode() if data.startswith(b"HTTP/1.1 ") else "closed"
            answers[status] = answers.get(status, 0) + 1
            waiting.unregister(sock)
            sock.close()
        now = time.perf_counter()
        if trickle and now >= next_byte:  # a byte a second to each: never silent, never done
            next_byte = now + 1.0
            for key in list(waiting.get_map().values()):
                with contextlib.suppress(OSError):
                    key.fileobj.send(b" ")  # type: ignore[union-attr]
        if served_again is None and now >= next_probe:
            next_probe = now + 0.1
            if ask_new(port) == 200:
                served_again = now - began
    if not waiting.get_map():
        closed_after = time.perf_counter() - began
        if served_again is None and ask_new(port) == 200:
            served_again = time.perf_counter() - began
    still_open = len(waiting.get_map())
    for key in list(waiting.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    kept_after = ask(kept)[0]
    kept.close()
    return Held(
        opened=len(socks),
        open_seconds=round(opened, 2),
        answers=answers,
        still_open=still_open,
        kept_alive_healthz_max_ms=round(kept_ms, 1),
        kept_alive_served_after=kept_after == 200,
        new_client_status=new_status,
        new_client_ms=round(new_seconds * 1000, 1),
        new_client_served_after_s=None if served_again is None else round(served_again, 2),
        all_closed_after_s=None if closed_after is None else round(closed_after, 2),
    )


@dataclass
class Held:
    """What `_hold` saw: `answers` counts each connection's end by status ("closed" for
    none)."""

    opened: int
    open_seconds: float
    answers: dict[str, int]
    still_open: int
    kept_alive_healthz_max_ms: float
    kept_alive_served_after: bool
    new_client_status: int
    new_client_ms: float
    new_client_served_after_s: float | None
    all_closed_after_s: float | None


def silent(port: int, count: int, wait: float) -> dict[str, Any]:
    """Connections that never send a byte."""
    h = _hold(port, count, wait)
    refused = h.answers.get("503", 0)
    return {
        "silent_opened": h.opened,
        "open_seconds": h.open_seconds,
        "held": h.opened - refused,
        "refused_503": refused,
        "kept_alive_healthz_max_ms": h.kept_alive_healthz_max_ms,
        "kept_alive_served_after": h.kept_alive_served_after,
        "new_client_status": h.new_client_status,
        "new_client_ms": h.new_client_ms,
        "new_client_served_after_s": h.new_client_served_after_s,
        "all_silent_closed_after_s": h.all_closed_after_s,
    }


SLOW_HEAD = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100000\r\n\r\n{"
)


def slow_bodies(port: int, count: int, wait: float) -> dict[str, Any]:
    """`count` connections each send a request's head and the first byte of its body,
    then one more byte a second (a slow POST): how many the worker holds and refuses,
    how a kept-alive client and a new one fare meanwhile, and when the worker has
    answered (408) and closed every one."""
    h = _hold(port, count, wait, SLOW_HEAD, trickle=True)
    return {
        "slow_opened": h.opened,
        "open_seconds": h.open_seconds,
        "answers": h.answers,
        "still_open_at_end": h.still_open,
        "kept_alive_healthz_max_ms": h.kept_alive_healthz_max_ms,
        "kept_alive_served_after": h.kept_alive_served_after,
        "new_client_status": h.new_client_status,
        "new_client_served_after_s": h.new_client_served_after_s,
        "all_slow_closed_after_s": h.all_closed_after_s,
    }


def bomb(port: int, mib: int, out: dict[str, Any]) -> None:
    chunk = b"a" * 65536
    sent = 0
    began = time.perf_counter()
    refused_by = "nothing: all sent"
    try:
        with connect(port, timeout=60) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nX-Bomb: ")
            try:
                while sent < mib * 1024 * 1024:
                    sent += sock.send(chunk)
                sock.sendall(b"\r\n\r\n")
                answer = sock.recv(64)
                refused_by = answer.split(b"\r\n")[0].decode() or "close"
            except (BrokenPipeError, ConnectionResetError):
                refused_by = "reset after the answer"
    except TimeoutError:
        refused_by = "timeout (60 s)"
    out["sent_mib"] = round(sent / 2**20, 2)
    out["seconds"] = round(time.perf_counter() - began, 3)
    out["refused_by"] = refused_by


def bombs(port: int, pid: int, count: int, mib: int) -> dict[str, Any]:
    kept = connect(port)
    results: list[dict[str, Any]] = [{} for _ in range(count)]
    threads = [threading.Thread(target=bomb, args=(port, mib, r)) for r in results]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    latencies = []
    while any(thread.is_alive() for thread in threads):
        status, seconds = ask(kept)
        if status != 200:
            kept.close()
            kept = connect(port)
        latencies.append(seconds)
        time.sleep(0.02)  # the probe's pace, not a wait for the gateway
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    kept.close()
    heads = b"".join(b"X-H%d: v\r\n" % i for i in range(10_000))
    with connect(port, timeout=60) as sock:
        started = time.perf_counter()
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n" + heads + b"\r\n")
            status = sock.recv(64).split(b" ", 2)[1].decode()
        except (OSError, IndexError):
            status = "reset"
        headers_ms = (time.perf_counter() - started) * 1000
    return {
        "bombs": count,
        "bomb_mib": mib,
        "each": results,
        "all_refused_after_s": round(elapsed, 3),
        "healthz_max_ms": round(max(latencies) * 1000, 1) if latencies else None,
        "healthz_probes": len(latencies),
        "headers_10000_status": status,
        "headers_10000_ms": round(headers_ms, 1),
        "peak_rss_mib": peak_rss_mib(pid),
    }


def inbound(args: argparse.Namespace) -> dict[str, Any]:
    server: dict[str, Any] = {}
    if args.header_timeout:
        server["header_timeout"] = args.header_timeout
    if args.max_connections:
        server["max_connections"] = args.max_connections
    with tempfile.TemporaryDirectory() as tmp:
        with gateway(Path(tmp), server) as (port, _):
            held = silent(port, args.silent, args.wait)
        with gateway(Path(tmp), server) as (port, pid):
            bombed = bombs(port, pid, args.bombs, args.bomb_mib)
        slowed = None
        if args.slow:
            timed = {**server, "body_timeout": args.body_timeout} if args.body_timeout else server
            with gateway(Path(tmp), timed) as (port, _):
                slowed = slow_bodies(port, args.slow, args.wait)
    return {"server": server, "silent": held, "bombs": bombed, "slow_bodies": slowed}


def bodies(args: argparse.Namespace) -> dict[str, Any]:
    server: dict[str, Any] = {"max_body_bytes": (args.body_mib + 1) * 1024 * 1024}
    if args.max_body_memory:
        server["max_body_memory"] = args.max_body_memory
    pad = b"{}," * (args.body_mib * 1024 * 1024 // 3)
    big = b'{"model":"auto","messages":[{"role":"user","content":"hi"}],"x":[' + pad + b"{}]}"
    statuses: list[int] = []
    answered: list[float] = []
    lock = threading.Lock()

    def post(port: int, body: bytes) -> None:
        began = time.perf_counter()
        status = 0
        with contextlib.suppress(OSError), connect(port, timeout=args.hold + 60) as sock:
            status, _ = ask(sock, _chat_head(len(body)) + body)
        with lock:
            statuses.append(status)
            answered.append(time.perf_counter() - began)

    with (
        tempfile.TemporaryDirectory() as tmp,
        gateway(Path(tmp), server, args.hold) as (
            port,
            pid,
        ),
    ):
        threads = [threading.Thread(target=post, args=(port, big)) for _ in range(args.clients)]
        smalls = beside_short_chats(port, threads)
        rss = peak_rss_mib(pid)
    counts = dict(Counter(str(status) for status in statuses))
    small_counts = dict(Counter(str(status) for status, _ in smalls))
    return {
        "server": server,
        "clients": args.clients,
        "body_mib": args.body_mib,
        "hold_s": args.hold,
        "answers": counts,
        "slowest_answer_s": round(max(answered), 2),
        "short_chats": small_counts,
        "short_chat_max_ms": round(1000 * max(t for _, t in smalls), 1) if smalls else None,
        "peak_rss_mib": rss,
    }


def embeddings(mib: int) -> bytes:
    """An OpenAI embeddings answer of about `mib` MiB: rows of 3,072 floats."""
    rng = random.Random(1)
    row = ",".join(f"{rng.uniform(-0.1, 0.1):.10f}" for _ in range(3072))
    count = max(1, mib * 1024 * 1024 // (len(row) + 48))
    items = ",".join(
        f'{{"object":"embedding","index":{i},"embedding":[{row}]}}' for i in range(count)
    )
    usage = '"usage":{"prompt_tokens":1,"total_tokens":1}'
    return f'{{"object":"list","data":[{items}],"model":"m1-up",{usage}}}'.encode()


def frame_stream(mib: int) -> bytes:
    """A chat stream whose one content event is `mib` MiB of text, as a streamed
    image's partial frame (base64) is: a role chunk, the frame, a finish chunk, [DONE]."""
    chunk = (
        '{"id":"c","object":"chat.completion.chunk","created":1,"model":"m1-up",'
        '"choices":[{"index":0,"delta":%s,"finish_reason":%s}]}'
    )
    frame = '{"content":"%s"}' % ("A" * (mib * 1024 * 1024))
    events = [
        chunk % ('{"role":"assistant","content":""}', "null"),
        chunk % (frame, "null"),
        chunk % ("{}", '"stop"'),
        "[DONE]",
    ]
    return b"".join(b"data: " + event.encode() + b"\n\n" for event in events)


@contextlib.contextmanager
def trickling_upstream(
    body: bytes, seconds: float, pieces: int = 50, media: bytes = b"application/json"
) -> Iterator[int]:
    """An HTTP/1.1 upstream on a loopback port (yielded) in a thread of its own: every
    request is answered with `body` (of type `media`), in `pieces` spread over `seconds`."""
    loop = asyncio.new_event_loop()
    view = memoryview(body)
    step = -(-len(body) // pieces)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                await read_request(reader)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n"
                    % (media, len(body))
                )
                for start in range(0, len(body), step):
                    writer.write(view[start : start + step])
                    await writer.drain()
                    await asyncio.sleep(seconds / pieces)
        writer.close()

    server = loop.run_until_complete(asyncio.start_server(answer, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def fetch_whole(port: int, request: bytes, timeout: float, idle: float = 0) -> tuple[int, int]:
    """`request` (which asks the server to close) on a new connection, its answer read
    to the end: (status, bytes of the answer); (0, bytes) if cut before its head. With
    `idle`, the client reads nothing for that many seconds first (a small receive
    buffer: what it does not take waits in the server's)."""
    data = bytearray()
    with contextlib.suppress(OSError), socket.socket() as sock:
        sock.settimeout(timeout)
        if idle:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(request)
        time.sleep(idle)
        while chunk := sock.recv(1 << 20):
            data += chunk
    head, _, rest = bytes(data[:4096]).partition(b"\r\n\r\n")
    if not rest and not head.startswith(b"HTTP/"):
        return 0, len(data)
    return int(head.split(b" ", 2)[1]), len(data)


def answers(args: argparse.Namespace) -> dict[str, Any]:
    server: dict[str, Any] = {}
    if args.max_body_memory:
        server["max_body_memory"] = args.max_body_memory
    if args.stream:
        body, media, path = frame_stream(args.answer_mib), b"text/event-stream", b"chat/completions"
        ask_for = b'{"model":"m1","stream":true,"messages":[{"role":"user","content":"hi"}]}'
        kinds = ["text-to-text"]
    else:
        body, media, path = embeddings(args.answer_mib), b"application/json", b"embeddings"
        ask_for = b'{"model":"m1","input":"hi"}'
        kinds = ["embedding"]
    request = (
        b"POST /v1/%s HTTP/1.1\r\nHost: bench\r\nconnection: close\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % (path, len(ask_for))
    ) + ask_for
    results: list[tuple[int, int, float]] = []
    lock = threading.Lock()
    start = threading.Barrier(args.clients)

    def client(port: int, i: int) -> None:
        start.wait()
        time.sleep(i * args.spread / args.clients)  # all at once, or one after another
        began = time.perf_counter()
        status, size = fetch_whole(port, request, args.trickle + args.idle + 120, args.idle)
        with lock:
            results.append((status, size, time.perf_counter() - began))

    with (
        tempfile.TemporaryDirectory() as tmp,
        trickling_upstream(body, args.trickle, media=media) as upstream,
    ):
        config = {
            "server": server,
            "providers": [
                {"name": "up", "type": "openai", "base_url": f"http://127.0.0.1:{upstream}/v1"},
                {"name": "sim", "type": "mock"},
            ],
            "models": [
                {"name": "m1", "provider": "up", "conversation_types": kinds},
                {"name": "fast", "provider": "sim"},
            ],
            "storage": {"url": f"sqlite:///{Path(tmp) / 'bench.db'}"},
        }
        with serve_gateway(config, Path(tmp), log_level=None) as (port, proc):
            threads = [threading.Thread(target=client, args=(port, i)) for i in range(args.clients)]
            smalls = beside_short_chats(port, threads)
            rss = peak_rss_mib(proc.pid)
    # A stream cut midway (its error event) is a 200 short of its frame's text.
    frame = args.answer_mib * 1024 * 1024 if args.stream else 0
    whole = [r for r in results if r[0] == 200 and r[1] >= frame]
    return {
        "server": server,
        "clients": args.clients,
        "answer_bytes": len(body),
        "stream": args.stream,
        "trickle_s": args.trickle,
        "idle_s": args.idle,
        "spread_s": args.spread,
        "statuses": dict(
            Counter(
                "200 cut" if status == 200 and size < frame else str(status)
                for status, size, _ in results
            )
        ),
        "whole_answers_mib": round(sum(size for _, size, _ in whole) / 2**20, 1),
        "slowest_answer_s": round(max(t for _, _, t in results), 2),
        "short_chats": dict(Counter(str(status) for status, _ in smalls)),
        "short_chat_max_ms": round(1000 * max(t for _, t in smalls), 1) if smalls else None,
        "peak_rss_mib": rss,
    }


SHORT_CHAT = b'{"model":"fast","messages":[{"role":"user","content":"hi"}]}'


def beside_short_chats(port: int, threads: list[threading.Thread]) -> list[tuple[int, float]]:
    """Run `threads` to their end while a kept-alive client sends a short chat (model
    `fast`) every 0.2 s: each chat's (status, seconds)."""
    for thread in threads:
        thread.start()
    smalls: list[tuple[int, float]] = []
    with connect(port) as kept:
        while any(t.is_alive() for t in threads):
            smalls.append(ask(kept, _chat_head(len(SHORT_CHAT)) + SHORT_CHAT))
            time.sleep(0.2)
    for thread in threads:
        thread.join()
    return smalls


def _chat_head(length: int) -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\ncontent-type: application/json"
        b"\r\ncontent-length: %d\r\n\r\n" % length
    )


def rows(result: dict[str, Any], command: str) -> list[str]:
    if "statuses" in result:  # answers
        kind = "streams, each one event of" if result.get("stream") else "embeddings answers of"
        what = (
            f"{result['clients']} {kind} {result['answer_bytes'] / 2**20:.0f} MiB at once, "
            f"over {result['trickle_s']:g} s"
        )
        if result.get("spread_s"):
            what = what.replace(" at once,", f" one after another over {result['spread_s']:g} s,")
        if result.get("idle_s"):
            what += f", each read after {result['idle_s']:g} s"
        return [_held_row(result, what, result["statuses"], command)]
    if "answers" in result:  # bodies
        what = f"{result['clients']} x {result['body_mib']} MiB of `[{{}},...]` at once"
        return [_held_row(result, what, result["answers"], command)]
    s, b = result["silent"], result["bombs"]
    limit = result["server"].get("max_connections", "default")
    each = ", ".join(f"{r['sent_mib']} MiB in {r['seconds']} s" for r in b["each"])
    return [
        f"| silent connections (max_connections {limit}) | {s['silent_opened']:,} opened: "
        f"{s['held']:,} held, {s['refused_503']:,} refused 503 | kept-alive /healthz max "
        f"{s['kept_alive_healthz_max_ms']} ms; a new client: {s['new_client_status']} in "
        f"{s['new_client_ms']} ms, served after {s['new_client_served_after_s']} s; all "
        f"silent closed after {s['all_silent_closed_after_s']} s | `{command}` |",
        f"| {b['bombs']} x {b['bomb_mib']} MiB header | sent before refusal: {each} "
        f"({b['each'][0]['refused_by']}) | /healthz max {b['healthz_max_ms']} ms "
        f"({b['healthz_probes']} probes); 10,000 headers: {b['headers_10000_status']} in "
        f"{b['headers_10000_ms']} ms; peak RSS {b['peak_rss_mib']} MiB | `{command}` |",
    ] + ([] if result["slow_bodies"] is None else [_slow_row(result, command)])


def _held_row(result: dict[str, Any], what: str, told: dict[str, int], command: str) -> str:
    """A row of `bodies` or `answers`: what was held, how each was answered, and how the
    short chats and the worker's memory fared meanwhile."""
    limit = result["server"].get("max_body_memory", "1 GiB (default)")
    answers = ", ".join(f"{n} {status}" for status, n in sorted(told.items()))
    smalls = ", ".join(f"{n} {s}" for s, n in sorted(result["short_chats"].items()))
    return (
        f"| {what} (max_body_memory {limit}) | {answers} (slowest "
        f"{result['slowest_answer_s']} s) | short chats meanwhile: {smalls}, slowest "
        f"{result['short_chat_max_ms']} ms; peak RSS {result['peak_rss_mib']} MiB | "
        f"`{command}` |"
    )


def _slow_row(result: dict[str, Any], command: str) -> str:
    w = result["slow_bodies"]
    limit = result["server"].get("max_connections", "default")
    answers = ", ".join(f"{n:,} {status}" for status, n in sorted(w["answers"].items()))
    return (
        f"| slow bodies, a byte a second (max_connections {limit}) | {w['slow_opened']:,} "
        f"opened: answered {answers or 'none'}; {w['still_open_at_end']:,} still open at the "
        f"end | kept-alive /healthz max {w['kept_alive_healthz_max_ms']} ms; a new client: "
        f"{w['new_client_status']}, served after {w['new_client_served_after_s']} s; all "
        f"closed after {w['all_slow_closed_after_s']} s | `{command}` |"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = p.add_subparsers(dest="command", required=True)
    q = commands.add_parser("inbound", help="silent connections and header bombs (17.1-2)")
    q.add_argument("--silent", type=int, default=5000)
    q.add_argument("--max-connections", type=int, default=2000, help="0: the default")
    q.add_argument("--header-timeout", type=float, default=0, help="0: the default (10 s)")
    q.add_argument("--wait", type=float, default=30, help="s to wait for silent closes")
    q.add_argument("--bomb-mib", type=int, default=128)
    q.add_argument("--bombs", type=int, default=2)
    q.add_argument("--slow", type=int, default=0, help="slow-body connections (0: none)")
    q.add_argument("--body-timeout", type=float, default=0, help="0: the default (60 s)")
    q.add_argument("--json", type=Path, default=None)
    b = commands.add_parser("bodies", help="many large request bodies at once")
    b.add_argument("--clients", type=int, default=24)
    b.add_argument("--body-mib", type=int, default=10)
    b.add_argument("--max-body-memory", type=int, default=0, help="0: the default (1 GiB)")
    b.add_argument("--hold", type=float, default=20, help="s the mock model takes to answer")
    b.add_argument("--json", type=Path, default=None)
    a = commands.add_parser("answers", help="many large upstream answers at once")
    a.add_argument("--clients", type=int, default=24)
    a.add_argument("--answer-mib", type=int, default=64)
    a.add_argument("--trickle", type=float, default=10, help="s each answer takes to arrive")
    a.add_argument("--max-body-memory", type=int, default=0, help="0: the default (1 GiB)")
    a.add_argument("--stream", action="store_true", help="chat streams of one large event")
    a.add_argument("--idle", type=float, default=0, help="s each client reads nothing first")
    a.add_argument("--spread", type=float, default=0, help="s over which the clients start")
    a.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the silent sockets are files
    result: dict[str, Any] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/reliability.py", *sys.argv[1:]]),
        args.command: {"inbound": inbound, "bodies": bodies, "answers": answers}[args.command](
            args
        ),
    }
    for row in rows(result[args.command], result["command"]):
        print(row)
    path = args.json or BENCH / "results" / f"reliability-{datetime.date.today()}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results in {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
