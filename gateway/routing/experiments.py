"""A/B tests on a route: which arm serves a request, what changes for it, what each arm
achieved, and when one has won.

On the request path (`assign`, called by the dispatcher before ranking) a route with a
running experiment puts the request in one arm: by a hash of (experiment, conversation
or user id), so that a conversation sees one arm, or at random (`sticky_by: none`). The
arm's model goes first in the ranking (the route's others stay behind it for fallback),
its overrides (system prompt, parameters) are set on the request body here, before any
provider sees it; the answer's headers name the experiment and the arm. All in memory.

Outcomes reach an arm once, from the chains that already carry them: the recorder
(attempts, errors, cost, latency), the evaluator (auto score) and ratings (the answer's
record keeps its experiment and arm, in memory and in the store). Each process keeps
its own additive tallies per arm (`Moments`) and publishes them to the store under its
origin (state kind "experiment_stats"); every process adds up everyone's, as the fleet
does for routing stats, so results survive restarts and are the same on every worker and
replica. Experiments made through the admin API, their ends (stopped, promoted) and
their guard stops and decisions are rows of their own ("experiment", "experiment_event"):
acknowledged once stored, and known everywhere within a pull (`interval`).

The statistics are in `gateway.routing.sequential`: always-valid confidence sequences,
so that the results may be read at any time. A promoted arm becomes its route's default:
every request to the route is served by its model, with its overrides.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from gateway.core.config import (
    COMBINATION,
    ArmConfig,
    ExperimentConfig,
    ModelConfig,
    check_experiment,
)
from gateway.core.errors import Conflict, InvalidRequest, NotFound
from gateway.core.tasks import cancel
from gateway.core.types import CONVERSATION_TYPES, ResponseRecord
from gateway.routing.dispatch import Job, Outcome
from gateway.routing.origins import SEP, STOPPED, Fold, fold_own, stopped_among
from gateway.routing.sequential import (
    Interval,
    Moments,
    difference_interval,
    mean_interval,
    rate_exceeds,
    rho_for,
)
from gateway.storage.base import Store
from providers.base import Endpoint

__all__ = [
    "EVENTS",
    "EXPERIMENTS",
    "STATS",
    "STOPPED",
    "ArmStats",
    "Experiments",
    "apply_arm",
    "merge_tallies",
]

log = logging.getLogger("gatewise.experiments")

EXPERIMENTS = "experiment"  # state kind: name -> definition and lifecycle
EVENTS = "experiment_event"  # name \x1f event -> a guard stop or a decision, once reached
STATS = "experiment_stats"  # origin \x1f name -> this origin's tallies per arm
PULL_MARGIN = 10.0  # seconds a pull looks back past the previous one (clock skew)
CURVE_SECONDS = 600  # the width of a curve's bucket
# Per arm and origin (a week of 10-minute buckets, ~15 KB of JSON); older buckets fold
# into `before`, so the totals stay exact.
MAX_BUCKETS = 1008
PUBLISH_EVERY = 4  # rounds between publishing this process's tallies (2 s by default)
RATINGS = ("overall", "accuracy", "relevance", "helpfulness", "creativity")
LOWER_IS_BETTER = frozenset({"cost", "latency"})
# The smallest difference that matters when none is configured: rating points, auto
# score, or a share of the control's mean (cost, latency).
_MIN_EFFECT = {"auto_score": 0.02}
_RELATIVE_EFFECT = 0.05
_VARIANCE_FLOOR = {"auto_score": 0.0025}  # ratings: 0.25 (below the rounding's own)


def _floor(metric: str, control_mean: float | None) -> float:
    if metric == COMBINATION:
        return 0.0
    if metric in RATINGS:
        return 0.25
    if metric in _VARIANCE_FLOOR:
        return _VARIANCE_FLOOR[metric]
    return (0.01 * (control_mean or 0.0)) ** 2


@dataclass(slots=True)
class ArmStats:
    """One arm's tallies in one process (or, added up, in the fleet)."""

    metric: Moments = field(default_factory=Moments)  # the primary metric
    cost: Moments = field(default_factory=Moments)  # per answer, USD
    latency: Moments = field(default_factory=Moments)  # per answer, ms
    attempts: float = 0.0  # tries of the arm's model (blamed failures counted)
    failures: float = 0.0
    slow: float = 0.0  # answers slower than the guard's max_latency_p95_ms
    curve: dict[int, Moments] = field(default_factory=dict)  # bucket start -> metric
    before: Moments = field(default_factory=Moments)  # folded buckets

    def observe(self, value: float, at: float, weight: float = 1.0) -> None:
        self.metric.add(value, weight)
        bucket = int(at // CURVE_SECONDS) * CURVE_SECONDS
        moments = self.curve.get(bucket)
        if moments is None:
            moments = self.curve[bucket] = Moments()
            if len(self.curve) > MAX_BUCKETS:
                oldest = min(self.curve)
                self.before.merge(self.curve.pop(oldest))
        moments.add(value, weight)

    def merge(self, other: ArmStats) -> None:
        self.metric.merge(other.metric)
        self.cost.merge(other.cost)
        self.latency.merge(other.latency)
        self.attempts += other.attempts
        self.failures += other.failures
        self.slow += other.slow
        self.before.merge(other.before)
        for bucket, moments in other.curve.items():
            self.curve.setdefault(bucket, Moments()).merge(moments)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric.to_list(),
            "cost": self.cost.to_list(),
            "latency": self.latency.to_list(),
            "attempts": self.attempts,
            "failures": self.failures,
            "slow": self.slow,
            "curve": {str(b): m.to_list() for b, m in self.curve.items()},
            "before": self.before.to_list(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArmStats:
        return cls(
            Moments.from_list(data["metric"]),
            Moments.from_list(data["cost"]),
            Moments.from_list(data["latency"]),
            float(data["attempts"]),
            float(data["failures"]),
            float(data["slow"]),
            {int(b): Moments.from_list(m) for b, m in data.get("curve", {}).items()},
            Moments.from_list(data.get("before", [0, 0, 0])),
        )


def merge_tallies(into: dict[str, Any] | None, part: dict[str, Any]) -> dict[str, Any]:
    """A stopped process's tallies of an experiment added into all stopped ones' (as
    stored): per arm, everything adds up (the curve's oldest buckets folding into
    `before` past MAX_BUCKETS, as in one process)."""
    if into is None:
        return part
    arms: dict[str, Any] = {}
    for name in {*into["arms"], *part["arms"]}:
        stats = ArmStats()
        for data in (into, part):
            if name in data["arms"]:
                stats.merge(ArmStats.from_dict(data["arms"][name]))
        while len(stats.curve) > MAX_BUCKETS:
            stats.before.merge(stats.curve.pop(min(stats.curve)))
        arms[name] = stats.to_dict()
    at = max(float(into.get("published_at", 0.0)), float(part.get("published_at", 0.0)))
    return {"arms": arms, "published_at": at}


def apply_arm(endpoint: Endpoint, body: dict[str, Any], arm: ArmConfig) -> dict[str, Any]:
    """The request body as the arm sends it: its parameters set, its system prompt in
    place of the client's ("{system}" in it stands for the client's own). A new dict:
    the client's body is not changed. Completions have no system prompt to replace."""
    if not arm.params and arm.system_prompt is None:
        return body
    out = {**body, **arm.params}
    template = arm.system_prompt
    if template is None:
        return out
    if endpoint is Endpoint.CHAT and isinstance(body.get("messages"), list):
        messages = list(body["messages"])
        for i, message in enumerate(messages):
            if isinstance(message, dict) and message.get("role") in ("system", "developer"):
                own = message.get("content")
                text = own if isinstance(own, str) else ""
                messages[i] = {**message, "content": template.replace("{system}", text)}
                break
        else:
            messages.insert(0, {"role": "system", "content": template.replace("{system}", "")})
        out["messages"] = messages
    elif endpoint is Endpoint.MESSAGES:
        own = body.get("system")
        if isinstance(own, list):
            own = "".join(b.get("text", "") for b in own if isinstance(b, dict))
        out["system"] = template.replace("{system}", own if isinstance(own, str) else "")
    elif endpoint is Endpoint.RESPONSES:
        own = body.get("instructions")
        out["instructions"] = template.replace("{system}", own if isinstance(own, str) else "")
    return out


class _Running:
    """One experiment as this process knows it: its definition, its lifecycle, its
    arms' tallies (its own and its peers'), guard stops and its decision."""

    def __init__(
        self, config: ExperimentConfig, models: list[ModelConfig], row: dict[str, Any]
    ) -> None:
        self.config = config
        self.name = config.name
        self.row = row  # as stored: definition, source, state, finish
        self.arms = config.arms
        self.models = models
        self.control = next(i for i, a in enumerate(self.arms) if a.name == config.control_arm)
        self.index = {a.name: i for i, a in enumerate(self.arms)}
        self.ctypes = frozenset(
            c for c in CONVERSATION_TYPES if all(c in m.conversation_types for m in models)
        )
        self.own = [ArmStats() for _ in self.arms]
        self.peers: dict[str, list[ArmStats]] = {}  # origin -> its tallies
        self.version = 0  # own tallies changed
        self.published = -1
        self.stopped: dict[str, str] = {}  # arm -> why a guard stopped it
        self.decision: dict[str, Any] | None = None
        self.shares = config.shares()
        self._bounds: list[float] = []
        # A combined metric: its weights, and which outcome completes an answer's score
        # (a rating, the auto score, or the answer itself).
        self.weights: dict[str, float] = {k: w for k, w in (config.combination or {}).items()}
        self.last_part = (
            "rating"
            if any(k in RATINGS for k in self.weights)
            else "auto_score"
            if "auto_score" in self.weights
            else "answer"
        )
        self.rho = rho_for(config.expected_samples / 2, config.alpha)
        self.rho_arm = rho_for(config.expected_samples, config.alpha)
        self.reshare(self.shares)

    @property
    def running(self) -> bool:
        return bool(self.row.get("state", "running") == "running")

    def reshare(self, shares: list[float]) -> None:
        """Shares in force: a stopped arm's go to the control arm."""
        live = list(shares)
        for name in self.stopped:
            i = self.index[name]
            live[self.control] += live[i]
            live[i] = 0.0
        total = sum(live) or 1.0
        acc = 0.0
        bounds = []
        for share in live:
            acc += share / total
            bounds.append(acc)
        bounds[-1] = 1.0
        self.shares = shares
        self._bounds = bounds

    def live_shares(self) -> list[float]:
        previous = 0.0
        out = []
        for bound in self._bounds:
            out.append(bound - previous)
            previous = bound
        return out

    def pick(self, point: float) -> int:
        for i, bound in enumerate(self._bounds):
            if point < bound:
                return i
        return len(self._bounds) - 1

    def combined(self) -> list[ArmStats]:
        out = [ArmStats() for _ in self.arms]
        for tallies in (self.own, *self.peers.values()):
            for mine, theirs in zip(out, tallies, strict=False):
                mine.merge(theirs)
        return out


class Experiments:
    """Every experiment this process knows; the one object the request path, the
    outcome chains and the admin API share."""

    def __init__(
        self,
        configured: list[ExperimentConfig],
        models: Mapping[str, ModelConfig],
        routes: Mapping[str, Any],
        store: Store,
        origin: str,
        *,
        benched: Callable[[str], bool] = lambda model: False,
        enabled: Collection[str] | None = None,
        interval: float = 0.5,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.configured = {e.name: e for e in configured}
        self.models = dict(models)
        self.routes = dict(routes)
        self.store = store
        self.origin = origin
        self.benched = benched
        # The models whose provider is enabled (None: all): an experiment whose arm names
        # another is not run (the arm could not be served).
        self.enabled = frozenset(self.models if enabled is None else enabled)
        self.interval = interval
        self.clock = clock
        self.rng = rng or random.Random()
        self.all: dict[str, _Running] = {}
        self._by_route: dict[str, _Running] = {}
        self._defaults: dict[str, tuple[ArmConfig, ModelConfig]] = {}
        self._pulled: float | None = None
        self._rounds = -1  # the first round publishes
        self.failing = False
        self._task: asyncio.Task[None] | None = None
        for experiment in configured:
            row = {**experiment.model_dump(mode="json"), "source": "config", "state": "running"}
            self._adopt(row)
        self._index()

    # -- the request path ----------------------------------------------------------------
    def assign(self, job: Job[Any, Any]) -> None:
        """Put a request to a route with a running experiment in one of its arms (or give
        a route with a promoted arm that arm): model first, overrides on the body."""
        route = job.target.route
        if route is None:
            return
        running = self._by_route.get(route)
        if running is None:
            default = self._defaults.get(route)
            if default is not None and job.ctype in default[1].conversation_types:
                arm, model = default
                job.body = apply_arm(job.endpoint, job.body, arm)
                if model.name in self.enabled and not self.benched(model.name):
                    job.pinned = model
            return
        if job.ctype not in running.ctypes:
            return
        i = running.pick(self._point(running, job))
        arm = running.arms[i]
        model = running.models[i]
        job.experiment = running.name
        job.arm = arm.name
        job.body = apply_arm(job.endpoint, job.body, arm)
        if self.benched(model.name):  # the arm cannot serve: an error of the arm's
            stats = running.own[i]
            stats.attempts += 1
            stats.failures += 1
            running.version += 1
        else:
            job.pinned = model

    def _point(self, running: _Running, job: Job[Any, Any]) -> float:
        sticky = running.config.sticky_by
        key: object = None
        if sticky == "conversation":
            key = job.conversation_id
        elif sticky == "user":
            key = job.body.get("user")
            if key is None and isinstance(job.body.get("metadata"), dict):
                key = job.body["metadata"].get("user_id")
        if not isinstance(key, str) or not key:
            return self.rng.random()
        digest = hashlib.blake2b(f"{running.name}{SEP}{key}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    # -- outcomes --------------------------------------------------------------------------
    def observe(self, outcome: Outcome) -> None:
        """An attempt of a request in an experiment (from the recorder)."""
        job = outcome.job
        running = self.all.get(job.experiment or "")
        if running is None or job.arm not in running.index:
            return
        i = running.index[job.arm]
        stats = running.own[i]
        error = outcome.error
        if outcome.model.name == running.models[i].name and (error is None or error.blames_model):
            stats.attempts += 1
            if error is not None:
                stats.failures += 1
        if error is None and outcome.answered and not outcome.client_gone:
            latency = outcome.timings.upstream_ms
            stats.cost.add(outcome.cost)
            stats.latency.add(latency)
            limit = running.config.guards.max_latency_p95_ms
            if limit is not None and latency > limit:
                stats.slow += 1
            metric = running.config.metric
            if metric == "cost":
                stats.observe(outcome.cost, outcome.at)
            elif metric == "latency":
                stats.observe(latency, outcome.at)
            elif metric == COMBINATION and running.last_part == "answer":
                value = _combined(running.weights, {"cost": outcome.cost, "latency": latency})
                if value is not None:
                    stats.observe(value, outcome.at)
        running.version += 1

    def scored(self, record: ResponseRecord, score: float) -> None:
        """An answer's automatic evaluation score (from the evaluator)."""
        running = self.all.get(record.experiment or "")
        if running is None:
            return
        i = running.index.get(record.arm or "")
        if i is None:
            return
        value: float | None = None
        if running.config.metric == "auto_score":
            value = score
        elif running.config.metric == COMBINATION and running.last_part == "auto_score":
            value = _combined(running.weights, {**_parts(record), "auto_score": score})
        if value is not None:
            running.own[i].observe(value, self.clock())
            running.version += 1

    def rated(
        self, record: ResponseRecord, scores: Mapping[str, int], previous: Mapping[str, Any] | None
    ) -> None:
        """A rating of an answer (from the feedback service); a re-rating replaces the
        previous one."""
        running = self.all.get(record.experiment or "")
        if running is None:
            return
        metric = running.config.metric
        i = running.index.get(record.arm or "")
        if i is None:
            return
        old: float | None = None
        new: float | None = None
        if metric in RATINGS:
            old = previous.get(metric) if previous else None
            new = scores.get(metric)
        elif metric == COMBINATION and running.last_part == "rating":
            # (A re-rating's earlier score is recomputed from the same parts: an answer
            # judged between its two ratings is counted by its later auto score.)
            parts = _parts(record)
            old = _combined(running.weights, {**parts, **previous}) if previous else None
            new = _combined(running.weights, {**parts, **scores})
        else:
            return
        stats = running.own[i]
        now = self.clock()
        if old is not None:
            stats.observe(float(old), now, -1.0)
        if new is not None:
            stats.observe(float(new), now)
        running.version += 1

    # -- admin actions: stored, then acknowledged --------------------------------------------
    async def create(self, spec: Any) -> dict[str, Any]:
        if not isinstance(spec, dict):
            raise InvalidRequest("The body must be a JSON object: name, route, arms, metric, …")
        name = spec.get("name")
        if isinstance(name, str) and (name in self.all or name in self.configured):
            raise Conflict(
                f"An experiment named '{name}' exists (or existed); names are not reused.",
                param="name",
            )
        try:
            config = ExperimentConfig.model_validate(spec)
            check_experiment(config, self.models, self.routes)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = _where(first["loc"])
            message = first["msg"].removeprefix("Value error, ")
            if first["type"] == "extra_forbidden":
                message = "unknown field"
            elif first["type"] == "missing":
                message = "required field is missing"
            raise InvalidRequest(f"{where}: {message}" if where else message, param=where) from None
        except ValueError as exc:
            text = str(exc)
            raise InvalidRequest(text, param=text.split(":", 1)[0]) from None
        for j, arm in enumerate(config.arms):
            if arm.model not in self.enabled:
                raise InvalidRequest(
                    f"arms[{j}].model: the model '{arm.model}' is unavailable (its provider "
                    "is disabled)",
                    param=f"arms[{j}].model",
                )
        busy = self._by_route.get(config.route)
        if busy is not None:
            raise Conflict(
                f"The route '{config.route}' already runs the experiment '{busy.name}'; "
                "stop or promote it first.",
                param="route",
            )
        row = {
            **config.model_dump(mode="json"),
            "source": "runtime",
            "state": "running",
            "created_at": self.clock(),
        }
        await self.store.save_states([(EXPERIMENTS, config.name, row)])
        self._adopt(row)
        self._index()
        return self.report(config.name)

    async def stop(self, name: str) -> dict[str, Any]:
        """End an experiment: its route goes back to its usual routing (or its default)."""
        running = self._open(name)
        await self._finish(running, {"action": "stopped", "arm": None})
        return self.report(name)

    async def promote(self, name: str, body: Any) -> dict[str, Any]:
        """End an experiment with an arm as its route's default: the declared winner, or
        the arm the body names."""
        running = self._open(name)
        asked = body.get("arm") if isinstance(body, dict) else None
        if body not in (None, {}) and (
            not isinstance(body, dict) or set(body) - {"arm"} or not isinstance(asked, str)
        ):
            raise InvalidRequest('The body is empty (promote the winner) or {"arm": "<arm name>"}.')
        if asked is None:
            decision = self.decision(name)
            winner = decision.get("winner") if decision else None
            if winner is None:
                raise Conflict(
                    f"The experiment '{name}' has no winner yet; name the arm to promote it "
                    'anyway: {"arm": "<arm name>"}.',
                    code="no_winner",
                )
            asked = winner
        if asked not in running.index:
            raise InvalidRequest(
                f"Unknown arm '{asked}' (arms: {', '.join(running.index)}).", param="arm"
            )
        if asked in running.stopped:
            raise Conflict(
                f"The arm '{asked}' was stopped by a guard ({running.stopped[asked]}); it "
                "cannot be promoted.",
                param="arm",
            )
        await self._finish(running, {"action": "promoted", "arm": asked})
        return self.report(name)

    def _open(self, name: str) -> _Running:
        running = self.all.get(name)
        if running is None:
            raise NotFound(
                f"Unknown experiment '{name}'.", param="name", code="experiment_not_found"
            )
        if not running.running:
            finish = running.row.get("finish") or {}
            how = finish.get("action", "finished")
            arm = f" ('{finish['arm']}')" if finish.get("arm") else ""
            raise Conflict(
                f"The experiment '{name}' is finished ({how}{arm}); a finished experiment "
                "cannot be changed.",
                code="experiment_finished",
            )
        return running

    async def _finish(self, running: _Running, finish: dict[str, Any]) -> None:
        row = {
            **running.row,
            "state": "finished",
            "finish": {**finish, "at": self.clock()},
        }
        await self.store.save_states([(EXPERIMENTS, running.name, row)])
        running.row = row
        self._index()
        await self._publish(running)  # its tallies as they were at the end

    # -- reading -----------------------------------------------------------------------------
    def listing(self) -> list[dict[str, Any]]:
        order = sorted(
            self.all.values(), key=lambda r: (not r.running, -(r.row.get("created_at") or 0))
        )
        return [self.report(r.name, curve=False) for r in order]

    def report(self, name: str, curve: bool = True) -> dict[str, Any]:
        running = self.all.get(name)
        if running is None:
            raise NotFound(
                f"Unknown experiment '{name}'.", param="name", code="experiment_not_found"
            )
        config = running.config
        stats = running.combined()
        decision = running.decision or self._decide(running, stats)
        control = stats[running.control]
        floor = _floor(config.metric, control.metric.mean)
        alpha_arm = config.alpha / len(running.arms)
        shares = running.live_shares()
        arms = []
        for i, (arm, s) in enumerate(zip(running.arms, stats, strict=True)):
            interval = mean_interval(s.metric, alpha_arm, running.rho_arm, floor)
            diff = None if i == running.control else self._difference(running, control, s, floor)
            answers = s.latency.n
            arms.append(
                {
                    "name": arm.name,
                    "model": arm.model,
                    "control": i == running.control,
                    "share": round(shares[i], 6) if running.running else 0.0,
                    "system_prompt": arm.system_prompt,
                    "params": arm.params,
                    "status": _arm_status(running, decision, arm.name),
                    # Why a guard stopped it; for the control, which is never stopped
                    # (its traffic has nowhere else to go), the guard it is breaching.
                    "guard": _guard(config, s)
                    if i == running.control
                    else running.stopped.get(arm.name),
                    "n": round(s.metric.n),
                    "mean": _round(s.metric.mean),
                    "ci": None
                    if interval is None
                    else [_round(interval.low), _round(interval.high)],
                    "difference": None
                    if diff is None
                    else {
                        "estimate": _round(diff.estimate),
                        "low": _round(diff.low),
                        "high": _round(diff.high),
                    },
                    "answers": round(answers),
                    "attempts": round(s.attempts),
                    "error_rate": _round(s.failures / s.attempts) if s.attempts else None,
                    "latency_ms": _round(s.latency.mean),
                    "slow_share": _round(s.slow / answers) if answers else None,
                    "cost_usd": _round(s.cost.total, 8),
                    "cost_per_answer_usd": _round(s.cost.mean, 8),
                }
            )
        out: dict[str, Any] = {
            "object": "experiment",
            "name": name,
            "route": config.route,
            "source": running.row.get("source", "runtime"),
            "state": "running" if running.running else "finished",
            "unavailable": [m.name for m in running.models if m.name not in self.enabled],
            "status": decision["status"] if decision else "running",
            "winner": decision.get("winner") if decision else None,
            "finish": running.row.get("finish"),
            "created_at": running.row.get("created_at"),
            "metric": config.metric,
            "combination": config.combination,
            "higher_is_better": config.metric not in LOWER_IS_BETTER,
            "split": config.split,
            "sticky_by": config.sticky_by,
            "alpha": config.alpha,
            "min_samples": config.min_samples,
            "min_effect": self._min_effect(running, control),
            "guards": config.guards.model_dump(),
            "control": config.control_arm,
            "cost_usd": _round(sum(s.cost.total for s in stats), 8),
            "arms": arms,
        }
        if curve:
            out["curve"] = self._curve(running, stats, floor)
        return out

    def decision(self, name: str) -> dict[str, Any] | None:
        """The experiment's decision: the one reached (kept once reached), else what the
        results say now (None: no decision yet)."""
        running = self.all[name]
        return running.decision or self._decide(running, running.combined())

    def _difference(
        self, running: _Running, control: ArmStats, arm: ArmStats, floor: float
    ) -> Interval | None:
        """arm - control, always valid. Fixed split: the difference's own sequence (alpha
        shared among the challengers). Adaptive split: the arms' own sequences, each at
        half of that, combined: valid whatever the allocation did with the data."""
        config = running.config
        alpha = config.alpha / max(1, len(running.arms) - 1)
        if config.split == "fixed":
            return difference_interval(control.metric, arm.metric, alpha, running.rho, floor)
        one = mean_interval(arm.metric, alpha / 2, running.rho_arm, floor)
        other = mean_interval(control.metric, alpha / 2, running.rho_arm, floor)
        if one is None or other is None:
            return None
        return Interval(one.estimate - other.estimate, one.low - other.high, one.high - other.low)

    def _min_effect(self, running: _Running, control: ArmStats) -> float:
        config = running.config
        if config.min_effect is not None:
            return config.min_effect
        if config.metric == COMBINATION:
            return 0.0  # no scale to guess from: "no detectable difference" needs min_effect
        if config.metric in RATINGS:
            return 0.1
        if config.metric in _MIN_EFFECT:
            return _MIN_EFFECT[config.metric]
        return _RELATIVE_EFFECT * abs(control.metric.mean or 0.0)

    def _decide(self, running: _Running, stats: list[ArmStats]) -> dict[str, Any] | None:
        """A winner, or no detectable difference, once the sequences say so (None: go on)."""
        config = running.config
        control = stats[running.control]
        live = [
            i
            for i, arm in enumerate(running.arms)
            if i != running.control and arm.name not in running.stopped
        ]
        if not live:
            return None
        if any(stats[i].metric.n < config.min_samples for i in (running.control, *live)):
            return None
        floor = _floor(config.metric, control.metric.mean)
        sign = -1.0 if config.metric in LOWER_IS_BETTER else 1.0
        gains: dict[int, Interval] = {}
        for i in live:
            diff = self._difference(running, control, stats[i], floor)
            if diff is None:
                return None
            low, high = sorted((sign * diff.low, sign * diff.high))
            gains[i] = Interval(sign * diff.estimate, low, high)
        better = [i for i, g in gains.items() if g.low > 0]
        if better:
            best = max(better, key=lambda i: gains[i].estimate)
            return {"status": "winner", "winner": running.arms[best].name}
        if all(g.high < 0 for g in gains.values()):
            return {"status": "winner", "winner": running.arms[running.control].name}
        effect = self._min_effect(running, control)
        if effect > 0 and all(-effect < g.low and g.high < effect for g in gains.values()):
            return {"status": "no_difference", "winner": None}
        return None

    def _curve(
        self, running: _Running, stats: list[ArmStats], floor: float
    ) -> list[dict[str, Any]]:
        """Per bucket: each arm's cumulative n and mean, and each challenger's difference
        to the control with its interval, as they stood at the bucket's end."""
        buckets = sorted({b for s in stats for b in s.curve})
        cumulative = [Moments() for _ in stats]
        for acc, s in zip(cumulative, stats, strict=True):
            acc.merge(s.before)
        control = running.control
        points = []
        for bucket in buckets:
            for acc, s in zip(cumulative, stats, strict=True):
                if bucket in s.curve:
                    acc.merge(s.curve[bucket])
            arms: dict[str, Any] = {}
            for i, (arm, acc) in enumerate(zip(running.arms, cumulative, strict=True)):
                entry: dict[str, Any] = {"n": round(acc.n), "mean": _round(acc.mean)}
                if i != control:
                    diff = self._difference(
                        running, ArmStats(metric=cumulative[control]), ArmStats(metric=acc), floor
                    )
                    entry["difference"] = (
                        None if diff is None else [_round(diff.low), _round(diff.high)]
                    )
                arms[arm.name] = entry
            points.append({"ts": bucket + CURVE_SECONDS, "arms": arms})
        return points

    # -- the fleet -----------------------------------------------------------------------------
    async def load(self) -> None:
        await self.pull()

    async def pull(self) -> None:
        """Take in experiments, events and every other origin's tallies changed since the
        last pull (everything at first)."""
        began = self.clock()
        since = None if self._pulled is None else self._pulled - PULL_MARGIN
        rows = await self.store.load_states(EXPERIMENTS, changed_since=since)
        events = await self.store.load_states(EVENTS, changed_since=since)
        tallies = await self.store.load_states(STATS, changed_since=since)
        if since is not None and stopped_among(tallies):
            # A process stopped and folded its tallies: all again, none counted twice.
            tallies = await self.store.load_states(STATS)
            for known in self.all.values():
                known.peers = {}
        self._pulled = began
        for row in rows.values():
            self._adopt(row)
        for key, event in events.items():
            name, _, what = key.partition(SEP)
            running = self.all.get(name)
            if running is not None:
                self._event(running, what, event)
        for key, data in tallies.items():
            origin, _, name = key.partition(SEP)
            running = self.all.get(name)
            if running is None or origin == self.origin:
                continue
            try:
                arms = data["arms"]
                running.peers[origin] = [
                    ArmStats.from_dict(arms[a.name]) if a.name in arms else ArmStats()
                    for a in running.arms
                ]
            except (KeyError, TypeError, ValueError):
                log.warning(
                    "ignoring unreadable experiment tallies", extra={"fields": {"key": key}}
                )
        self._index()

    async def round(self) -> None:
        """One background round: publish (every PUBLISH_EVERY rounds), pull, judge
        guards and decisions, reshare."""
        self._rounds += 1
        if self._rounds % PUBLISH_EVERY == 0:
            for running in list(self.all.values()):
                await self._publish(running)
        await self.pull()
        for running in list(self.all.values()):
            if running.running:
                await self._judge(running)

    async def _publish(self, running: _Running) -> None:
        if running.version == running.published:
            return
        version = running.version
        data = {
            "arms": {a.name: s.to_dict() for a, s in zip(running.arms, running.own, strict=True)},
            "published_at": self.clock(),
        }
        await self.store.save_states([(STATS, f"{self.origin}{SEP}{running.name}", data)])
        running.published = version

    async def _judge(self, running: _Running) -> None:
        stats = running.combined()
        events: list[tuple[str, str, dict[str, Any]]] = []
        for i, arm in enumerate(running.arms):
            if i == running.control or arm.name in running.stopped:
                continue
            reason = _guard(running.config, stats[i])
            if reason is not None:
                event = {"arm": arm.name, "reason": reason, "at": self.clock()}
                events.append((EVENTS, f"{running.name}{SEP}guard:{arm.name}", event))
                self._event(running, f"guard:{arm.name}", event)
                log.warning(
                    "experiment arm stopped by a guard",
                    extra={"fields": {"experiment": running.name, "arm": arm.name,
                                      "reason": reason}},
                )  # fmt: skip
        if running.decision is None:
            decision = self._decide(running, stats)
            if decision is not None:
                decision = {**decision, "at": self.clock()}
                events.append((EVENTS, f"{running.name}{SEP}decision", decision))
                running.decision = decision
        if running.config.split == "adaptive":
            running.reshare(self._thompson(running, stats))
        if events:
            await self.store.save_states(events)

    def _event(self, running: _Running, what: str, event: dict[str, Any]) -> None:
        if what.startswith("guard:"):
            arm = what.removeprefix("guard:")
            if arm in running.index and arm not in running.stopped:
                running.stopped[arm] = str(event.get("reason", "a guard"))
                running.reshare(running.shares)
        elif what == "decision" and running.decision is None:
            running.decision = event

    def _thompson(self, running: _Running, stats: list[ArmStats]) -> list[float]:
        """Adaptive shares: each arm's chance of being best under a normal posterior of
        its mean (numpy draws), no arm below min_share while it runs."""
        import numpy as np  # here: a gateway without adaptive experiments never loads it

        config = running.config
        floor = _floor(config.metric, stats[running.control].metric.mean)
        means = [s.metric.mean for s in stats]
        known = [m for m in means if m is not None]
        centre = sum(known) / len(known) if known else 0.0
        rng = np.random.default_rng(self.rng.getrandbits(32))
        draws = np.stack(
            [
                rng.normal(
                    m if m is not None else centre,
                    math.sqrt(s.metric.variance(floor) / max(s.metric.n, 1.0)),
                    4000,
                )
                for m, s in zip(means, stats, strict=True)
            ]
        )
        best = (
            np.argmin(draws, axis=0)
            if config.metric in LOWER_IS_BETTER
            else np.argmax(draws, axis=0)
        )
        wins = np.bincount(best, minlength=len(stats)) / draws.shape[1]
        least = min(config.min_share, 1.0 / len(stats))  # every arm keeps at least this
        return [float(least + (1 - least * len(stats)) * w) for w in wins]

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gatewise-experiments")

    @property
    def folds(self) -> list[Fold]:
        """What a dead process left of this kind, and how to fold it (`Origins`)."""
        return [(STATS, merge_tallies)]

    async def close(self) -> None:
        await cancel(self._task)
        self._task = None
        try:
            for running in self.all.values():
                await self._publish(running)
            # This origin's tallies join the stopped processes' (a restart is a new
            # origin: they would pile up, each read at every start and every round).
            await fold_own(self.store, self.origin, STATS, self.all, merge_tallies)
        except self.store.OUTAGES as exc:
            log.warning(
                "experiment tallies not stored at shutdown",
                extra={"fields": {"error": type(exc).__name__}},
            )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.round()
            except self.store.OUTAGES as exc:
                if not self.failing:
                    log.warning("experiments cannot be shared: %s", type(exc).__name__)
                self.failing = True
            except Exception:
                log.exception("experiments round failed")
            else:
                if self.failing:
                    log.warning("experiments are shared again")
                self.failing = False

    # -- inside ---------------------------------------------------------------------------
    def _adopt(self, row: dict[str, Any]) -> None:
        """Take in a stored (or configured) experiment; a known one keeps its tallies."""
        name = row.get("name")
        known = self.all.get(name) if isinstance(name, str) else None
        if known is not None:
            if row.get("source") == "config" and known.row.get("state") == "finished":
                return  # the store's end wins over the file
            known.row = {**known.row, **{k: row[k] for k in ("state", "finish") if k in row}}
            return
        definition = {k: v for k, v in row.items() if k in ExperimentConfig.model_fields}
        try:
            config = ExperimentConfig.model_validate(definition)
            check_experiment(config, self.models, self.routes)
        except (ValidationError, ValueError) as exc:
            log.warning(
                "ignoring a stored experiment this configuration cannot run",
                extra={"fields": {"experiment": name, "error": str(exc)[:200]}},
            )
            return
        models = [self.models[a.model] for a in config.arms]
        self.all[config.name] = _Running(config, models, dict(row))

    def _index(self) -> None:
        """Which experiment runs on each route, and each route's promoted arm."""
        by_route: dict[str, _Running] = {}
        defaults: dict[str, tuple[float, ArmConfig, ModelConfig]] = {}
        for running in self.all.values():
            route = running.config.route
            if running.running:
                if all(m.name in self.enabled for m in running.models):
                    by_route.setdefault(route, running)
                continue
            finish = running.row.get("finish") or {}
            if finish.get("action") == "promoted" and finish.get("arm") in running.index:
                at = float(finish.get("at") or 0.0)
                if route not in defaults or defaults[route][0] < at:
                    i = running.index[finish["arm"]]
                    defaults[route] = (at, running.arms[i], running.models[i])
        self._by_route = by_route
        self._defaults = {route: (arm, model) for route, (_, arm, model) in defaults.items()}

    def default_of(self, route: str) -> str | None:
        """The model of the arm promoted on `route` (None: none)."""
        found = self._defaults.get(route)
        return found[1].name if found is not None else None


def _parts(record: ResponseRecord) -> dict[str, float | None]:
    return {"cost": record.cost, "latency": record.latency_ms, "auto_score": record.auto_score}


def _combined(weights: Mapping[str, float], parts: Mapping[str, Any]) -> float | None:
    """The weighted sum of an answer's parts; None while one of them is not known."""
    total = 0.0
    for name, weight in weights.items():
        value = parts.get(name)
        if value is None:
            return None
        total += weight * float(value)
    return total


def _guard(config: ExperimentConfig, stats: ArmStats) -> str | None:
    """Why this arm harms users, once a sequential test says so (None: it does not)."""
    guards = config.guards
    alpha = guards.alpha
    error_limit = guards.max_error_rate
    if (
        error_limit is not None
        and stats.attempts >= guards.min_samples
        and rate_exceeds(stats.failures, stats.attempts, error_limit, alpha)
    ):
        return (
            f"error rate above {error_limit:g}: "
            f"{int(stats.failures)} of {int(stats.attempts)} attempts failed"
        )
    answers = stats.latency.n
    slow_limit = guards.max_latency_p95_ms
    if (
        slow_limit is not None
        and answers >= guards.min_samples
        and rate_exceeds(stats.slow, answers, 0.05, alpha)
    ):
        return (
            f"latency p95 above {slow_limit:g} ms: "
            f"{int(stats.slow)} of {int(answers)} answers slower"
        )
    limit = guards.max_cost_per_answer_usd
    if limit is not None and stats.cost.n >= guards.min_samples:
        interval = mean_interval(stats.cost, alpha, rho_for(guards.min_samples, alpha))
        if interval is not None and interval.low > limit:
            return f"cost per answer above ${limit:g}: ${interval.estimate:.6f} on average"
    return None


def _arm_status(running: _Running, decision: dict[str, Any] | None, arm: str) -> str:
    if arm in running.stopped:
        return "stopped_by_guard"
    if decision is None:
        return "running"
    if decision["status"] == "no_difference":
        return "no_difference"
    return "winner" if decision.get("winner") == arm else "loser"


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith("function-") or part in ("literal", "str", "int"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out
