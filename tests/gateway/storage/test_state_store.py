"""Component state (stats, blacklist, ...) on every store: upsert, load (all, or changed
since a time), delete."""

from __future__ import annotations

from tests.gateway.storage.helpers import H0, Harness

# ---- behaviour shared by every implementation (the `harness` fixture) ----


async def test_state_upsert_load_delete_survives_reopen(harness: Harness) -> None:
    store = harness.store
    await store.save_states(
        [
            ("stats", "alpha", {"n": 1, "lat": [1.5, 2.0]}),
            ("stats", "beta", {"n": 2}),
            ("blacklist", "alpha", {"until": H0, "level": 1, "nested": {"a": None}}),
        ]
    )
    await store.save_states([("stats", "alpha", {"n": 3})])  # upsert replaces
    assert await store.load_states("stats") == {"alpha": {"n": 3}, "beta": {"n": 2}}
    await store.delete_state("stats", "beta")
    await store.delete_state("stats", "never-there")

    store = await harness.reopen()
    assert await store.load_states("stats") == {"alpha": {"n": 3}}
    assert await store.load_states("blacklist") == {
        "alpha": {"until": H0, "level": 1, "nested": {"a": None}}
    }
    assert await store.load_states("unknown") == {}
    assert (await store.counts())["state"] == 2


async def test_loaded_state_is_a_copy(harness: Harness) -> None:
    data = {"n": 1}
    await harness.store.save_states([("k", "a", data)])
    data["n"] = 99
    loaded = await harness.store.load_states("k")
    loaded["a"]["n"] = 42
    assert await harness.store.load_states("k") == {"a": {"n": 1}}


async def test_a_batch_saving_one_key_twice_keeps_the_last(harness: Harness) -> None:
    await harness.store.save_states(
        [("k", "a", {"v": 1}), ("k", "b", {"v": 1}), ("k", "a", {"v": 2})]
    )
    assert await harness.store.load_states("k") == {"a": {"v": 2}, "b": {"v": 1}}


async def test_load_states_changed_since(harness: Harness) -> None:
    store, clock = harness.store, harness.clock
    clock.now = H0
    await store.save_states(
        [("stats", "a", {"n": 1}), ("stats", "b", {"n": 1}), ("blacklist", "a", {"level": 1})]
    )
    clock.now = H0 + 10
    await store.save_states([("stats", "b", {"n": 2}), ("stats", "c", {"n": 1})])

    recent = {"b": {"n": 2}, "c": {"n": 1}}
    assert await store.load_states("stats", changed_since=H0 + 10) == recent  # inclusive
    assert await store.load_states("stats", changed_since=H0 + 5) == recent
    assert await store.load_states("stats", changed_since=H0 + 10.5) == {}
    everything = {"a": {"n": 1}, **recent}
    assert await store.load_states("stats", changed_since=H0) == everything
    assert await store.load_states("stats") == everything
    assert await store.load_states("blacklist", changed_since=H0 + 5) == {}
    assert await store.load_states("blacklist", changed_since=int(H0)) == {"a": {"level": 1}}

    store = await harness.reopen()  # the stamps are stored
    assert await store.load_states("stats", changed_since=H0 + 5) == recent


async def test_fold_merges_rows_into_another_and_deletes_them(harness: Harness) -> None:
    store = harness.store
    await store.save_states(
        [("usage", "p1\x1fteam", {"n": 2}), ("usage", "p2\x1fteam", {"n": 3}),
         ("usage", "p3\x1fteam", {"n": 5}), ("stats", "p1\x1fteam", {"n": 7})]
    )  # fmt: skip
    seen: list[tuple[object, object]] = []

    def merge(into: dict[str, int] | None, part: dict[str, int]) -> dict[str, int]:
        seen.append((into, part))
        return {"n": (into or {"n": 0})["n"] + part["n"]}

    moves = {"p1\x1fteam": "~all\x1fteam", "p2\x1fteam": "~all\x1fteam", "gone": "~all\x1fteam"}
    assert await store.fold_states("usage", moves, merge) == 2  # "gone" was never there
    assert seen == [(None, {"n": 2}), ({"n": 2}, {"n": 3})]
    assert await store.load_states("usage") == {"p3\x1fteam": {"n": 5}, "~all\x1fteam": {"n": 5}}
    assert await store.load_states("stats") == {"p1\x1fteam": {"n": 7}}  # another kind
    # Folding again finds nothing left to fold: a fold is never counted twice.
    assert await store.fold_states("usage", moves, merge) == 0
    store = await harness.reopen()
    assert (await store.load_states("usage"))["~all\x1fteam"] == {"n": 5}
