"""CORS, end to end: a browser app on another origin can call the gateway. With CORS on,
the proxy's answers go through Starlette's middleware (no fast path), and still carry
every header of their own: ids, the serving model, a limited key's x-ratelimit-*."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.conftest import upstream_config
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream

APP = "https://app.example"
KEY = "sk-team-0001"
CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}


def start(upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess]) -> GatewayProcess:
    config = upstream_config(upstream)
    config["server"]["cors"] = {"allow_origins": [APP]}
    config["server"]["api_keys"] = [
        {"name": "team", "key": KEY, "rate_limit": {"requests_per_minute": 50}}
    ]
    return start_gateway(config)


def test_a_browser_on_an_allowed_origin_gets_the_answer_and_its_headers(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess]
) -> None:
    gw = start(upstream, start_gateway)
    url = gw.url + "/v1/chat/completions"
    preflight = httpx.options(
        url,
        headers={
            "origin": APP,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == APP
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()

    answer = httpx.post(
        url, json=CHAT, headers={"origin": APP, "authorization": f"Bearer {KEY}"}, timeout=10
    )
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == APP
    assert answer.headers["x-gatewise-model"] == answer.json()["model"]
    assert answer.headers["x-gatewise-response-id"] == answer.json()["id"]
    assert answer.headers["x-request-id"].startswith("req_")
    assert answer.headers["x-ratelimit-limit-requests"] == "50"
    assert answer.headers["x-ratelimit-remaining-requests"] == "49"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert int(answer.headers["content-length"]) == len(answer.content)


def test_another_origin_is_not_allowed_and_a_missing_key_still_401s(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess]
) -> None:
    gw = start(upstream, start_gateway)
    url = gw.url + "/v1/chat/completions"
    preflight = httpx.options(
        url,
        headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
    )
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    refused = httpx.post(url, json=CHAT, headers={"origin": APP}, timeout=10)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    assert refused.headers["access-control-allow-origin"] == APP  # the app can read why
