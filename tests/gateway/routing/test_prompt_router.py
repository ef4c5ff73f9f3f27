"""Per-prompt routing, in process: the features of a prompt, a learner that finds a
planted pattern in synthetic prompts from ratings alone, re-ratings, the cap on one
key's weight, sharing over a real store, and the selector's hook."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import orjson
import pytest

from gateway.core.config import parse_config
from gateway.routing.blacklist import Blacklist
from gateway.routing.catalog import Catalog
from gateway.routing.dispatch import ReplyJob
from gateway.routing.fleet import MAX_ORIGINS, PROMPT_RATINGS, PROMPTS, STOPPED, Fleet
from gateway.routing.prompt_features import DIM, features, prompt_text
from gateway.routing.prompt_router import Evidence, PromptRouter, rating_value
from gateway.routing.selection import Selector
from gateway.routing.tracker import Tracker
from gateway.storage import SQLiteStore
from providers.base import Endpoint

ROUTE = "auto"
MODELS = ("prose", "maths")
WORDS = [
    "river",
    "garden",
    "letter",
    "story",
    "friend",
    "morning",
    "colour",
    "autumn",
    "music",
    "window",
]


def math_prompt(rng: random.Random) -> str:
    a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 9)
    return f"Tom has {a} apples and buys {b} more, then shares them among {c}. How many each?"


def prose_prompt(rng: random.Random) -> str:
    topic = " ".join(rng.sample(WORDS, 3))
    return f"Write a short poem about the {topic}, in a gentle and warm tone."


def x_of(text: str) -> np.ndarray:
    return features(*prompt_text({"messages": [{"role": "user", "content": text}]}))


def test_a_prompt_is_a_fixed_size_vector_the_same_in_every_process() -> None:
    rng = random.Random(1)
    x = x_of(math_prompt(rng))
    assert x.shape == (DIM,) and x[0] == 1.0
    assert np.array_equal(x, x_of(math_prompt(random.Random(1))))  # hashing is not salted
    long = x_of("word " * 100_000)  # cut: bounded work whatever the prompt's length
    assert long.shape == (DIM,) and np.isfinite(long).all()


def test_markers_tell_code_and_maths_from_prose() -> None:
    code = x_of("```python\ndef f(x):\n    return x\n```\nWhy does f() fail?")
    maths = x_of("Solve 3x + 5 = 20 and compute 12 * 7 - 4.")
    prose = x_of("Tell me about the history of the Roman empire.")
    assert code[5] > prose[5] and code[5] > 0.5  # code markers
    assert maths[4] > prose[4] and maths[2] > prose[2]  # maths markers, numbers


def test_the_text_learned_from_is_the_first_and_last_user_turn() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "Write a story."},
            {"role": "assistant", "content": "Once..."},
            {"role": "user", "content": [{"type": "text", "text": "Shorter, please."}]},
        ]
    }
    assert prompt_text(body) == ("Write a story.\nShorter, please.", 2)
    assert prompt_text({"prompt": "2+2="}) == ("2+2=", 1)
    assert prompt_text({"input": "hello"}) == ("hello", 1)
    assert prompt_text({"messages": [{"role": "system", "content": "x"}]}) == ("", 0)


def test_one_rating_is_one_observation_on_the_quality_dimensions() -> None:
    assert rating_value({"accuracy": 5, "overall": 3}) == 0.75  # one value, not two
    assert rating_value({"creativity": 5}) is None


def teach(router: PromptRouter, rng: random.Random, n: int, key: str = "") -> None:
    """`n` requests routed by the router; every answer rated: 'maths' is right on maths
    prompts and poor on prose, 'prose' the other way round."""
    for i in range(n):
        kind = rng.choice(("maths", "prose"))
        x = x_of(math_prompt(rng) if kind == "maths" else prose_prompt(rng))
        rid = f"{key}-{i}"
        router.remember(rid, ROUTE, x)
        pick = router.choose(ROUTE, x, MODELS, (1.0, 1.0))
        model = MODELS[pick if pick is not None else rng.randrange(2)]
        router.rate(rid, model, {"accuracy": 5 if model == kind else 1}, key=key)


def new_router(seed: int = 0) -> PromptRouter:
    return PromptRouter({ROUTE: dict.fromkeys(MODELS, 0.5)}, rng=random.Random(seed))


def test_it_learns_which_model_answers_which_kind_of_prompt() -> None:
    router = new_router()
    rng = random.Random(7)
    assert router.choose(ROUTE, x_of("anything"), MODELS, (1.0, 1.0)) is None  # no rating yet
    teach(router, rng, 120)
    fresh = random.Random(99)  # prompts it has never seen
    maths = [router.choose(ROUTE, x_of(math_prompt(fresh)), MODELS, (1, 1)) for _ in range(50)]
    prose = [router.choose(ROUTE, x_of(prose_prompt(fresh)), MODELS, (1, 1)) for _ in range(50)]
    assert maths.count(1) >= 48 and prose.count(0) >= 48
    expected = router.expected(ROUTE, x_of(math_prompt(fresh)))
    assert expected["maths"][0] > 0.75 > 0.25 > expected["prose"][0]


def test_with_a_tolerance_the_cheaper_model_serves_when_it_is_close_enough() -> None:
    router = new_router()
    x = x_of("Summarise this paragraph.")
    for i in range(200):  # both models rated alike on this prompt
        for model in MODELS:
            router.remember(f"{model}{i}", ROUTE, x)
            router.rate(f"{model}{i}", model, {"accuracy": 4 if model == "prose" else 5})
    costs = (1.0, 10.0)
    assert router.choose(ROUTE, x, MODELS, costs) == 1  # the best
    assert router.choose(ROUTE, x, MODELS, costs, tolerance=0.3) == 0  # 0.75 vs 1.0


def test_a_re_rating_replaces_the_first() -> None:
    once, twice = new_router(), new_router()
    x = x_of(prose_prompt(random.Random(3)))
    once.remember("r", ROUTE, x)
    once.rate("r", "prose", {"accuracy": 5})
    twice.remember("r", ROUTE, x)
    twice.rate("r", "prose", {"accuracy": 1})
    twice.rate("r", "prose", {"accuracy": 5})
    a, b = once.posteriors[ROUTE]["prose"], twice.posteriors[ROUTE]["prose"]
    assert a.n == b.n == 1
    assert np.allclose(a.mean, b.mean)


def test_only_remembered_answers_of_per_prompt_routes_teach() -> None:
    router = new_router()
    assert not router.rate("unknown", "prose", {"accuracy": 5})
    router.remember("r", ROUTE, x_of("hi"))
    assert not router.rate("r", "no-such-model", {"accuracy": 5})
    small = PromptRouter({ROUTE: dict.fromkeys(MODELS, 0.5)}, pending=2)
    for rid in ("a", "b", "c"):
        small.remember(rid, ROUTE, x_of("hi"))
    assert not small.rate("a", "prose", {"accuracy": 5})  # the oldest is gone: bounded
    assert small.rate("c", "prose", {"accuracy": 5})


def test_one_key_cannot_outweigh_the_others() -> None:
    """Five keys rate 'prose' well on maths prompts, a tenth as often each as one key
    that rates it badly on them: the many keys decide."""
    router = new_router()
    rng = random.Random(5)
    for i in range(400):
        x = x_of(math_prompt(rng))
        rid = f"r{i}"
        router.remember(rid, ROUTE, x)
        if i % 2:
            router.rate(rid, "prose", {"accuracy": 1}, key="loud")
        else:
            router.rate(rid, "prose", {"accuracy": 5}, key=f"quiet{i % 5}")
    quiet = sum(w for k, w in router.posteriors[ROUTE]["prose"].own.keys.items() if k != "loud")
    loud = router.posteriors[ROUTE]["prose"].own.keys["loud"]
    assert loud < quiet / 4  # loud sent as many ratings as the five others together
    assert router.expected(ROUTE, x_of(math_prompt(rng)))["prose"][0] > 0.7


def test_evidence_survives_the_trip_through_json() -> None:
    router = new_router()
    teach(router, random.Random(2), 30)
    own = router.posteriors[ROUTE]["maths"].own
    back = Evidence.from_dict(own.to_dict())
    assert back.n == own.n and back.keys == own.keys
    assert np.allclose(back.xx, own.xx, atol=1e-5) and np.allclose(back.xy, own.xy)
    with pytest.raises(ValueError):
        Evidence.from_dict({**own.to_dict(), "dim": DIM * 2})


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    async with SQLiteStore(tmp_path / "fleet.db") as opened:
        yield opened


async def test_two_processes_learn_from_each_others_ratings(store: SQLiteStore) -> None:
    """Each process rates half; both end up with the evidence of all, added, never
    counted twice however many rounds run."""
    routers = [new_router(1), new_router(2)]
    fleets = [
        Fleet(origin, Tracker(), Blacklist(), store, prompts=router)
        for origin, router in zip(("a", "b"), routers, strict=True)
    ]
    teach(routers[0], random.Random(3), 60, key="k")
    teach(routers[1], random.Random(4), 40, key="k")
    for _ in range(3):
        for fleet in fleets:
            await fleet.publish()
            await fleet.pull()
    a, b = (r.posteriors[ROUTE] for r in routers)
    for model in MODELS:
        assert a[model].n == pytest.approx(b[model].n)
    assert a["maths"].n + a["prose"].n == pytest.approx(100)
    assert np.allclose(a["maths"].mean, b["maths"].mean, atol=1e-4)
    fresh = random.Random(8)
    assert routers[1].choose(ROUTE, x_of(math_prompt(fresh)), MODELS, (1, 1)) == 1


async def test_a_stopping_process_folds_its_evidence_and_it_counts_once(
    store: SQLiteStore,
) -> None:
    """A process that stops adds its evidence into the stopped processes' row (one per
    route and model) and deletes its own; a running process reads every row again and
    keeps the sum, and a process started later finds it too."""
    routers = [new_router(1), new_router(2), new_router(3)]
    fleets = [
        Fleet(origin, Tracker(), Blacklist(), store, prompts=router)
        for origin, router in zip(("h:1:a", "h:2:b", "h:3:c"), routers, strict=True)
    ]
    for i, (router, n) in enumerate(zip(routers, (60, 40, 20), strict=True)):
        teach(router, random.Random(10 + i), n, key="k")
    for _ in range(2):
        for fleet in fleets:
            await fleet.publish()
            await fleet.pull()
    c = routers[2].posteriors[ROUTE]
    before = {model: (c[model].n, c[model].mean.copy()) for model in MODELS}
    await asyncio.gather(fleets[0].close(), fleets[1].close())
    origins = {key.split("\x1f")[0] for key in await store.load_states(PROMPTS)}
    assert origins == {"h:3:c", STOPPED}
    await fleets[2].pull()
    later = new_router(4)
    await Fleet("h:4:d", Tracker(), Blacklist(), store, prompts=later).load()
    for model in MODELS:
        for view in (c, later.posteriors[ROUTE]):
            assert view[model].n == pytest.approx(before[model][0])
            assert np.allclose(view[model].mean, before[model][1], atol=1e-4)
    assert sum(c[m].n for m in MODELS) == pytest.approx(120)


def test_the_selector_puts_the_model_for_this_prompt_first() -> None:
    config = parse_config(
        {
            "providers": [{"name": "up", "type": "mock"}],
            "models": [{"name": m, "provider": "up"} for m in MODELS],
            "routes": [{"name": ROUTE, "models": list(MODELS), "per_prompt": True}],
            "selection": {"exploration_rate": 0},
        }
    )
    catalog = Catalog(config, {})
    router = new_router()
    teach(router, random.Random(11), 120)
    selector = Selector(Tracker(), Blacklist(), config.selection, prompts=router)

    def first(text: str, response_id: str) -> str:
        body = {"model": ROUTE, "messages": [{"role": "user", "content": text}]}
        job = ReplyJob("req", Endpoint.CHAT, catalog.resolve(ROUTE, "text-to-text"), body)
        job.response_id = response_id
        return selector.rank(job)[0].name

    rng = random.Random(12)
    assert first(math_prompt(rng), "m1") == "maths"
    assert first(prose_prompt(rng), "p1") == "prose"
    assert router.rate("m1", "maths", {"accuracy": 5})  # the features wait for the rating


def test_an_answer_another_worker_gave_is_learned_from_its_stored_prompt() -> None:
    """With payloads logged, the store has the prompt: the rating teaches as if the
    features had waited here (the same features: the hashing is the same everywhere)."""
    here, there = new_router(), new_router()
    prompt = math_prompt(random.Random(6))
    here.remember("r", ROUTE, x_of(prompt))
    here.rate("r", "maths", {"accuracy": 5})
    stored = orjson.dumps([{"role": "user", "content": prompt}]).decode()
    assert there.rate("r", "maths", {"accuracy": 5}, stored=(ROUTE, stored))
    assert np.allclose(here.posteriors[ROUTE]["maths"].mean, there.posteriors[ROUTE]["maths"].mean)
    assert not there.rate("q", "maths", {"accuracy": 5}, stored=("other-route", stored))
    assert not there.rate("q", "maths", {"accuracy": 5}, stored=(ROUTE, None))


def test_the_summary_shows_what_each_learner_rests_on() -> None:
    router = new_router()
    assert [r["ratings"] for r in router.summary()] == [0, 0]
    teach(router, random.Random(7), 80, key="k")
    rows = {r["model"]: r for r in router.summary()}
    assert rows["maths"]["ratings"] + rows["prose"]["ratings"] == 80
    assert rows["maths"]["keys"] == 1
    assert 1 <= rows["maths"]["mean_rating"] <= 5
    # each model is right on half the prompts: its expectations spread far apart
    assert rows["maths"]["expected_spread"] > 1.0 and rows["prose"]["expected_spread"] > 1.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_stopped_processes_evidence_is_folded_not_kept_apart(store: SQLiteStore) -> None:
    """Every restart is a new origin: past MAX_ORIGINS, the evidence of the long silent
    ones is summed into one (memory stays bounded) and still counts, exactly once."""
    for i in range(MAX_ORIGINS + 8):  # processes that rated once each, then stopped
        router = new_router(i)
        router.remember("r", ROUTE, x_of(math_prompt(random.Random(i))))
        router.rate("r", "maths", {"accuracy": 5})
        await Fleet(f"dead{i}", Tracker(), Blacklist(), store, prompts=router).publish()
    clock = Clock()
    here = new_router()
    fleet = Fleet("here", Tracker(), Blacklist(), store, prompts=here, clock=clock)
    await fleet.load()
    assert here.posteriors[ROUTE]["maths"].n == MAX_ORIGINS + 8
    clock.now += 60  # they stay silent; one process is alive
    live = new_router()
    teach(live, random.Random(1), 5)
    await Fleet("live", Tracker(), Blacklist(), store, prompts=live).publish()
    for _ in range(2):  # the look-back reads the old rows again: not counted twice
        await fleet.pull()
        assert len(fleet._prompt_rows) <= MAX_ORIGINS
        assert sum(p.n for p in here.posteriors[ROUTE].values()) == MAX_ORIGINS + 8 + 5


async def test_a_rating_taken_elsewhere_reaches_the_process_with_the_features(
    store: SQLiteStore,
) -> None:
    """Worker a answered (it holds the features); the rating reached worker b, which has
    no features of it and no stored prompt: b passes the rating on through the store, a
    learns from it, and b then has the evidence through a's."""
    clock = Clock()
    routers = {name: new_router() for name in ("a", "b")}
    fleets = {
        name: Fleet(name, Tracker(), Blacklist(), store, prompts=router, clock=clock)
        for name, router in routers.items()
    }
    routers["a"].remember("r1", ROUTE, x_of(math_prompt(random.Random(1))))
    assert not routers["b"].rate("r1", "maths", {"accuracy": 5}, stored=(ROUTE, None))
    assert not routers["b"].rate("r2", "maths", {"accuracy": 5}, stored=("other", None))
    assert len(routers["b"].outbox) == 1  # only answers of per-prompt routes travel
    for _ in range(3):  # rounds repeat: the rating is learned once
        for fleet in fleets.values():
            await fleet.publish()
            await fleet.pull()
    assert routers["a"].posteriors[ROUTE]["maths"].own.n == 1
    assert routers["b"].posteriors[ROUTE]["maths"].n == 1
    assert routers["b"].posteriors[ROUTE]["maths"].own.n == 0
    clock.now += 60  # every process has pulled it by now: the passed rating is deleted
    await fleets["b"].publish()
    assert await store.load_states(PROMPT_RATINGS) == {}
