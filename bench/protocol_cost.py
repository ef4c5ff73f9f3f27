"""What the wire protocol costs per request, in process: uvicorn's httptools protocol
against Gatewise's (inbound limits and joined writes), parsing only.

    python bench/protocol_cost.py [--requests 50000] [--rounds 10]

The same keep-alive POST head and body are fed to each protocol `--requests` times on
one connection, with a transport that drops writes and the ASGI app never started; the
best of `--rounds` interleaved rounds is reported, in µs per request. It isolates what the
protocol's callbacks add (the inbound limits' counting and timers), which an HTTP load
test on a shared machine cannot resolve.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.server.protocol import Inbound, InboundLimits, JoinedWritesProtocol

BODY = b'{"model":"auto","messages":[{"role":"user","content":"hi"}]}'
REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
    b"Authorization: Bearer test-key\r\nContent-Type: application/json\r\nUser-Agent: wrk\r\n"
    b"Accept: */*\r\nContent-Length: %d\r\n\r\n" % len(BODY)
) + BODY


async def app(scope: Any, receive: Any, send: Any) -> None:
    pass


class Transport:
    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5), "sockname": ("127.0.0.1", 80)}.get(name, default)


async def per_request(factory: Callable[..., Any], config: Config, requests: int) -> float:
    protocol = factory(config=config, server_state=ServerState(), app_state={})
    protocol._start_asgi_task = lambda cycle, app: None  # parse only
    protocol.connection_made(Transport())
    began = time.perf_counter()
    for _ in range(requests):
        protocol.data_received(REQUEST)
        protocol.cycle.response_complete = True  # as if answered: the next is a new head
    elapsed = time.perf_counter() - began
    protocol.connection_lost(None)
    return elapsed / requests * 1e6


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=50_000)
    p.add_argument("--rounds", type=int, default=10)
    args = p.parse_args()
    config = Config(app, log_level="warning")
    config.load()
    targets: dict[str, Callable[..., Any]] = {
        "uvicorn": HttpToolsProtocol,
        "gatewise": functools.partial(JoinedWritesProtocol, inbound=Inbound(InboundLimits())),
    }
    best = dict.fromkeys(targets, float("inf"))
    for _ in range(args.rounds):  # interleaved, so that the machine's drift hits both
        for name, factory in targets.items():
            best[name] = min(best[name], await per_request(factory, config, args.requests))
    for name, cost in best.items():
        print(f"{name:<9} {cost:6.2f} µs per request (best of {args.rounds})")
    print(f"gatewise - uvicorn: {best['gatewise'] - best['uvicorn']:+.2f} µs per request")


if __name__ == "__main__":
    asyncio.run(main())
