"""What watching for a client's leaving costs per request (gateway/http/disconnect.py).

    python bench/disconnect_watch.py

CPU µs per awaited answer (one suspension, as an upstream's reply), bare and with each
way of hearing a disconnect: a task listening on the ASGI receive channel (any server),
and the gateway's server protocol's watch (gateway/server/protocol.py: an attribute
write). Medians of 7 runs of 50,000, on asyncio's loop and on uvloop.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.http.disconnect import WATCH, unless_client_leaves


class Cycle:
    """uvicorn's receive once the body is read: it waits for the connection's end."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.event.wait()
        return {"type": "http.disconnect"}


class Connection:
    """The server protocol's watch, as JoinedWritesProtocol offers it."""

    def __init__(self) -> None:
        self.extensions = {WATCH: {"watch": self}}
        self.gone: Callable[[bool], None] | None = None

    def arm(self, gone: Callable[[bool], None]) -> bool:
        self.gone = gone
        return True

    def disarm(self) -> None:
        self.gone = None


async def answer() -> int:
    await asyncio.sleep(0)
    return 1


async def bare(n: int) -> None:
    for _ in range(n):
        Cycle()
        await answer()


async def listening(n: int) -> None:
    for _ in range(n):
        await unless_client_leaves({}, Cycle().receive, answer())
    await asyncio.sleep(0)  # the cancelled listeners end


async def watched(n: int) -> None:
    conn = Connection()
    scope = {"extensions": conn.extensions}
    for _ in range(n):
        await unless_client_leaves(scope, Cycle().receive, answer())


def cpu_us(run: Callable[[int], Awaitable[None]], n: int = 50_000) -> float:
    began = time.process_time()
    asyncio.run(run(n))  # type: ignore[arg-type]
    return (time.process_time() - began) / n * 1e6


RUNS = (bare, listening, watched)


def main() -> None:
    for loop in ("asyncio", "uvloop"):
        if loop == "uvloop":
            uvloop.install()
        us = {f.__name__: statistics.median(cpu_us(f) for _ in range(7)) for f in RUNS}
        base = us["bare"]
        print(
            f"{loop}: bare {base:.2f} µs; receive listener +{us['listening'] - base:.2f} µs;"
            f" server watch +{us['watched'] - base:.2f} µs"
        )


if __name__ == "__main__":
    main()
