"""Upstream reliability: what a gateway process keeps after upstream answers it refused.

    python bench/reliability_upstream.py [--oversized 20] [--normal 500] [--limit-mib 128]
                                         [--transport native] [--json PATH]

One `gatewise serve` process (one worker, the shipped GC tuning) in front of a raw
upstream on loopback. The upstream answers the model "huge" with a body twice the
provider's max_response_bytes (sent as fast as the gateway reads it), every other model
with a small chat completion. Measured, as the gateway's resident memory (VmRSS):

- after 20 normal requests (the baseline: imports, pools and caches warm);
- after `--oversized` answers refused at the limit, one at a time (each is a 502);
- after `--normal` more normal requests (what stays once traffic is back to normal).

Issue 17.3: each refused answer stayed resident (61 -> 1,095 MiB after 8 of 128 MiB),
and 500 normal requests later it was still there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from bench.harness import free_port, read_request, serve_gateway  # noqa: E402

KEY = "reliability-bench-key"
AUTH = {"authorization": f"Bearer {KEY}"}
REPLY = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
)  # fmt: skip
PIECE = b"x" * (1 << 20)


class RawUpstream:
    """An HTTP/1.1 server on its own thread and event loop: keep-alive, Content-Length
    bodies; a request naming the model "huge" gets `huge_bytes` of them."""

    def __init__(self, huge_bytes: int) -> None:
        self.huge_bytes = huge_bytes
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RawUpstream:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the raw upstream did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.port)
        )
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                body = await read_request(reader)
                if b'"huge"' in body:
                    await self._huge(writer)
                else:
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                        b"content-length: %d\r\n\r\n%s" % (len(REPLY), REPLY)
                    )
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()

    async def _huge(self, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % self.huge_bytes
        )
        sent = 0
        while sent < self.huge_bytes:  # the gateway hangs up at its limit
            piece = PIECE[: self.huge_bytes - sent]
            writer.write(piece)
            await writer.drain()
            sent += len(piece)


def config(upstream_port: int, limit: int, transport: str) -> dict[str, Any]:
    base_url = f"http://127.0.0.1:{upstream_port}/v1"
    provider = {"name": "raw", "type": "openai", "base_url": base_url,
                "max_response_bytes": limit, "transport": transport}  # fmt: skip
    return {
        "server": {"api_keys": [KEY]},
        "providers": [provider],
        "models": [{"name": "huge", "provider": "raw"}, {"name": "ok", "provider": "raw"}],
        # every refused answer must reach the upstream: no benching
        "selection": {"exploration_rate": 0, "blacklist_threshold": 1_000_000},
    }


def tree_rss_mib(pid: int) -> float:
    """VmRSS of a process and its descendants, in MiB."""
    total = 0.0
    pending = [pid]
    while pending:
        p = pending.pop()
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
    return round(total, 1)


@contextlib.contextmanager
def gateway(cfg: dict[str, Any], work: Path) -> Iterator[tuple[str, int]]:
    with serve_gateway(cfg, work) as (port, proc):
        yield f"http://127.0.0.1:{port}", proc.pid


def ask(client: httpx.Client, model: str) -> int:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return client.post("/v1/chat/completions", json=body, headers=AUTH).status_code


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    limit = args.limit_mib << 20
    with (
        RawUpstream(2 * limit) as upstream,
        gateway(config(upstream.port, limit, args.transport), work) as (base, pid),
        httpx.Client(base_url=base, timeout=120) as client,
    ):
        assert all(ask(client, "ok") == 200 for _ in range(20))
        baseline = tree_rss_mib(pid)
        refused = [ask(client, "huge") for _ in range(args.oversized)]
        if set(refused) != {502}:
            raise RuntimeError(f"oversized answers were not all refused: {set(refused)}")
        after_oversized = tree_rss_mib(pid)
        assert all(ask(client, "ok") == 200 for _ in range(args.normal))
        after_normal = tree_rss_mib(pid)
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "transport": args.transport,
        "max_response_mib": args.limit_mib,
        "oversized_answers": args.oversized,
        "normal_requests_after": args.normal,
        "rss_mib": {
            "baseline": baseline,
            "after_oversized": after_oversized,
            "after_normal": after_normal,
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--oversized", type=int, default=20)
    p.add_argument("--normal", type=int, default=500)
    p.add_argument("--limit-mib", type=int, default=128, help="the provider's limit")
    p.add_argument("--transport", default="native")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gatewise-reliability-") as tmp:
        result = run(args, Path(tmp))
    rss = result["rss_mib"]
    print(
        f"RSS MiB ({args.transport}, limit {args.limit_mib} MiB): baseline {rss['baseline']}, "
        f"after {args.oversized} oversized {rss['after_oversized']}, "
        f"after {args.normal} normal {rss['after_normal']}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
