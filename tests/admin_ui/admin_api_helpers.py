"""Shared by the admin API tests: a real gateway process seeded with SDK traffic."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai

from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream

TOKEN = "admin-secret-token-42"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
HI = [{"role": "user", "content": "hi"}]
TEXT = ("alpha", "beta", "gamma")


def config(upstream: FakeUpstream, db: Path, **server: Any) -> dict[str, Any]:
    def model(name: str, speed: float, accuracy: float, price: float) -> dict[str, Any]:
        priors = {"speed": speed, "accuracy": accuracy, "creativity": 10 - accuracy}
        pricing = {"input_per_million": price, "output_per_million": 2 * price}
        return {"name": name, "provider": "up", "upstream_model": f"{name}-up",
                "priors": priors, "pricing": pricing}  # fmt: skip

    return {
        "server": {"api_keys": ["test-key"], "admin_token": "${ADMIN_TOKEN_X}", **server},
        "providers": [
            {
                "name": "up",
                "type": "openai",
                "base_url": upstream.url,
                "api_key": "sk-upstream-secret-123456",
                "timeout": 5,
            }
        ],
        "models": [
            model("alpha", 3, 9, 1.0),
            model("beta", 9, 5, 5.0),
            model("gamma", 6, 7, 0.1),
            {"name": "embedder", "provider": "up", "conversation_types": ["embedding"]},
        ],
        "routes": [{"name": "auto", "models": list(TEXT)}],
        # No random exploration and no Thompson draws (exploration_bonus 0): routing
        # follows the ranking exactly, so the rankings can be checked against it.
        "selection": {"exploration_rate": 0, "exploration_bonus": 0, "score_refresh_seconds": 0},
        "storage": {"url": f"sqlite:///{db}", "flush_interval": 0.1},
    }


def wait_for(fetch: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while not ok(value := fetch()):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {value!r}")
        time.sleep(0.02)
    return value


class Seeded:
    def __init__(self, gw: GatewayProcess) -> None:
        self.gw = gw
        self.http = httpx.Client(base_url=gw.url, headers=ADMIN, timeout=10)
        self.sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key="test-key", max_retries=0)
        self.first: list[str] = []
        self.second: list[str] = []
        self.between = 0.0

    def get(self, path: str, status: int = 200, **params: Any) -> Any:
        reply = self.http.get(path, params=params)
        assert reply.status_code == status, reply.text
        return reply.json()

    def chat(self, model: str, optimize: str | None = None) -> Any:
        headers = {"x-gatewise-optimize": optimize} if optimize else {}
        return self.sdk.chat.completions.create(model=model, messages=HI, extra_headers=headers)
