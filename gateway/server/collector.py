"""A worker's garbage collections on a clock, and its full ones when it is quiet: why,
in gateway/server/gctune.py. Started by the worker's first connection (its protocol,
gateway/server/protocol.py, which knows how many are open)."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Sized

__all__ = ["BUSY_THRESHOLDS", "THRESHOLDS", "TICK", "Collector"]

# Seconds between the young collections. What a pass walks is what was made since the
# last and still lives; at 9,500 streams on a saturated core the longest pause was
# 14-19 ms of CPU at 0.1 s, 7-15 ms at 0.05 s, for no more CPU (bench/README.md, "Long
# streams").
TICK = 0.05
# Automatic collections while few connections are open (short requests, whose objects
# die by reference count): a young one past 50,000 new objects (net), the middle one
# every 20th, the oldest never (no count of middle passes reaches 1 << 30). Tighter
# ones cost short requests 1.4 % more CPU (bench/README.md, "Two at once"). Set by
# gateway/server/gctune.py at start.
THRESHOLDS = (50_000, 20, 1 << 30)
# While many are (streams), young collections run on the clock, and these are its net
# for a core so busy that its ticks come late: at 3,000 streams on a full core the
# longest pause was 25 ms of CPU with these, 34 with (100_000, 50): bench/README.md,
# "Long streams".
BUSY_THRESHOLDS = (20_000, 2, 1 << 30)

log = logging.getLogger("gatewise.gc")


class Collector:
    """Runs a worker's collections: while more than `quiet` connections are open, the two
    young generations every `TICK` seconds, so an object reaches the oldest after
    surviving one tick and each pass walks only what was made since the last (at 3,000
    streams the longest pause was 9-19 ms so, 16-33 ms with the middle generation every
    other tick: bench/README.md, "Long streams"); and the full collection the thresholds
    leave out, at a tick where at most `quiet` connections are open, if `every` seconds
    have passed since the last one and objects have reached the oldest generation since;
    or, past `overdue` seconds, at the next tick whatever the load. The automatic
    thresholds follow: THRESHOLDS while quiet, BUSY_THRESHOLDS (a net under the clock)
    while not."""

    __slots__ = (
        "_busy", "_clock", "_collect", "_set_threshold",
        "every", "last", "overdue", "quiet", "running",
    )  # fmt: skip

    def __init__(
        self,
        quiet: int,
        every: float = 60.0,
        overdue: float = 1800.0,
        clock: Callable[[], float] = time.monotonic,
        collect: Callable[[int], object] = gc.collect,
        set_threshold: Callable[..., object] = gc.set_threshold,
    ) -> None:
        self.quiet = quiet
        self._set_threshold = set_threshold
        self._busy = False  # the thresholds in force are THRESHOLDS (gctune.tune's)
        self.every = every
        self.overdue = overdue
        self._clock = clock
        self._collect = collect
        self.last = clock()
        self.running = False

    def start(self, loop: asyncio.AbstractEventLoop, connections: Sized) -> None:
        """Tick on `loop` from now on, `connections` being the worker's open ones."""
        self.running = True

        def tick() -> None:
            self.tick(len(connections))
            loop.call_later(TICK, tick)

        loop.call_later(TICK, tick)

    def tick(self, still_open: int) -> None:
        busy = still_open > self.quiet
        if busy != self._busy:
            self._busy = busy
            self._set_threshold(*(BUSY_THRESHOLDS if busy else THRESHOLDS))
        if busy:
            # Many connections held (streams): the young generation can grow without
            # its count passing the threshold, so it is collected on the clock. With
            # few, the thresholds do: a tick's pass would walk every per-request object
            # still alive, ~5 % of a worker's CPU under short requests at c=50 (py-spy).
            self._collect(1)
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
