"""Garbage-collector settings for a gateway process that serves traffic.

Each request leaves objects that live from a quarter of a second to a few seconds (the
answer's record in the response index, its attempt until the writer's next flush), and
each open stream holds a hundred or so for its whole length. CPython collects a
generation when the objects allocated (net of those freed) pass its threshold, and a
full collection walks every object of the process. Two things follow:

- start-up's ~55,000 objects were walked by every full collection (14 of 55-87 ms in
  13 s of short requests, ~10 % of the CPU): they are frozen once the app is built;
- a worker holding thousands of streams holds hundreds of thousands of objects, which
  young collections promote to the oldest generation, and each full collection walked
  them all: 420 and 628 ms with 9,500 streams open, each a stall of every stream.

CPython starts a young collection when allocations net of frees pass its threshold, so
in a steady state (as many streams ending as beginning, their old objects freed as new
ones are made) the young generation grows without a collection until it holds every
stream begun since the last one: the passes grew with the streams held (7 ms, then
40-60 ms). So here young collections run on a clock (`Collector`, every 0.1 s, the two
young generations every other time: a pass walks what was made in the last 0.2 s, a few
milliseconds at a thousand new streams a second), the thresholds remain only as a
net for a burst, and the full collection never runs by itself: `Collector` runs it
when the worker is quiet (few connections open, so the pause is short) and, as a bound
on the memory a cycle that outlived the young generations can hold, at the latest
every `overdue` seconds of unbroken load (a pause as long as the heap is large, logged
with its length).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Sized

__all__ = ["THRESHOLDS", "TICK", "Collector", "tune"]

# Automatic collections, a net under `Collector`: a young one past 100,000 new objects
# between its ticks, the oldest never (no count of middle passes reaches 1 << 30).
THRESHOLDS = (100_000, 50, 1 << 30)
TICK = 0.1  # seconds between the young collections

log = logging.getLogger("gatewise.gc")


def tune() -> None:
    """Call once the app is built, before serving: collect, freeze, set thresholds."""
    # The server's own modules, imported lazily by uvicorn, belong to what is frozen.
    import uvicorn.loops.uvloop
    import uvicorn.protocols.http.httptools_impl  # noqa: F401

    import gateway.server.protocol  # noqa: F401

    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


class Collector:
    """Runs a worker's collections: the youngest generation every `TICK` seconds and
    the middle one with it every other tick (so an object reaches the oldest after
    surviving 0.1-0.2 s); and the full collection the thresholds leave out, at a tick
    where at most `quiet` connections are open, if `every` seconds have passed since
    the last one and objects have reached the oldest generation since; or, past
    `overdue` seconds, at the next tick whatever the load."""

    __slots__ = ("_clock", "_collect", "_ticks", "every", "last", "overdue", "quiet", "running")

    def __init__(
        self,
        quiet: int,
        every: float = 60.0,
        overdue: float = 1800.0,
        clock: Callable[[], float] = time.monotonic,
        collect: Callable[[int], object] = gc.collect,
    ) -> None:
        self.quiet = quiet
        self.every = every
        self.overdue = overdue
        self._clock = clock
        self._collect = collect
        self.last = clock()
        self.running = False
        self._ticks = 0

    def start(self, loop: asyncio.AbstractEventLoop, connections: Sized) -> None:
        """Tick on `loop` from now on, `connections` being the worker's open ones."""
        self.running = True

        def tick() -> None:
            self.tick(len(connections))
            loop.call_later(TICK, tick)

        loop.call_later(TICK, tick)

    def tick(self, still_open: int) -> None:
        self._ticks += 1
        self._collect(self._ticks & 1)
        now = self._clock()
        since = now - self.last
        if since < self.every:
            return
        if still_open <= self.quiet:
            if gc.get_count()[2] == 0:  # nothing reached the oldest generation since
                self.last = now
                return
        elif since < self.overdue:
            return
        self.last = now
        self._collect(2)
        took = self._clock() - now
        if still_open > self.quiet:
            log.warning(
                "full garbage collection after %.0f s of load: %.0f ms with %d connections open",
                since,
                took * 1000,
                still_open,
            )
