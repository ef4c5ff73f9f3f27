"""Component state (stats, blacklist, ...) on every store: upsert, load, delete."""

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
