"""A scripted OpenAI-compatible upstream on a loopback port, for the quality benchmark.

One aiohttp server answers POST /v1/chat/completions for every model of a scenario.
What it does for a request is the scenario's truth at the request's step (read from
the prompt, "bench step <n>"): it really waits the model's latency, reports its token
counts in `usage`, fails at its random failure rate and answers 503 during an outage.
Quality is never visible here: only the simulated users' ratings reveal it. Every
attempt is logged, so wasted attempts can be counted whoever sent them.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from dataclasses import dataclass

import orjson
from aiohttp import web

from bench.quality_scenarios import Scenario

__all__ = ["ChatServer", "Hit", "ScriptedUpstream", "prompt_for", "step_of"]

_PREFIX = "bench step "


def prompt_for(step: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{_PREFIX}{step}"}]


def step_of(body: object) -> int | None:
    try:
        content = body["messages"][-1]["content"]  # type: ignore[index]
        return int(content.removeprefix(_PREFIX)) if content.startswith(_PREFIX) else None
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return None


@dataclass(slots=True)
class Hit:
    """One upstream attempt as the upstream saw it."""

    at: float  # time.monotonic() on arrival
    step: int
    model: str
    status: int


class ChatServer:
    """An aiohttp server on a free loopback port answering POST /v1/chat/completions
    with `_chat`: the shape of the benchmarks' fake upstreams."""

    max_body = 1024**2  # aiohttp's default

    url: str = ""
    _runner: web.AppRunner | None = None

    async def _chat(self, request: web.Request) -> web.Response:
        raise NotImplementedError

    async def start(self) -> str:
        app = web.Application(client_max_size=self.max_body)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://127.0.0.1:{port}/v1"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class ScriptedUpstream(ChatServer):
    def __init__(self, scenario: Scenario, seed: int) -> None:
        self.scenario = scenario
        self.seed = seed
        self.hits: list[Hit] = []
        self._tries: dict[tuple[int, str], int] = {}
        self._counter = 0

    def reset(self) -> None:
        """Forget the attempts: the next strategy starts from the same truth."""
        self.hits = []
        self._tries = {}

    async def _chat(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, "body is not JSON")
        model = body.get("model") if isinstance(body, dict) else None
        step = step_of(body)
        if model not in self.scenario.names or step is None:
            return _error(404, f"unknown model {model!r} or no step in the prompt")
        key = (step, model)
        tries = self._tries[key] = self._tries.get(key, 0) + 1
        rng = random.Random(f"{self.seed}:{step}:{model}:{tries}")
        truth = self.scenario.truth(model, step)
        if self.scenario.down(model, step):
            self.hits.append(Hit(arrived, step, model, 503))
            return _error(503, f"{model} is down (scripted outage)")
        if truth.fail_rate and rng.random() < truth.fail_rate:
            self.hits.append(Hit(arrived, step, model, 500))
            return _error(500, f"{model} failed (scripted random failure)")
        self.hits.append(Hit(arrived, step, model, 200))
        jitter = max(0.5, 1 + rng.gauss(0, 0.05))
        await asyncio.sleep(truth.latency_ms * jitter / 1000)
        self._counter += 1
        out = {
            "id": f"chatcmpl-bench{self._counter}",
            "object": "chat.completion",
            "created": 1700000000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "logprobs": None,
                    "message": {"role": "assistant", "content": f"{model} answers step {step}."},
                }
            ],
            "usage": {
                "prompt_tokens": truth.prompt_tokens,
                "completion_tokens": truth.completion_tokens,
                "total_tokens": truth.prompt_tokens + truth.completion_tokens,
            },
        }
        return web.Response(body=orjson.dumps(out), content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "server_error", "code": None}}
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
