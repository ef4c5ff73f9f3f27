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

So the young generations are collected at bounded sizes (at most ~20,000 new objects,
then ~80,000 with the middle generation: a few milliseconds), and the full collection
never runs by itself: `Sweeper` runs it when the worker is quiet (few connections
open, so the pause is short) and, as a bound on the memory a cycle that outlived the
young generations can hold, at the latest every `overdue` seconds of unbroken load (a
pause as long as the heap is large, logged with its length).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

__all__ = ["THRESHOLDS", "Sweeper", "tune"]

# Young generation: a pass over at most ~20,000 objects; the middle one every third
# pass; the oldest only by `Sweeper` (a threshold no count reaches).
THRESHOLDS = (20_000, 3, 1 << 30)

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


class Sweeper:
    """Runs the full collections the thresholds leave out: when a connection closes and
    at most `quiet` remain open, if `every` seconds have passed since the last one and
    objects have reached the oldest generation since; or, past `overdue` seconds, at the
    next close whatever the load."""

    __slots__ = ("_clock", "_collect", "every", "last", "overdue", "quiet")

    def __init__(
        self,
        quiet: int,
        every: float = 60.0,
        overdue: float = 1800.0,
        clock: Callable[[], float] = time.monotonic,
        collect: Callable[[], object] = gc.collect,
    ) -> None:
        self.quiet = quiet
        self.every = every
        self.overdue = overdue
        self._clock = clock
        self._collect = collect
        self.last = clock()

    def closed(self, still_open: int) -> None:
        """A connection closed; `still_open` remain."""
        now = self._clock()
        since = now - self.last
        if since < self.every:
            return
        if still_open <= self.quiet:
            if gc.get_count()[2] == 0:  # no middle collection since the last full one
                self.last = now
                return
        elif since < self.overdue:
            return
        self.last = now
        self._collect()
        took = self._clock() - now
        if still_open > self.quiet:
            log.warning(
                "full garbage collection after %.0f s of load: %.0f ms with %d connections open",
                since,
                took * 1000,
                still_open,
            )
