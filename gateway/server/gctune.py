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
40-60 ms). So here, while a worker holds many connections (more than 1 % of its
`max_connections`), young collections run on a clock (`Collector` in
gateway/server/collector.py: every 0.05 s, the two young generations, so a pass walks
what was made in the last 0.05 s, a few milliseconds at a thousand new streams a
second), the thresholds remain only as a net for a burst or a late tick, and
the full collection never runs by itself: `Collector` runs it when the worker is quiet
(few connections open, so the pause is short) and, as a bound on the memory a cycle
that outlived the young generations can hold, at the latest every `overdue` seconds of
unbroken load (a pause as long as the heap is large, logged with its length).
"""

from __future__ import annotations

import gc

from gateway.server.collector import THRESHOLDS

__all__ = ["THRESHOLDS", "tune"]


def tune() -> None:
    """Call once the app is built, before serving: collect, freeze, set thresholds."""
    # The server's own modules, imported lazily by uvicorn, belong to what is frozen.
    import uvicorn.loops.uvloop
    import uvicorn.protocols.http.httptools_impl  # noqa: F401

    import gateway.server.protocol  # noqa: F401

    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
