"""Which processes of the fleet are alive, and what becomes of the rows of one that died.

Every process shares its state under an origin of its own (`new_origin`; a restart is a
new one): stats, per-prompt evidence, keys' usage, comparisons' spend, experiments'
tallies, each a state kind keyed `origin \\x1f rest`. A process that stops folds its rows
into the stopped processes' (`STOPPED \\x1f rest`); one that crashed cannot, so its rows
would stay for good, read by every process at every start. So every process marks
itself alive in the store every `heartbeat` seconds, and one that finds an origin
silent for `dead_after` (a day) folds that origin's rows for it, as the origin would
have at a graceful stop, then forgets it.

A process cut off from the store for longer than `dead_after` while it kept running is
folded too: when it is back its rows, which are cumulative, count a second time beside
their folded part. It says so in its log (an error); `dead_after` is long so that this
takes an outage of a day, not of a network blip. Rows of processes that died before
heartbeats existed are never folded: without a heartbeat, a dead process cannot be
told from a live one of an older version during a rolling upgrade. Nothing here runs on
the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Collection, Iterable, Sequence

from gateway.core.tasks import cancel
from gateway.storage.base import Merge, Store

__all__ = [
    "ALIVE",
    "SEP",
    "STOPPED",
    "Fold",
    "Origins",
    "fold_origins",
    "fold_own",
    "new_origin",
    "stopped_among",
]

log = logging.getLogger("gatewise.origins")

ALIVE = "origin"  # state kind: origin -> {"at": its latest heartbeat}
SEP = "\x1f"
# The origin of the rows stopped processes folded theirs into: a real origin is
# host:pid:suffix, never this.
STOPPED = "~stopped"
_STOPPED_PREFIX = STOPPED + SEP
HEARTBEAT = 60.0
DEAD_AFTER = 86400.0

Fold = tuple[str, Merge]  # a state kind keyed by origin, and how two of its rows add up


def new_origin() -> str:
    """This process's name in the fleet: host, process id and a random suffix, so a
    restarted process (or a reused pid) is never mistaken for the one before."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


def stopped_among(keys: Iterable[str]) -> bool:
    """Whether a pull's changed rows hold the stopped processes' row: a process folded
    its rows into it, so the puller reads the kind again (or counts them twice)."""
    return any(key.startswith(_STOPPED_PREFIX) for key in keys)


async def fold_own(store: Store, origin: str, kind: str, rests: Iterable[str], merge: Merge) -> int:
    """At a graceful stop: `origin`'s rows of `kind` named `origin \\x1f rest`, folded into
    the stopped processes' row of the same rest; how many were."""
    moves = {origin + SEP + rest: _STOPPED_PREFIX + rest for rest in rests}
    return await store.fold_states(kind, moves, merge) if moves else 0


async def fold_origins(store: Store, origins: Collection[str], kind: str, merge: Merge) -> int:
    """Every row of `kind` that one of `origins` published, folded into the stopped
    processes' row of the same name (one read of the kind, one fold); how many were."""
    moves = {}
    for key in await store.load_states(kind):
        origin, sep, rest = key.partition(SEP)
        if sep and origin in origins:
            moves[key] = _STOPPED_PREFIX + rest
    return await store.fold_states(kind, moves, merge) if moves else 0


class Origins:
    """This process's heartbeat, and the folding of dead processes' rows."""

    def __init__(
        self,
        store: Store,
        origin: str,
        folds: Sequence[Fold],
        *,
        heartbeat: float = HEARTBEAT,
        dead_after: float = DEAD_AFTER,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.origin = origin
        self.folds = list(folds)
        self.heartbeat = heartbeat
        self.dead_after = dead_after
        self.clock = clock
        self._beaten = False  # a heartbeat of ours is stored
        self._task: asyncio.Task[None] | None = None

    async def beat(self) -> list[str]:
        """Mark this process alive, and fold the rows of every origin silent for
        `dead_after`; the origins folded."""
        now = self.clock()
        alive = await self.store.load_states(ALIVE)
        if self._beaten and self.origin not in alive:
            log.error(
                "this process was taken for dead (no heartbeat stored for %.0f s): its "
                "shared counts from before now count twice in the fleet's figures",
                self.dead_after,
                extra={"fields": {"origin": self.origin}},
            )
        await self.store.save_states([(ALIVE, self.origin, {"at": now})])
        self._beaten = True
        silent = {}
        for origin, data in alive.items():
            at = data.get("at")
            silent[origin] = now - at if isinstance(at, int | float) else float("inf")
        dead = sorted(o for o, s in silent.items() if s > self.dead_after and o != self.origin)
        if not dead:
            return []
        folded = 0
        for kind, merge in self.folds:
            folded += await fold_origins(self.store, set(dead), kind, merge)
        for origin in dead:
            await self.store.delete_state(ALIVE, origin)
        if folded:  # none: another process folded them first
            log.warning(
                "folded the rows of %d processes silent for over %.0f s",
                len(dead),
                self.dead_after,
                extra={"fields": {"origins": dead[:20], "rows": folded}},
            )
        return dead

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gatewise-origins")

    async def _run(self) -> None:
        while True:
            try:
                await self.beat()
            except self.store.OUTAGES:
                pass  # the fleet's task reports outages; the next beat tries again
            except Exception:
                log.exception("heartbeat failed")  # at most once a beat
            await asyncio.sleep(self.heartbeat)

    async def close(self) -> None:
        """Stop beating; after a graceful stop folded this process's rows, its heartbeat
        is not needed either."""
        await cancel(self._task)
        self._task = None
        # If the store is down, another process forgets it later (finding no rows).
        with contextlib.suppress(*self.store.OUTAGES):
            await self.store.delete_state(ALIVE, self.origin)
