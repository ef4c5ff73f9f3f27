"""One brain for the fleet: every worker and replica on one store learns from all of them.

Each process publishes what it observed itself (its own Stats, cumulative) under its
`origin`, and takes in what every other origin published: routing runs on its own fresh
observations combined with everyone else's (`Tracker.set_peers`). Counts are never
added twice (an origin's row replaces its previous one) nor lost (the rows of a process
that stopped stay, and count). What is recent about a peer (its success record, its
evidence, its latest ratings, its moving averages) weighs by how fresh its row is, so a
process that stopped long ago no longer steers routing while its totals still count.

Benches are shared the same way, faster: a model benched, let back or cleared here is
stored at the next round, and an entry another process stored replaces the local one
when it changed later. A bench that begins here, and an operator's let-back, do not
wait for the round: `save_benches()` stores them at once (in its own task for a bench,
awaited by the admin request for a let-back), so what was acknowledged survives a
crash. Nothing here runs on the request path.

The per-prompt learners' evidence (gateway.routing.prompt_router) is shared the same way:
each origin publishes its own sufficient statistics per (route, model), and each process
adds every other origin's to its own (evidence is merged by adding, never overwritten).
A rating of an answer whose features another process holds is passed to it the same
way (`PROMPT_RATINGS` rows, deleted once every process has had time to pull them).

A process that stops folds its stats and evidence rows into one row per (model,
conversation type) and per (route, model) for all stopped processes (origin `STOPPED`,
in one transaction of the store): every restart is a new origin, and their rows would
otherwise pile up, each read by every process at every start. The fold keeps what the
rows said: counts add up, and what is recent is weighed by each row's freshness at the
fold, the folded row then fading from the fold on, as each would have. A process that
sees a folded row change reads every row of its kind again, so none counts twice. A
process that crashed leaves its rows as they were (they still count) until another
process folds them for it, a day after its last heartbeat (gateway.routing.origins).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.core.tasks import cancel
from gateway.routing.blacklist import Blacklist
from gateway.routing.origins import SEP, STOPPED, Fold, fold_own, stopped_among
from gateway.routing.tracker import Stats, Tracker, aged, combined
from gateway.storage.base import Store

if TYPE_CHECKING:  # numpy is loaded only when a route routes per prompt
    from gateway.routing.prompt_router import Evidence, PromptRouter

__all__ = ["BLACKLIST", "PROMPTS", "PROMPT_RATINGS", "STATS", "STOPPED", "Fleet", "merge_evidence"]

log = logging.getLogger("gatewise.fleet")

STATS = "stats"  # state kind of published Stats, keyed origin \x1f model \x1f conversation type
BLACKLIST = "blacklist"  # state kind of bench entries, keyed by model
PROMPTS = "prompts"  # state kind of per-prompt evidence, keyed origin \x1f route \x1f model
# State kind of ratings taken here of answers another process gave (it holds their
# features), keyed origin \x1f response id; deleted once every process has pulled them.
PROMPT_RATINGS = "prompt_ratings"
HALF_LIFE = 60.0  # seconds after which a silent peer's recent figures count half
PULL_MARGIN = 10.0  # seconds a pull looks back past the previous one
MAX_ORIGINS = 32  # peers whose per-prompt evidence is kept apart (the rest: one sum)


class Fleet:
    def __init__(
        self,
        origin: str,
        tracker: Tracker,
        blacklist: Blacklist,
        store: Store,
        *,
        interval: float = 1.0,
        share: bool = True,
        clock: Callable[[], float] = time.time,
        half_life: float = HALF_LIFE,
        prompts: PromptRouter | None = None,
    ) -> None:
        self.origin = origin
        self.prompts = prompts  # per-prompt learners, if any route has one
        self.tracker = tracker
        self.blacklist = blacklist
        self.store = store
        self.interval = interval  # stats every interval, benches every half interval
        self.share = share  # False: others' state is read at start only
        self.clock = clock
        self.half_life = half_life
        self.peers = 0  # other origins seen with fresh rows
        self.failures = 0  # rounds in a row that could not reach the store
        self.loaded = False  # the fleet's state taken in (at start, or once the store is up)
        # origin -> (model, conversation type) -> (its Stats, when it published them)
        self._rows: dict[str, dict[tuple[str, str], tuple[Stats, float]]] = {}
        self._pulled: float | None = None  # when the last pull began
        self._published = -1  # the tracker's own_version last published
        self._prompts_published = 0  # the per-prompt learners' version last published
        # origin -> (route, model) -> that origin's per-prompt evidence (~0.5 MB each),
        # kept apart for the latest MAX_ORIGINS origins; older ones are folded into one sum
        self._prompt_rows: dict[str, dict[tuple[str, str], Evidence]] = {}
        self._prompt_at: dict[str, float] = {}  # origin -> when its evidence last changed
        self._folded: dict[tuple[str, str], Evidence] = {}
        self._folded_n: dict[str, dict[tuple[str, str], float]] = {}  # what each folded had
        self._passed: deque[tuple[str, float]] = deque()  # rating rows sent, and when
        self._task: asyncio.Task[None] | None = None
        self._saving = asyncio.Lock()  # one writer of benches at a time: the newest wins

    # -- rounds ----------------------------------------------------------------------
    async def load(self) -> None:
        """At start: the fleet's state as the store has it (the benches, every origin's
        stats, the rows of processes that ran before included)."""
        self._moved(self.blacklist.adopt(await self.store.load_states(BLACKLIST)))
        await self.pull()
        self.loaded = True

    async def save_benches(self) -> None:
        """Store the benches changed here, now rather than at the next round. Raises what
        the store raises (`Store.OUTAGES` when it is down); they stay to be shared."""
        async with self._saving:
            unshared = self.blacklist.unshared()
            if unshared:
                await self.store.save_states([(BLACKLIST, m, e) for m, e in unshared.items()])
                self.blacklist.shared(unshared)

    async def sync_blacklist(self) -> None:
        await self.save_benches()
        if self.share:
            stored = await self.store.load_states(BLACKLIST)
            self._moved(self.blacklist.adopt(stored))

    async def publish(self) -> None:
        """Store this process's own stats, if they changed since the last time."""
        await self._publish_prompts()
        version = self.tracker.own_version
        if version == self._published:
            return
        now = self.clock()
        seq = self.tracker.seq
        items = []
        for (model, ctype), stats in self.tracker.own().items():
            data = stats.to_dict()
            data["published_at"] = now
            data["origin_seq"] = seq
            items.append((STATS, SEP.join((self.origin, model, ctype)), data))
        if items:
            await self.store.save_states(items)
        self._published = version

    async def _publish_prompts(self) -> None:
        prompts = self.prompts
        if prompts is None:
            return
        await self._pass_ratings(prompts)
        if prompts.version == self._prompts_published:
            return
        version = prompts.version
        items = [
            (PROMPTS, SEP.join((self.origin, route, model)), data)
            for route, model, data in prompts.state()
        ]
        if items:
            await self.store.save_states(items)
        self._prompts_published = version

    async def _pass_ratings(self, prompts: PromptRouter) -> None:
        """Store the ratings taken here of answers this process has no features of, for
        the process that has them; delete those stored long enough ago that every
        process has pulled them (their pulls look back PULL_MARGIN)."""
        now = self.clock()
        passed = self._passed
        while passed and now - passed[0][1] > 3 * PULL_MARGIN + 2 * self.interval:
            await self.store.delete_state(PROMPT_RATINGS, passed[0][0])
            passed.popleft()
        if not prompts.outbox:
            return
        waiting = list(prompts.outbox)
        items = [
            (PROMPT_RATINGS, SEP.join((self.origin, rid)), {"model": m, "scores": s, "key": k})
            for rid, m, s, k in waiting
        ]
        await self.store.save_states(items)  # kept in the outbox until stored
        for _ in waiting:
            prompts.outbox.popleft()
        passed.extend((row, now) for _, row, _ in items)

    async def _pull_ratings(self, prompts: PromptRouter, since: float | None) -> None:
        """Learn from the ratings other processes took of answers given here."""
        for row, data in (
            await self.store.load_states(PROMPT_RATINGS, changed_since=since)
        ).items():
            origin, _, response_id = row.partition(SEP)
            if origin == self.origin:
                continue
            try:
                prompts.rate(
                    response_id, str(data["model"]), dict(data["scores"]), str(data["key"])
                )
            except (KeyError, TypeError, ValueError):
                log.warning("ignoring an unreadable passed rating", extra={"fields": {"key": row}})

    async def _pull_prompts(self, since: float | None) -> None:
        """Take in the other origins' per-prompt evidence that changed."""
        prompts = self.prompts
        if prompts is None:
            return
        from gateway.routing.prompt_router import Evidence

        await self._pull_ratings(prompts, since)
        changed = False
        stored = await self.store.load_states(PROMPTS, changed_since=since)
        if since is not None and stopped_among(stored):
            stored = await self.store.load_states(PROMPTS)  # a process stopped: all again
            self._prompt_rows, self._prompt_at = {}, {}
            self._folded, self._folded_n = {}, {}
            changed = True
        for key, data in stored.items():
            origin, route, model = _parse(key)
            if origin == self.origin or not origin:
                continue
            n = data.get("n")
            if self._folded_n.get(origin, {}).get((route, model)) == n:
                continue  # counted already, in the folded sum
            known = self._prompt_rows.get(origin, {}).get((route, model))
            if known is not None and known.n == n and known.xy.tolist() == data.get("xy"):
                continue  # read again within the look-back: not a change
            try:
                evidence = Evidence.from_dict(data)
            except (KeyError, TypeError, ValueError):
                log.warning(
                    "ignoring unreadable per-prompt evidence", extra={"fields": {"key": key}}
                )
                continue
            self._prompt_rows.setdefault(origin, {})[(route, model)] = evidence
            self._prompt_at[origin] = self.clock()
            changed = True
        if changed:
            self._fold()
            peers: dict[tuple[str, str], list[Evidence]] = {
                which: [evidence] for which, evidence in self._folded.items()
            }
            for rows in self._prompt_rows.values():
                for which, evidence in rows.items():
                    peers.setdefault(which, []).append(evidence)
            prompts.set_peers(peers)

    def _fold(self) -> None:  # only with per-prompt routes (see _pull_prompts)
        """Bound the memory that stopped processes hold here: past MAX_ORIGINS origins,
        the evidence of those silent longest (and past the pulls' look-back, so that
        their rows are not read again) is added into one sum and its matrices let go.
        A folded origin that publishes again is counted anew (its old part twice): a
        process silent that long has stopped, as a restart is a new origin."""
        from gateway.routing.prompt_router import Evidence

        now = self.clock()
        while len(self._prompt_rows) > MAX_ORIGINS:
            oldest = min(self._prompt_at, key=self._prompt_at.__getitem__)
            if now - self._prompt_at[oldest] < 3 * PULL_MARGIN:
                return  # that many live processes: they are the fleet, not a leak
            del self._prompt_at[oldest]
            rows = self._prompt_rows.pop(oldest)
            for which, evidence in rows.items():
                self._folded.setdefault(which, Evidence()).add(evidence)
            self._folded_n[oldest] = {which: e.n for which, e in rows.items()}
            if len(self._folded_n) > 10_000:  # names only, ~100 bytes each
                del self._folded_n[next(iter(self._folded_n))]

    async def pull(self) -> None:
        """Take in every other origin's latest stats: all at the first call, then what
        changed since the last (with a margin for clocks that differ between machines
        and for rows committed a little after they were stamped)."""
        now = self.clock()
        since = None if self._pulled is None else self._pulled - PULL_MARGIN
        self._pulled = now
        await self._pull_prompts(since)
        clock = self.tracker.clock
        stored = await self.store.load_states(STATS, changed_since=since)
        if since is not None and stopped_among(stored):
            stored = await self.store.load_states(STATS)  # a process stopped: all again
            self._rows = {}
        for key, data in stored.items():
            origin, model, ctype = _parse(key)
            if origin == self.origin:
                continue
            try:
                stats, at = _published(data, clock)
            except (KeyError, TypeError, ValueError):
                log.warning("ignoring unreadable shared stats", extra={"fields": {"key": key}})
                continue
            self._rows.setdefault(origin, {})[(model, ctype)] = (stats, at)
        peers: dict[tuple[str, str], list[tuple[Stats, float]]] = {}
        live = 0
        for origin, rows in self._rows.items():
            newest = max(at for _, at in rows.values())
            if now - newest < self.half_life and origin != STOPPED:
                live += 1
            for which, (stats, at) in rows.items():
                fresh = 0.5 ** (max(now - at, 0.0) / self.half_life)
                peers.setdefault(which, []).append((stats, fresh))
        self.peers = live
        self.tracker.set_peers(peers)

    def _moved(self, models: list[str]) -> None:
        for model in models:  # a bench that began or ended elsewhere starts over here too
            self.tracker.reset_recent(model)

    # -- the background task -----------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gatewise-fleet")

    async def _run(self) -> None:
        half = self.interval / 2
        tick = 0
        while True:
            await asyncio.sleep(half)
            tick += 1
            try:
                if not self.loaded:  # the store was down at start: connect, then catch up
                    await self.store.open()
                    await self.load()
                await self.sync_blacklist()
                if tick % 2 == 0:
                    await self.publish()
                    if self.share:
                        await self.pull()
                if self.failures:
                    log.warning("fleet state is shared again", extra={"fields": {}})
                self.failures = 0
            except Exception as exc:
                if not isinstance(exc, self.store.OUTAGES):
                    log.exception("fleet round failed")
                self.failures += 1
                if self.failures == 1:
                    log.warning(
                        "cannot share fleet state; routing on what this process knows",
                        extra={"fields": {"error": type(exc).__name__}},
                    )

    @property
    def folds(self) -> list[Fold]:
        """What a dead process left of this kind, and how to fold it (`Origins`)."""
        return [(STATS, self.merge_stats), (PROMPTS, merge_evidence)]

    async def close(self) -> None:
        """Stop the task and publish what is left (on a graceful stop, nothing is lost)."""
        await cancel(self._task)
        self._task = None
        try:
            await self.sync_blacklist()
            # Failure streaks too, so that a restart does not forget a model was failing
            # (after taking in what the fleet stored: no newer bench is overwritten).
            entries = self.blacklist.snapshot()
            await self.store.save_states([(BLACKLIST, m, e) for m, e in entries.items()])
            await self.publish()
            await self._fold_into_stopped()
        except self.store.OUTAGES as exc:
            log.warning(
                "storage is unavailable at shutdown: this process's latest state not stored",
                extra={"fields": {"error": type(exc).__name__}},
            )
        except Exception:
            log.exception("could not store the fleet state at shutdown")

    async def _fold_into_stopped(self) -> None:
        """This process's rows into the stopped processes' (see the module's doc)."""
        own = [SEP.join(which) for which in self.tracker.own()]
        await fold_own(self.store, self.origin, STATS, own, self.merge_stats)
        if self.prompts is not None:
            evidence = [SEP.join((route, model)) for route, model, _ in self.prompts.state()]
            await fold_own(self.store, self.origin, PROMPTS, evidence, merge_evidence)

    def merge_stats(self, into: dict[str, Any] | None, part: dict[str, Any]) -> dict[str, Any]:
        """Two rows of stats as one, published now: what is recent in each weighed by
        its freshness now (`combined`, as a puller would), so that the sum fades from
        now as the parts would have from their own times."""
        now = self.clock()
        parts = []
        for data in (into, part):
            if data is not None:
                stats, at = _published(data, self.tracker.clock)
                parts.append((stats, 0.5 ** (max(now - at, 0.0) / self.half_life)))
        out = combined(None, parts, 0, self.tracker.clock).to_dict()
        out["published_at"] = now
        out["origin_seq"] = 0
        return out


def _published(data: dict[str, Any], clock: Callable[[], float]) -> tuple[Stats, float]:
    """A published row's Stats, its evidence aged to when it was published (in the
    publisher's own attempt count), and when that was."""
    stats = Stats.from_dict(data, clock)
    seq = data.get("origin_seq")
    if isinstance(seq, int) and seq >= stats.last_seq:
        stats.served_recent = aged(stats.served_recent, stats.last_seq, seq)
    published = data.get("published_at")
    at = float(published) if isinstance(published, int | float) else float("-inf")
    return stats, at


def merge_evidence(into: dict[str, Any] | None, part: dict[str, Any]) -> dict[str, Any]:
    """Per-prompt evidence adds up (sufficient statistics)."""
    from gateway.routing.prompt_router import Evidence

    if into is None:
        return part
    evidence = Evidence.from_dict(into)
    evidence.add(Evidence.from_dict(part))
    return evidence.to_dict()


def _parse(key: str) -> tuple[str, str, str]:
    """origin, model, conversation type; rows stored before origins existed have none."""
    parts = key.split(SEP)
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    return "", parts[0], SEP.join(parts[1:])
