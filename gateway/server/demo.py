"""`gatewise demo`: the whole product working within a minute, with no API keys.

Starts the gateway on simulated (`mock`) models that differ in latency, cost,
reliability and quality, drives a steady synthetic stream of real HTTP requests
across conversation types and routes, rates some answers like a user would, and
prints the dashboard URL. Blacklist times are shortened so a failing model is
seen benched and coming back within the minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from gateway.core.config import Config, parse_config

__all__ = ["DEMO_MODELS", "demo_config", "drive", "run_demo"]

# name: (latency ms, input $/M, output $/M, failure rate, true quality, priors a/c/s)
DEMO_MODELS: dict[str, tuple[float, float, float, float, float, tuple[int, int, int]]] = {
    "swift": (25, 0.10, 0.40, 0.0, 0.55, (6, 4, 9)),
    "sage": (220, 3.00, 12.00, 0.0, 0.95, (8, 7, 4)),
    "thrift": (110, 0.02, 0.05, 0.0, 0.45, (5, 5, 6)),
    "muse": (80, 0.50, 1.50, 0.0, 0.80, (7, 9, 6)),
    "shaky": (50, 0.30, 0.90, 0.55, 0.75, (9, 6, 8)),
}


def demo_config(db_path: str, blacklist_seconds: float = 10.0) -> Config:
    models: list[dict[str, Any]] = []
    for i, (name, (latency, cin, cout, fail, quality, (acc, cre, spd))) in enumerate(
        DEMO_MODELS.items()
    ):
        models.append(
            {
                "name": name,
                "provider": "mock",
                "context_window": 32000,
                "pricing": {"input_per_million": cin, "output_per_million": cout},
                "priors": {"accuracy": acc, "creativity": cre, "speed": spd},
                "mock": {
                    "latency_ms": latency,
                    "latency_jitter_ms": latency * 0.2,
                    "failure_rate": fail,
                    "failure_kinds": ["5xx", "timeout", "429"],
                    "quality": quality,
                    "completion_tokens": 20 + 10 * i,
                    "seed": 100 + i,
                },
            }
        )
    models += [
        {
            "name": "embedder",
            "provider": "mock",
            "conversation_types": ["embedding"],
            "pricing": {"input_per_million": 0.01},
            "mock": {"latency_ms": 8},
        },
        {
            "name": "painter",
            "provider": "mock",
            "conversation_types": ["text-to-image"],
            "pricing": {"per_image": 0.02},
            "mock": {"latency_ms": 150},
        },
        {
            "name": "speaker",
            "provider": "mock",
            "conversation_types": ["text-to-audio"],
            "pricing": {"per_second": 0.0002},
            "mock": {"latency_ms": 40},
        },
    ]
    raw = {
        "providers": [{"name": "mock", "type": "mock"}],
        "models": models,
        "routes": [
            {
                "name": "auto",
                "models": ["sage", "muse", "swift", "shaky"],
                "optimization": "accuracy",
            },
            {"name": "fast", "models": ["swift", "thrift", "shaky"], "optimization": "speed"},
            {"name": "cheap", "models": ["thrift", "swift", "shaky"], "optimization": "cost"},
            {"name": "creative", "models": ["muse", "sage", "shaky"], "optimization": "creativity"},
        ],
        "selection": {
            "exploration_rate": 0.05,
            "blacklist_base_seconds": blacklist_seconds,
            "blacklist_max_seconds": blacklist_seconds * 4,
            "seed": 7,
        },
        "storage": {"url": f"sqlite:///{db_path}", "log_payloads": True},
        "server": {"log_level": "warning"},
    }
    return parse_config(raw, source="<demo>")


_PROMPTS = (
    "Summarise the plot of Hamlet.",
    "Write a haiku about latency.",
    "Explain TCP slow start.",
    "Give me three names for a cat.",
)


async def _one(client: httpx.AsyncClient, rng: random.Random, step: int) -> None:
    kind = step % 10
    if kind == 7:
        await client.post("/v1/embeddings", json={"model": "embedder", "input": "hello"})
        return
    if kind == 8 and step % 20 == 8:
        await client.post("/v1/images/generations", json={"model": "painter", "prompt": "a fox"})
        return
    if kind == 9 and step % 30 == 9:
        await client.post(
            "/v1/audio/speech", json={"model": "speaker", "input": "hi", "voice": "alloy"}
        )
        return
    model = rng.choice(["auto", "auto", "fast", "cheap", "creative", "shaky"])
    headers = {"x-gatewise-conversation": f"user-{step % 7}"}
    if rng.random() < 0.15:
        headers["x-gatewise-optimize"] = rng.choice(["speed", "cost", "continuity"])
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": rng.choice(_PROMPTS)}],
    }
    if rng.random() < 0.2:
        body["stream"] = True
        async with client.stream(
            "POST", "/v1/chat/completions", json=body, headers=headers
        ) as resp:
            async for _ in resp.aiter_bytes():
                pass
        return
    resp = await client.post("/v1/chat/completions", json=body, headers=headers)
    served = resp.headers.get("x-gatewise-model")
    if resp.status_code == 200 and served in DEMO_MODELS and rng.random() < 0.35:
        quality = DEMO_MODELS[served][4]
        rating = max(1, min(5, round(1 + 4 * quality + rng.gauss(0, 0.6))))
        creative = max(
            1, min(5, round(1 + 4 * (DEMO_MODELS[served][5][1] / 10) + rng.gauss(0, 0.6)))
        )
        await client.post(
            "/v1/feedback",
            json={
                "response_id": resp.json()["id"],
                "overall": rating,
                "accuracy": rating,
                "creativity": creative,
                "comment": "rated by the demo's simulated user",
            },
        )


async def drive(
    base_url: str,
    rate: float = 12.0,
    concurrency: int = 4,
    seed: int = 1,
    stop: asyncio.Event | None = None,
) -> int:
    """Send synthetic traffic at about `rate` requests/s until `stop` is set."""
    rng = random.Random(seed)
    stop = stop or asyncio.Event()
    sent = 0
    limiter = asyncio.Semaphore(concurrency)

    async def guarded(client: httpx.AsyncClient, step: int) -> None:
        async with limiter:
            with contextlib.suppress(httpx.HTTPError):
                await _one(client, rng, step)

    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        tasks: set[asyncio.Task[None]] = set()
        while not stop.is_set():
            task = asyncio.create_task(guarded(client, sent))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1 / rate)
        for task in tasks:
            task.cancel()
    return sent


async def _main(
    host: str, port: int, duration: float | None, rate: float, db: str, logs: str
) -> None:
    import uvicorn

    from gateway.server.app import create_app

    class Server(uvicorn.Server):
        # Ctrl-C stops the demo cleanly: no re-raised signal after shutdown.
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    app = create_app(demo_config(db))
    server = Server(
        uvicorn.Config(
            app, host=host, port=port, log_level="warning", lifespan="on", access_log=False
        )
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving
            raise SystemExit(f"gatewise demo: could not start on {host}:{port}")
        await asyncio.sleep(0.05)
    base = f"http://{host}:{port}"
    print(f"Gatewise demo is running on simulated models ({', '.join(DEMO_MODELS)}).")
    print(f"  Dashboard:       {base}/model-performance")
    print(f"  Feedback form:   {base}/feedback")
    print(f"  OpenAI base_url: {base}/v1   (any api_key)")
    # The simulated failures log a warning every few seconds: in a file, so that the
    # lines above stay on screen.
    print(f"  Logs:            {logs}")
    print("Press Ctrl-C to stop." if duration is None else f"Stopping after {duration:g} s.")
    sys.stdout.flush()
    stop = asyncio.Event()
    traffic = asyncio.create_task(drive(base, rate, stop=stop))
    if duration is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(serving), duration)
        server.should_exit = True
    await serving
    stop.set()
    sent = await traffic
    print(f"Demo stopped after {sent} synthetic requests; data kept in {db}.")


def run_demo(
    host: str = "127.0.0.1",
    port: int = 8080,
    duration: float | None = None,
    rate: float = 12.0,
    db: str | None = None,
) -> int:
    from gateway.core.logs import configure_logging

    if db is None:
        db = str(Path(tempfile.mkdtemp(prefix="gatewise-demo-")) / "demo.db")
    logs = str(Path(db).with_suffix(".log"))
    with open(logs, "a", encoding="utf-8") as stream:
        configure_logging("warning", stream)
        asyncio.run(_main(host, port, duration, rate, db, logs))
    return 0
