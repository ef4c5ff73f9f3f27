"""The gateway's own saturation, end to end: when every pooled connection to a healthy
upstream is busy, waiting clients get a 503 with Retry-After after the pool timeout, and
no model is blamed or blacklisted for it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import upstream_config
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream

HI = [{"role": "user", "content": "hi"}]


def test_a_full_pool_answers_503_with_retry_after_and_blames_no_model(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess]
) -> None:
    cfg: dict[str, Any] = upstream_config(upstream)
    cfg["providers"][0].update(max_connections=1, pool_timeout=0.2, timeout=30)
    gw = start_gateway(cfg)
    upstream.behave("alpha-up", delay=4.0)  # slow but healthy: it holds the only connection
    held: list[int] = []
    holder = threading.Thread(
        target=lambda: held.append(
            httpx.post(
                gw.url + "/v1/chat/completions",
                json={"model": "alpha", "messages": HI},
                headers={"Authorization": "Bearer test-key"},
                timeout=30,
            ).status_code
        )
    )
    holder.start()
    deadline = time.monotonic() + 10
    while not upstream.calls("/chat/completions"):
        assert time.monotonic() < deadline, "the first request never reached the upstream"
        time.sleep(0.01)

    with openai.OpenAI(base_url=gw.url + "/v1", api_key="test-key", max_retries=0) as client:
        for _ in range(4):  # more than enough to blacklist a model if it were blamed
            with pytest.raises(openai.APIStatusError) as info:
                client.chat.completions.create(model="auto", messages=HI)
            assert info.value.status_code == 503
            assert info.value.response.headers["retry-after"] == "1"
            error = info.value.response.json()["error"]
            assert error["code"] == "gateway_overloaded"
            assert "retry shortly" in error["message"]
        holder.join(timeout=30)
        assert held == [200]
        answer = client.chat.completions.create(model="auto", messages=HI)
        assert answer.choices[0].message.content == "Hello from the fake upstream."

    assert httpx.get(gw.url + "/performance/blacklisted").json()["data"] == []
    assert len(upstream.calls("/chat/completions")) == 2  # the overloaded ones never left
