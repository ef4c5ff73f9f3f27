"""What one chat request costs the whole ASGI app, in process, with a 0 ms mock upstream.

    python bench/app_cost.py [--requests 2000] [--limited-key] [--upstream URL [--stream]]

Every layer a request crosses (key check, body, routing, the mock provider, the
recorder with its counting and log line), without the network or the server protocol:
a small change per request shows here when a load test on a shared machine cannot
resolve it. Prints the best of 5 rounds, µs of the process's CPU per request. To compare
two commits, run it from each checkout in turn (`git archive <commit> | tar -x -C
/tmp/base`), alternating.

`--upstream URL` serves through bench/gatewise.yaml's real `openai` providers and HTTP
pool instead, against an upstream such as the overhead benchmark's nginx
(bench/upstream/nginx.conf): the path production requests take, and one that does not
move when the mock provider changes between two commits. With `--stream` the request
asks for a stream (the `auto-stream` route: the nginx mock's whole SSE answer in one
read), so what shows is what each stream costs to begin and end, apart from its events
(bench/event_cost.py): the part of a long stream's cost that grows with arrivals.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

if __package__ in (None, ""):  # run as a script: the checkout it lives in is imported
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.core.config import load_config, parse_config
from gateway.core.logs import configure_logging
from gateway.server.app import create_app

BODY = b'{"model":"auto","messages":[{"role":"user","content":"hi"}]}'
STREAM_BODY = b'{"model":"auto-stream","stream":true,"messages":[{"role":"user","content":"hi"}]}'
SCOPE: dict[str, Any] = {
    "type": "http",
    "method": "POST",
    "path": "/v1/chat/completions",
    "raw_path": b"/v1/chat/completions",
    "query_string": b"",
    "headers": [
        (b"authorization", b"Bearer test-key"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
    ],
    "http_version": "1.1",
    "scheme": "http",
    "server": ("127.0.0.1", 8000),
    "client": ("127.0.0.1", 5000),
    "root_path": "",
    "state": {},
}


LIMITS = {
    "rate_limit": {"requests_per_minute": 10**9, "tokens_per_minute": 10**12},
    "budget": {"daily_usd": 10**9, "monthly_usd": 10**10},
}


def _mock_config(limited: bool) -> Any:
    return parse_config(
        {
            "server": {"api_keys": keys(limited)},
            "providers": [{"name": "m", "type": "mock"}],
            "models": [{"name": "a", "provider": "m"}, {"name": "b", "provider": "m"}],
            "routes": [{"name": "auto", "models": ["a", "b"]}],
            "storage": {"url": f"sqlite:///{tempfile.mkdtemp()}/gatewise.db"},
        }
    )


def keys(limited: bool) -> list[Any]:
    """One plain key; or (`--limited-key`) the same secret as one of 101 named keys with
    a rate limit and a budget, checked and counted on every request (never reached)."""
    if not limited:
        return ["test-key"]
    others = [{"name": f"team-{i}", "key": f"other-{i}", **LIMITS} for i in range(100)]
    return [{"name": "bench", "key": "test-key", **LIMITS}, *others]


async def run(
    requests: int, limited: bool = False, upstream: str | None = None, stream: bool = False
) -> float:
    configure_logging("info")
    logging.getLogger("gatewise").handlers[0].stream = io.StringIO()  # type: ignore[attr-defined]
    if upstream:
        bench = Path(__file__).resolve().parent
        work = Path(tempfile.mkdtemp())
        raw = yaml.safe_load((bench / "gatewise.yaml").read_text())
        if limited:
            raw["server"]["api_keys"] = keys(True)
        (work / "gatewise.yaml").write_text(yaml.safe_dump(raw))
        env = {"BENCH_UPSTREAM": upstream, "BENCH_API_KEY": "test-key", "BENCH_ADMIN_TOKEN": "x"}
        config = load_config(work / "gatewise.yaml", env=env)
    else:
        config = _mock_config(limited)
    app = create_app(config)
    gateway = app.state.gateway
    await gateway.start()
    statuses: set[int] = set()
    ended: list[bool] = []
    body = STREAM_BODY if stream else BODY
    headers = [h for h in SCOPE["headers"] if h[0] != b"content-length"]
    scope = {**SCOPE, "headers": [*headers, (b"content-length", str(len(body)).encode())]}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.add(message["status"])
        elif message.get("body", b"").endswith(b"data: [DONE]\n\n"):
            ended.append(True)

    for _ in range(requests):  # warm up
        await app(dict(scope), receive, send)
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(requests):
            await app(dict(scope), receive, send)
        best = min(best, (time.process_time() - started) / requests * 1e6)
    await gateway.stop()
    assert statuses == {200}, statuses
    assert not stream or len(ended) == 6 * requests, "a stream did not end with [DONE]"
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--limited-key", action="store_true")
    parser.add_argument("--upstream", default=None, help="e.g. http://127.0.0.1:8999")
    parser.add_argument("--stream", action="store_true", help="streamed chats (needs --upstream)")
    args = parser.parse_args()
    if args.stream and not args.upstream:
        parser.error("--stream needs --upstream (the nginx mock's SSE location)")
    cost = asyncio.run(run(args.requests, args.limited_key, args.upstream, args.stream))
    print(f"{cost:.2f} µs per request")


if __name__ == "__main__":
    main()
