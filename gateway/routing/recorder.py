"""Where an outcome goes, once: the chain every closed exchange flows through.

tracker (live stats) -> blacklist (failure streaks) -> evaluator (the answer, judged
in the background) -> writer (the attempt row, stored in batches) -> quota (what the
client key used), the experiment's arm (`routing/experiments.py`), the Prometheus
counts (`routing/metrics.py`), and one JSON log line.
A comparison's shadow call (`job.shadow`) stops after the writer: it teaches routing
about its model and its cost is stored, but it is no key's spend and no client traffic.
Built once at start-up with all of them; nothing is attached later. Runs on the request
path: every step is in memory and O(1).

The one exception is rare and does no I/O here either: an attempt that benches its
model starts a prompt write of the bench (`Benches.save_benches`, in a task of its own)
and hands it back, so that the dispatcher answers that request only once the store has
the bench (bounded), and a crash right after cannot forget it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, Protocol

from gateway.core.logs import EventLog
from gateway.core.types import Attempt
from gateway.routing.blacklist import Blacklist, Entry
from gateway.routing.dispatch import Job, Outcome
from gateway.routing.evaluation import Evaluator
from gateway.routing.experiments import Experiments
from gateway.routing.metrics import RoutingMetrics
from gateway.routing.quota import Quota
from gateway.routing.tracing import Tracing
from gateway.routing.tracker import Tracker
from gateway.storage.writer import StoreWriter

__all__ = ["Benches", "Recorder", "learn"]

log = logging.getLogger("gatewise.tracker")


class Benches(Protocol):
    """Where benches are kept (`Fleet`): stores the blacklist's changes when asked."""

    async def save_benches(self) -> None: ...


class Recorder:
    def __init__(
        self,
        tracker: Tracker,
        blacklist: Blacklist,
        evaluator: Evaluator,
        writer: StoreWriter,
        events: EventLog,
        benches: Benches | None = None,
        quota: Quota | None = None,
        metrics: RoutingMetrics | None = None,
        tracing: Tracing | None = None,
        experiments: Experiments | None = None,
    ) -> None:
        self.tracker = tracker
        self.experiments = experiments
        self.blacklist = blacklist
        self.evaluator = evaluator
        self.writer = writer
        self.events = events
        self.benches = benches  # None: benches live in memory only (tests, simulations)
        self._saves: set[asyncio.Task[None]] = set()  # referenced until done
        self.quota = quota or Quota()
        self.metrics = metrics or RoutingMetrics()
        self.tracing = tracing  # None: no spans (the default)

    def record(self, outcome: Outcome) -> Awaitable[None] | None:
        """Take in one outcome. Returns the write of the bench it caused, if it benched
        its model (the caller may wait for it before answering), else None."""
        attempt = outcome.attempt()
        benched = learn(self.tracker, self.blacklist, attempt)
        if outcome.answered and outcome.error is None:
            self.evaluator.submit(outcome)
        self.writer.enqueue(attempt)
        job = outcome.job
        if job.shadow:
            # A comparison's challenger: what routing learns of the model and the stored
            # attempt (its cost is spent) count it; no key pays, no client's request is it.
            self._log(outcome)
            return self._save_soon() if benched and self.benches is not None else None
        owner = job.owner
        if owner is not None:
            self.quota.record(
                owner, attempt.prompt_tokens + attempt.completion_tokens, attempt.cost
            )
        self.metrics.observe(outcome)
        if outcome.job.experiment is not None and self.experiments is not None:
            self.experiments.observe(outcome)
        if self.tracing is not None:
            self.tracing.observe(outcome)
        self._log(outcome)
        if benched and self.benches is not None:
            return self._save_soon()
        return None

    def unanswered(self, job: Job[Any, Any], kind: str) -> None:
        """A request ends with no answer (its attempts are recorded already)."""
        self.metrics.unanswered(job, kind)
        if self.tracing is not None:
            self.tracing.unanswered(job, kind)

    async def let_back(self, model: str) -> bool:
        """An operator lets a benched model back early; returns whether it was benched,
        once the store has it (raises what the store raises when it is down: the model
        is back here, and the let-back is stored when the store is)."""
        was = self.blacklist.clear(model)
        self.tracker.reset_recent(model)
        if self.benches is not None:
            await self.benches.save_benches()
        return was

    def _save_soon(self) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self._save_quietly())
        self._saves.add(task)
        task.add_done_callback(self._saves.discard)
        return task

    async def _save_quietly(self) -> None:
        assert self.benches is not None
        try:
            await self.benches.save_benches()
        except Exception as exc:  # the fleet's rounds store it when the store is back
            log.warning(
                "a bench could not be stored at once; it will be at the next round",
                extra={"fields": {"error": type(exc).__name__}},
            )

    def _log(self, outcome: Outcome) -> None:
        error = outcome.error
        # The gateway's own routine (a client leaving, its stopping) is no warning: a
        # restart under load ends thousands of answers at once (logged once, server side).
        level = logging.WARNING if error is not None and not error.routine else logging.INFO
        events = self.events
        if not events.enabled(level):
            return
        model = outcome.model
        events.emit(
            level,
            "attempt",
            {
                "request_id": outcome.job.request_id,
                "attempt": outcome.number,
                "model": model.name,
                "provider": model.provider,
                "status": error.status if error is not None else 200,
                "ok": error is None,
                "error_class": error.kind if error is not None else None,
                "elapsed_ms": round(outcome.timings.upstream_ms, 2),
                "error": error.message if error is not None else None,
                "client_gone": outcome.client_gone,
                "usage_estimated": outcome.usage_estimated,
            },
        )


def learn(tracker: Tracker, blacklist: Blacklist, attempt: Attempt) -> bool:
    """The chain's first half, what routing learns from one attempt: the tracker's stats
    and the blacklist's streaks. Returns whether it benched the model. Simulations
    replay attempts through it."""
    tracker.record(attempt)
    model = attempt.model
    benched: Entry | None = None
    if attempt.ok:
        # A request that began before the streak's last failure says nothing about
        # whether the model is back.
        blacklist.success(model, attempt.timestamp - attempt.latency_ms / 1000)
    elif attempt.counts_as_failure:
        benched = blacklist.failure(model, attempt.error_message)
        if benched is not None:
            log.warning(
                "model blacklisted",
                extra={
                    "fields": {
                        "event": "blacklisted",
                        "model": model,
                        "until": benched.until,
                        "consecutive_failures": benched.consecutive_failures,
                        "error": attempt.error_message,
                    }
                },
            )
        if blacklist.is_blacklisted(model):
            # Benched, it serves nobody; when it is back, the failures that benched it
            # must not keep it from being tried.
            tracker.reset_recent(model)
    return benched is not None
