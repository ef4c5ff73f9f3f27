"""Client keys: named or plain, found by the hash of the secret, with their scope."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from gateway.core.config import ConfigError, KeyConfig, load_config, parse_config
from gateway.core.keys import KeyRing, Tenant


def config(*keys: object) -> dict:
    return {
        "server": {"api_keys": list(keys)},
        "providers": [{"name": "m", "type": "mock"}],
        "models": [{"name": "small", "provider": "m"}, {"name": "large", "provider": "m"}],
        "routes": [{"name": "auto", "models": ["small", "large"]}],
    }


def test_plain_and_named_keys_are_found_by_their_secret_only() -> None:
    hashed = hashlib.sha256(b"team-b-secret").hexdigest()
    cfg = parse_config(
        config(
            "plain-secret",
            {"name": "team-a", "key": "team-a-secret", "routes": ["auto"], "optimization": "cost"},
            {"name": "team-b", "key_sha256": hashed.upper(), "models": ["small"]},
        )
    )
    ring = KeyRing(cfg.server.api_keys)
    assert len(ring) == 3 and not ring.open
    plain = ring.find("plain-secret")
    assert plain == Tenant("key-" + hashlib.sha256(b"plain-secret").hexdigest()[:8])
    team_a = ring.find("team-a-secret")
    assert team_a is not None and team_a.name == "team-a" and team_a.optimization == "cost"
    assert team_a.may_use("auto") and not team_a.may_use("small")
    team_b = ring.find("team-b-secret")
    assert team_b is not None and team_b.may_use("small") and not team_b.may_use("auto")
    assert plain.may_use("anything")
    for wrong in ("", "team-a", hashed, "plain-secret ", "PLAIN-SECRET"):
        assert ring.find(wrong) is None


def test_the_secret_is_not_in_the_configs_repr() -> None:
    cfg = parse_config(config({"name": "team-a", "key": "sk-very-secret"}))
    assert "sk-very-secret" not in repr(cfg)


def test_a_named_key_whose_variable_is_unset_is_off_but_the_gateway_stays_closed() -> None:
    cfg = parse_config(config({"name": "team-a", "key": "${TEAM_A_KEY}"}), env={})
    [key] = cfg.server.api_keys
    assert isinstance(key, KeyConfig) and not key.enabled and key.missing_env == ("TEAM_A_KEY",)
    ring = KeyRing(cfg.server.api_keys)
    assert len(ring) == 0 and not ring.open  # nobody gets in, rather than everybody
    env = {"TEAM_A_KEY": "from-env"}
    ring = KeyRing(parse_config(config({"name": "team-a", "key": "${TEAM_A_KEY}"}), env=env)
                   .server.api_keys)  # fmt: skip
    assert ring.find("from-env") == Tenant("team-a")


def test_no_keys_is_an_open_gateway() -> None:
    assert KeyRing([]).open


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"name": "a"}, "server.api_keys[0]: a key needs exactly one of 'key' and 'key_sha256'"),
        ({"name": "a", "key": "x", "key_sha256": "0" * 64},
         "server.api_keys[0]: a key needs exactly one of 'key' and 'key_sha256'"),
        ({"name": "a", "key_sha256": "abc"}, "server.api_keys[0].key_sha256: String should match"),
        ({"name": "has space", "key": "x"}, "server.api_keys[0].name: String should match"),
        ({"name": "a", "key": "x", "routes": ["nope"]},
         "server.api_keys[0].routes[0]: unknown route 'nope'"),
        ({"name": "a", "key": "x", "models": ["auto"]},
         "server.api_keys[0].models[0]: unknown model 'auto'"),
        ({"name": "a", "key": "x", "optimization": "cheap"},
         "server.api_keys[0].optimization: Input should be"),
        ({"name": "a", "key": "x", "budget_usd": 5}, "server.api_keys[0].budget_usd: unknown key"),
        (7, "server.api_keys[0]: expected a key (a string) or a mapping with name and key"),
    ],
)  # fmt: skip
def test_a_malformed_key_is_named_by_its_path(tmp_path: Path, entry: object, expected: str) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config(entry)))
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert expected in str(info.value)


def test_two_keys_with_one_name_are_refused() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(config({"name": "a", "key": "x"}, {"name": "a", "key": "y"}))
    assert "server.api_keys: the name 'a' is used twice" in str(info.value)


def test_runtime_keys_join_the_ring_and_revoking_them_all_never_opens_it() -> None:
    ring = KeyRing([])
    assert ring.open
    runtime = {hashlib.sha256(b"gw-made").hexdigest(): Tenant("made")}
    ring.set_runtime(runtime, ever=True)
    assert not ring.open and ring.find("gw-made") == Tenant("made")
    ring.set_runtime({}, ever=True)  # revoked
    assert ring.find("gw-made") is None and not ring.open
    assert ring.configured() == []


def test_a_runtime_key_found_once_is_found_as_it_is_now() -> None:
    ring = KeyRing(["plain"])
    hashed = hashlib.sha256(b"gw-made").hexdigest()
    ring.set_runtime({hashed: Tenant("made")}, ever=True)
    assert ring.find("gw-made") == Tenant("made")
    # Its settings change (the admin narrowed it): the next request sees the new ones.
    narrowed = Tenant("made", allowed=frozenset({"auto"}))
    ring.set_runtime({hashed: narrowed}, ever=True)
    assert ring.find("gw-made") == narrowed
    # Rotated: the old secret stops working at once, the new one works.
    ring.set_runtime({hashlib.sha256(b"gw-new").hexdigest(): narrowed}, ever=True)
    assert ring.find("gw-made") is None and ring.find("gw-new") == narrowed
    assert ring.find("plain") is not None and ring.find("plain") == ring.find("plain")


def test_a_remembered_credential_is_forgotten_when_the_runtime_keys_change() -> None:
    """The raw-header memory must not outlive a revocation."""
    ring = KeyRing(["plain"])
    hashed = hashlib.sha256(b"gw-made").hexdigest()
    ring.set_runtime({hashed: Tenant("made")}, ever=True)
    ring.remember(b"Bearer gw-made", Tenant("made"))
    assert ring.recall(b"Bearer gw-made") == Tenant("made")
    ring.set_runtime({hashed: Tenant("made")}, ever=True)  # unchanged: still remembered
    assert ring.recall(b"Bearer gw-made") == Tenant("made")
    ring.set_runtime({}, ever=True)  # revoked
    assert ring.recall(b"Bearer gw-made") is None
    assert ring.recall(b"Bearer never-found") is None
