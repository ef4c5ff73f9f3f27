"""Experiments in process: how an arm changes a request, how adaptive shares follow the
results, and how processes on one store run one experiment (definitions, ends, tallies)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from gateway.core.config import ArmConfig, ExperimentConfig, ModelConfig
from gateway.core.errors import InvalidRequest
from gateway.core.types import ResponseRecord
from gateway.routing.catalog import Target
from gateway.routing.dispatch import ReplyJob
from gateway.routing.experiments import STATS, STOPPED, Experiments, apply_arm
from gateway.storage import SQLiteStore, Store
from providers.base import Endpoint

MODELS = {n: ModelConfig(name=n, provider="mock") for n in ("alpha", "beta")}
ROUTES = {"auto": None}
TARGET = Target("auto", "auto", "accuracy", (MODELS["alpha"], MODELS["beta"]))
SPEC: dict[str, Any] = {
    "name": "ab",
    "route": "auto",
    "arms": [{"name": "control", "model": "alpha"}, {"name": "b", "model": "beta"}],
    "metric": "overall",
    "min_samples": 5,
}
BRIEF = ArmConfig(name="b", model="beta", system_prompt="Be brief. {system}", params={"top_p": 0.5})


class Clock:
    now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_an_arm_sets_its_params_and_system_prompt_in_each_api_shape() -> None:
    asked = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    chat = apply_arm(Endpoint.CHAT, asked, BRIEF)
    assert chat["messages"][0] == {"role": "system", "content": "Be brief. "}
    assert chat["top_p"] == 0.5 and asked == {"model": "auto", "messages": asked["messages"]}
    assert len(asked["messages"]) == 1  # the client's body is untouched
    own = {"messages": [{"role": "developer", "content": "Be kind."}, {"role": "user"}]}
    assert apply_arm(Endpoint.CHAT, own, BRIEF)["messages"][0] == {
        "role": "developer",
        "content": "Be brief. Be kind.",
    }
    blocks = {"system": [{"type": "text", "text": "Be kind."}], "messages": []}
    assert apply_arm(Endpoint.MESSAGES, blocks, BRIEF)["system"] == "Be brief. Be kind."
    assert apply_arm(Endpoint.RESPONSES, {"input": "hi"}, BRIEF)["instructions"] == "Be brief. "
    completion = apply_arm(Endpoint.COMPLETIONS, {"prompt": "hi"}, BRIEF)
    assert completion == {"prompt": "hi", "top_p": 0.5}  # no system prompt to replace
    plain = {"messages": []}
    assert apply_arm(Endpoint.CHAT, plain, ArmConfig(name="x", model="alpha")) is plain


def experiments(
    store: Store, origin: str, clock: Clock, spec: dict[str, Any] = SPEC
) -> Experiments:
    config = ExperimentConfig.model_validate(spec)
    return Experiments([config], MODELS, ROUTES, store, origin, clock=clock,
                       rng=random.Random(1))  # fmt: skip


def record(arm: str) -> ResponseRecord:
    model = "alpha" if arm == "control" else "beta"
    return ResponseRecord("r", "q", model, "mock", "text-to-text", "auto", None, 0.0, 0.0,
                          experiment="ab", arm=arm)  # fmt: skip


def rate(exp: Experiments, arm: str, scores: list[int]) -> None:
    for score in scores:
        exp.rated(record(arm), {"overall": score}, None)


def test_assignment_pins_the_arms_model_and_a_rerating_replaces_the_first() -> None:
    exp = experiments(SQLiteStore(":memory:"), "one", Clock())
    job = ReplyJob("q", Endpoint.CHAT, TARGET, {"model": "auto", "messages": []}, None, "c-1")
    exp.assign(job)
    assert job.experiment == "ab" and job.arm in ("control", "b")
    assert job.pinned is MODELS["alpha" if job.arm == "control" else "beta"]
    twin = ReplyJob("q2", Endpoint.CHAT, TARGET, {"model": "auto", "messages": []}, None, "c-1")
    exp.assign(twin)
    assert twin.arm == job.arm  # the same conversation, the same arm
    rate(exp, "b", [2])
    exp.rated(record("b"), {"overall": 5}, {"overall": 2})
    arms = {a["name"]: a for a in exp.report("ab")["arms"]}
    assert arms["b"]["n"] == 1 and arms["b"]["mean"] == 5.0


async def test_adaptive_shares_follow_the_better_arm_and_keep_a_floor() -> None:
    spec = {**SPEC, "split": "adaptive", "min_share": 0.1}
    exp = experiments(SQLiteStore(":memory:"), "one", Clock(), spec)
    await exp.store.open()
    rate(exp, "control", [3, 3, 2, 3, 3, 4, 3, 2, 3, 3] * 3)
    rate(exp, "b", [5, 4, 5, 5, 4, 5, 5, 5, 4, 5] * 3)
    await exp.round()
    shares = {a["name"]: a["share"] for a in exp.report("ab")["arms"]}
    assert shares["b"] > 0.85 and shares["control"] >= 0.1 - 1e-9
    report = exp.report("ab")
    diff = next(a for a in report["arms"] if a["name"] == "b")["difference"]
    fixed = experiments(SQLiteStore(":memory:"), "two", Clock())
    rate(fixed, "control", [3, 3, 2, 3, 3, 4, 3, 2, 3, 3] * 3)
    rate(fixed, "b", [5, 4, 5, 5, 4, 5, 5, 5, 4, 5] * 3)
    narrow = next(a for a in fixed.report("ab")["arms"] if a["name"] == "b")["difference"]
    # Adaptive allocation: the arms' own sequences combined, wider than the fixed split's.
    assert diff["estimate"] == narrow["estimate"]
    assert diff["high"] - diff["low"] > narrow["high"] - narrow["low"]
    await exp.store.close()


async def test_processes_on_one_store_run_one_experiment(tmp_path: Path) -> None:
    clock = Clock()
    url = str(tmp_path / "shared.db")
    one_store, two_store = SQLiteStore(url), SQLiteStore(url)
    await one_store.open()
    await two_store.open()
    one = Experiments([], MODELS, ROUTES, one_store, "one", clock=clock)
    two = Experiments([], MODELS, ROUTES, two_store, "two", clock=clock)
    made = await one.create(SPEC)
    assert made["state"] == "running"
    await two.pull()
    assert two.report("ab")["source"] == "runtime"  # known there too
    rate(one, "control", [3] * 6)
    rate(two, "b", [5] * 6)
    clock.now += 1
    await one.round()
    await two.round()
    await one.round()
    for process in (one, two):  # both see everyone's ratings, and the same decision
        report = process.report("ab")
        assert [a["n"] for a in report["arms"]] == [6, 6]
        assert report["status"] == "winner" and report["winner"] == "b"
    await two.promote("ab", None)
    clock.now += 1
    await one.pull()
    assert one.report("ab")["finish"]["arm"] == "b"
    assert one.default_of("auto") == "beta"
    # A restart: a new process reads the experiment, its end and all the tallies.
    three = Experiments([], MODELS, ROUTES, one_store, "three", clock=clock)
    await three.load()
    assert [a["n"] for a in three.report("ab")["arms"]] == [6, 6]
    assert three.report("ab")["state"] == "finished"
    await one_store.close()
    await two_store.close()


async def test_a_stopping_process_folds_its_tallies_and_they_count_once(tmp_path: Path) -> None:
    """Every restart is a new origin: a process that stops adds its tallies into the
    stopped processes' row and deletes its own; the others read every row again, so
    each rating counts once, there and in a process started later."""
    clock = Clock()
    url = str(tmp_path / "shared.db")
    stores = [SQLiteStore(url) for _ in range(4)]
    for store in stores:
        await store.open()
    procs = [experiments(s, f"h:{i}:x", clock) for i, s in enumerate(stores[:3])]
    rate(procs[0], "control", [3] * 4)
    rate(procs[1], "b", [5] * 3)
    rate(procs[2], "b", [4] * 2)
    for proc in (*procs, procs[2]):
        await proc.round()
        await proc._publish(proc.all["ab"])
    await procs[2].pull()
    before = [(a["n"], a["mean"]) for a in procs[2].report("ab")["arms"]]
    assert [n for n, _ in before] == [4, 5]
    await procs[0].close()
    await procs[1].close()
    origins = {key.split("\x1f")[0] for key in await stores[3].load_states(STATS)}
    assert origins == {"h:2:x", STOPPED}
    clock.now += 1
    await procs[2].pull()
    assert [(a["n"], a["mean"]) for a in procs[2].report("ab")["arms"]] == before
    later = experiments(stores[3], "h:9:x", clock)
    await later.load()
    assert [(a["n"], a["mean"]) for a in later.report("ab")["arms"]] == before
    for store in stores:
        await store.close()


@pytest.mark.parametrize("metric", ["cost", "latency"])
def test_lower_is_better_for_cost_and_latency(metric: str) -> None:
    exp = experiments(SQLiteStore(":memory:"), "one", Clock(), {**SPEC, "metric": metric})
    running = exp.all["ab"]
    for i in range(40):
        running.own[0].observe(10.0 + (i % 3), 0.0)
        running.own[1].observe(5.0 + (i % 3), 0.0)
    assert exp.decision("ab") == {"status": "winner", "winner": "b"}
    assert exp.report("ab")["higher_is_better"] is False


def test_a_combination_scores_each_answer_once_its_rating_is_in() -> None:
    spec = {**SPEC, "metric": "combination", "combination": {"overall": 1.0, "cost": -100.0}}
    exp = experiments(SQLiteStore(":memory:"), "one", Clock(), spec)
    cheap, dear = record("control"), record("b")
    cheap.cost, dear.cost = 0.001, 0.02  # 0.1 and 2 points off the rating
    for _ in range(40):
        exp.rated(cheap, {"overall": 4}, None)
        exp.rated(dear, {"overall": 5}, None)
    exp.rated(dear, {"overall": 3}, {"overall": 5})  # a re-rating replaces its score
    arms = {a["name"]: a for a in exp.report("ab")["arms"]}
    assert arms["control"]["mean"] == pytest.approx(3.9)
    assert arms["b"]["mean"] == pytest.approx((39 * 3 + 1) / 40)
    # Better rated, but dearer by more than its ratings make up for: the control wins.
    assert exp.decision("ab") == {"status": "winner", "winner": "control"}
    unpriced = record("b")  # its cost is not known: the answer does not count
    exp.rated(unpriced, {"overall": 5}, None)
    assert {a["name"]: a for a in exp.report("ab")["arms"]}["b"]["n"] == 40


async def test_an_arm_whose_provider_is_disabled_is_refused_or_not_run() -> None:
    store = SQLiteStore(":memory:")
    configured = ExperimentConfig.model_validate(SPEC)
    exp = Experiments([configured], MODELS, ROUTES, store, "one", enabled={"alpha"})
    job = ReplyJob("q", Endpoint.CHAT, TARGET, {"model": "auto", "messages": []}, None, "c")
    exp.assign(job)
    assert job.experiment is None and job.pinned is None  # beta cannot serve: not run
    assert exp.report("ab")["unavailable"] == ["beta"]
    other = Experiments([], MODELS, ROUTES, store, "two", enabled={"alpha"})
    with pytest.raises(InvalidRequest, match=r"arms\[1\]\.model: the model 'beta' is unavailable"):
        await other.create(SPEC)


async def test_latency_and_cost_guards_stop_a_harmful_arm_not_a_noisy_one() -> None:
    spec = {**SPEC, "guards": {"max_latency_p95_ms": 1000, "max_cost_per_answer_usd": 0.01,
                               "min_samples": 20}}  # fmt: skip
    exp = experiments(SQLiteStore(":memory:"), "one", Clock(), spec)
    await exp.store.open()
    running = exp.all["ab"]
    b = running.own[1]
    for i in range(40):  # 1 in 20 slower than 1 s (the p95 at the limit), cheap enough
        latency = 1500.0 if i % 20 == 0 else 300.0
        b.latency.add(latency)
        b.slow += latency > 1000
        b.cost.add(0.009 if i % 2 else 0.0105)
    await exp.round()
    assert exp.report("ab")["arms"][1]["status"] == "running"
    for _ in range(30):  # now a third of its answers are slow
        b.latency.add(2000.0)
        b.slow += 1
        b.cost.add(0.009)
    await exp.round()
    arm = exp.report("ab")["arms"][1]
    assert arm["status"] == "stopped_by_guard" and arm["share"] == 0.0
    assert arm["guard"] == "latency p95 above 1000 ms: 32 of 70 answers slower"
    await exp.store.close()

    dear = experiments(SQLiteStore(":memory:"), "two", Clock(), spec)
    await dear.store.open()
    c = dear.all["ab"].own[1]
    for _ in range(25):
        c.latency.add(100.0)
        c.cost.add(0.05)
    await dear.round()
    assert dear.report("ab")["arms"][1]["guard"].startswith("cost per answer above $0.01")
    await dear.store.close()


async def test_a_control_that_breaches_a_guard_is_reported_not_stopped() -> None:
    """The control's traffic has nowhere else to go: it keeps serving, and the report
    says which guard it breaches."""
    spec = {**SPEC, "guards": {"max_error_rate": 0.05, "min_samples": 20}}
    async with SQLiteStore(":memory:") as store:
        exp = experiments(store, "one", Clock(), spec)
        control = exp.all["ab"].own[0]
        control.attempts, control.failures = 40, 12
        await exp.round()
        arm = exp.report("ab")["arms"][0]
    assert arm["guard"] == "error rate above 0.05: 12 of 40 attempts failed"
    assert arm["status"] == "running" and arm["share"] == 0.5  # still serving its share
    assert exp.report("ab")["arms"][1]["guard"] is None
