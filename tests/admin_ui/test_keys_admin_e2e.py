"""Keys made, rotated and revoked at runtime through the admin API, with two real replicas
on one store (a SQLite file and PostgreSQL): an action on one replica holds on the other
within 2 s, secrets are shown once and never again, and bad input gets clear errors."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import upstream_config
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream

HI = [{"role": "user", "content": "hi"}]


def chat(gw: GatewayProcess, key: str, model: str = "alpha") -> httpx.Response:
    return httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": model, "messages": HI},
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )


def until(check: Callable[[], bool], what: str, within: float = 2.0) -> float:
    """Poll until `check()` holds; how long it took (fails past `within` seconds)."""
    began = time.monotonic()
    while not check():
        assert time.monotonic() - began < within, f"not within {within} s: {what}"
        time.sleep(0.02)
    return time.monotonic() - began


def test_a_key_made_on_one_replica_works_on_both_and_rotation_and_revocation_hold(
    upstream: FakeUpstream,
    store_url: str,  # before start_gateway: its schema outlives the gateways using it
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    cfg: dict[str, Any] = upstream_config(upstream)
    cfg["storage"] = {"url": store_url, "flush_interval": 0.2}
    one, two = start_gateway(cfg), start_gateway(cfg)

    made = httpx.post(one.url + "/admin/keys", json={"name": "team-x", "routes": ["auto"]})
    assert made.status_code == 201, made.text
    secret = made.json()["key"]
    assert secret.startswith("gw-") and len(secret) > 40
    assert made.json()["source"] == "runtime" and made.json()["routes"] == ["auto"]
    assert chat(one, secret, "auto").status_code == 200  # at once where it was made
    until(lambda: chat(two, secret, "auto").status_code == 200, "the key reaches replica two")
    assert chat(two, secret, "alpha").status_code == 403  # its scope travels too

    for gw in (one, two):  # never shown again, nor its hash
        listing = httpx.get(gw.url + "/admin/keys").text
        assert secret not in listing and "key_sha256" not in listing and "team-x" in listing

    rotated = httpx.post(two.url + "/admin/keys/team-x/rotate")
    assert rotated.status_code == 200
    fresh = rotated.json()["key"]
    assert fresh != secret and chat(two, secret, "auto").status_code == 401
    until(lambda: chat(one, secret, "auto").status_code == 401, "the old secret dies on one")
    assert chat(one, fresh, "auto").status_code == 200

    assert httpx.patch(one.url + "/admin/keys/team-x", json={"routes": None}).status_code == 200
    until(lambda: chat(two, fresh, "alpha").status_code == 200, "the wider scope on two")

    revoked = httpx.delete(one.url + "/admin/keys/team-x")
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    assert chat(one, fresh, "auto").status_code == 401
    until(lambda: chat(two, fresh, "auto").status_code == 401, "revoked on two")
    again = httpx.post(two.url + "/admin/keys", json={"name": "team-x"})
    assert again.status_code == 409  # a name, once used, stays taken
    assert chat(one, "test-key").status_code == 200  # the configured key is untouched


def test_a_limited_key_made_at_runtime_is_limited_across_the_fleet(
    upstream: FakeUpstream,
    store_url: str,
    start_gateway: Callable[..., GatewayProcess],
) -> None:
    """The replicas start with one plain key and no limits; a key with a rate limit made
    at runtime is counted by the fleet, as a configured one is (its usage shared through
    the store), so N replicas do not let N times its limit through."""
    cfg: dict[str, Any] = upstream_config(upstream)
    cfg["storage"] = {"url": store_url, "flush_interval": 0.2}
    one, two = start_gateway(cfg), start_gateway(cfg)
    made = httpx.post(
        one.url + "/admin/keys",
        json={"name": "metered", "rate_limit": {"requests_per_minute": 4}},
    )
    assert made.status_code == 201, made.text
    secret = made.json()["key"]
    until(lambda: chat(two, secret).status_code == 200, "the key reaches replica two")
    for _ in range(2):
        assert chat(two, secret).status_code == 200  # three on two

    def seen_by_one() -> bool:
        usage = httpx.get(one.url + "/admin/keys/metered/usage").json()["usage"]
        return bool(usage["requests_last_minute"] == 3)

    until(seen_by_one, "replica one counts replica two's requests", within=5.0)
    assert chat(one, secret).status_code == 200  # the fourth of the fleet's minute
    refused = chat(one, secret)
    assert refused.status_code == 429, refused.text  # one's own count alone is 1
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"


def test_bad_runtime_key_requests_get_clear_errors(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess], tmp_path: Path
) -> None:
    cfg: dict[str, Any] = upstream_config(upstream)
    cfg["server"]["api_keys"] = ["test-key", {"name": "from-file", "key": "sk-file"}]
    gw = start_gateway(cfg)
    url = gw.url + "/admin/keys"
    cases = [
        (httpx.post(url, content=b"{not json", headers={"content-type": "application/json"}), 400,
         "parse the JSON body"),
        (httpx.post(url, json={"name": "has space"}), 400, "name"),
        (httpx.post(url, json={"name": "t", "routes": ["nope"]}), 400, "Unknown route or model"),
        (httpx.post(url, json={"name": "t", "secret": "x"}), 400, "Unknown field(s): secret"),
        (httpx.post(url, json={"name": "t", "rate_limit": {"requests_per_minute": -1}}), 400,
         "rate_limit.requests_per_minute"),
        (httpx.post(url, json={"name": "from-file"}), 409, "exists"),
        (httpx.patch(url + "/from-file", json={"routes": ["auto"]}), 409, "configuration file"),
        (httpx.delete(url + "/nobody"), 404, "Unknown API key 'nobody'"),
        (httpx.post(url + "/nobody/rotate"), 404, "Unknown API key 'nobody'"),
    ]  # fmt: skip
    for reply, status, words in cases:
        assert reply.status_code == status, reply.text
        error = reply.json()["error"]
        assert words in error["message"] and set(error) == {"message", "type", "param", "code"}
    assert chat(gw, "sk-file").status_code == 200
