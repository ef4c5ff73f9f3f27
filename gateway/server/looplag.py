"""How late a worker's event loop runs what is due: the first sign that it is saturated.

A worker whose core is nearly full still answers, only later: each turn of its loop has
more to do, and every request, stream and health probe waits for its turn. Its CPU
figure says little (90 % may be fine or not); the lag says what every client waits.
A timer asks to run every `interval` seconds and notes how late it ran; `worst()` is
the longest such delay over the last `window` seconds (Prometheus:
`gatewise_event_loop_lag_seconds`). Cost: one timer callback per interval.
"""

from __future__ import annotations

import asyncio
import math

__all__ = ["LoopLag"]


class LoopLag:
    """The worst delay of a loop's timers, per second, for the last `window` seconds."""

    __slots__ = ("_due", "_loop", "_seconds", "interval", "window")

    def __init__(self, interval: float = 0.1, window: int = 10) -> None:
        self.interval = interval
        self.window = window
        self._seconds: dict[int, float] = {}  # whole second of the loop's clock -> worst delay
        self._due = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due = loop.time() + self.interval
        loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        self.note(now, now - self._due)
        self._due = now + self.interval
        loop.call_at(self._due, self._tick)

    def note(self, now: float, late: float) -> None:
        """A timer due `late` seconds before `now` ran at `now`."""
        second = math.floor(now)
        seconds = self._seconds
        if late > seconds.get(second, 0.0):
            seconds[second] = late
        if len(seconds) > self.window:
            for old in [s for s in seconds if s <= second - self.window]:
                del seconds[old]

    def worst(self, now: float | None = None) -> float:
        """The longest delay in the last `window` seconds (0 before the first tick)."""
        if now is None:
            now = self._loop.time() if self._loop is not None else 0.0
        since = math.floor(now) - self.window
        return max((late for s, late in self._seconds.items() if s > since), default=0.0)
