"""LoopLag: how late a worker's event loop runs its timers, worst of the last seconds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.server.looplag import LoopLag


class Loop:
    """A loop whose clock the test moves; it runs a timer when told to."""

    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[tuple[float, Callable[[], Any]]] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], Any]) -> None:
        self.timers.append((when, callback))

    def run_next_at(self, now: float) -> float:
        """Run the timer due next at `now` (late if now is past it); returns when it was due."""
        when, callback = self.timers.pop(0)
        assert now >= when
        self.now = now
        callback()
        return when


def test_the_delay_of_a_late_timer_is_the_worst_until_it_ages_out() -> None:
    loop = Loop()
    lag = LoopLag(interval=0.1, window=10)
    lag.start(loop)  # type: ignore[arg-type]
    assert lag.worst() == 0.0  # nothing measured yet
    loop.run_next_at(loop.timers[0][0])  # on time
    assert lag.worst() == 0.0
    loop.run_next_at(loop.timers[0][0] + 0.250)  # a turn of the loop took a quarter second
    assert abs(lag.worst() - 0.250) < 1e-9
    loop.run_next_at(loop.timers[0][0] + 0.010)  # later timers, less late, do not hide it
    assert abs(lag.worst() - 0.250) < 1e-9
    assert len(loop.timers) == 1  # always exactly one timer waiting
    assert abs(loop.timers[0][0] - (loop.now + 0.1)) < 1e-9  # due an interval after it ran
    assert abs(lag.worst(loop.now + 8.0) - 0.250) < 1e-9
    assert lag.worst(loop.now + 11.0) == 0.0  # ten seconds on, it is forgotten


def test_only_the_window_is_kept() -> None:
    lag = LoopLag(interval=0.1, window=10)
    for second in range(1000):
        lag.note(float(second), 0.001 * (second % 7))
    assert len(lag._seconds) <= lag.window + 1
    assert lag.worst(999.5) == max(0.001 * (s % 7) for s in range(990, 1000))
