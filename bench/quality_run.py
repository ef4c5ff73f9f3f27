"""Drives one scenario with one routing strategy and records what every request got.

Strategies:

* ``gatewise``: the real gateway (``python -m gateway serve``, a child process on a
  loopback port) routes each request on the scenario's route; simulated users rate a
  share of the answers through ``POST /v1/feedback``.
* ``round-robin``: the client cycles over the route's models and calls the upstream
  directly, no retry (a plain load balancer; nginx does not retry a 503 by default).
* ``fixed-priority``: the client calls the route's models in their configured order,
  moving on to the next on a 5xx/429/connection error (what most gateways do).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.quality_scenarios import Scenario
from bench.quality_upstream import Hit, ScriptedUpstream, prompt_for

__all__ = ["STRATEGIES", "GatewayProcess", "Record", "Run", "run_scenario"]

STRATEGIES = ("gatewise", "round-robin", "fixed-priority")
ROOT = Path(__file__).resolve().parents[1]
_RETRYABLE = frozenset({0, 429, 500, 502, 503, 504})


@dataclass(slots=True)
class Record:
    """One client request."""

    step: int
    sent: float  # time.monotonic()
    done: float = 0.0
    status: int = 0  # 0: the connection failed
    model: str | None = None  # the model that answered (None when the request failed)
    ratings_before: int = 0  # ratings submitted before this request was sent
    rated: bool = False


@dataclass(slots=True)
class Run:
    scenario: Scenario
    strategy: str
    records: list[Record]
    hits: list[Hit]
    started: float
    seconds: float
    scores: list[dict[str, Any]] | None = None  # the gateway's own ranking at the end


class GatewayProcess:
    """`python -m gateway serve` on a free loopback port; stopped by its own pid only."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / f"gateway-{self.port}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / f"gateway-{self.port}.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def spawn(self) -> None:
        env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        with open(self.log_path, "wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "--config",
                str(self.config_path),
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )

    async def ready(self, session: aiohttp.ClientSession, timeout: float = 30) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.returncode is not None:
                raise RuntimeError(f"the gateway exited early:\n{self.logs()}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(self.url + "/readyz") as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the gateway was not ready in {timeout} s:\n{self.logs()}")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 15)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    async def rankings(
        self, session: aiohttp.ClientSession, optimization: str
    ) -> list[dict[str, Any]] | None:
        """The gateway's scores with their parts (admin API), as evidence for a diagnosis."""
        url = f"{self.url}/performance/rankings?optimization={optimization}"
        try:
            async with session.get(url) as resp:
                data = await resp.json() if resp.status == 200 else None
        except (aiohttp.ClientError, ValueError):
            return None
        try:
            return data["rankings"][optimization]
        except (KeyError, TypeError):
            return None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""


class _Client:
    def __init__(
        self, scenario: Scenario, strategy: str, session: aiohttp.ClientSession, seed: int
    ) -> None:
        self.scenario = scenario
        self.strategy = strategy
        self.session = session
        self.seed = seed
        self.upstream = ""
        self.gateway = ""
        self.ratings = 0

    async def _post(self, url: str, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        try:
            async with self.session.post(url, json=body) as resp:
                data = await resp.read()
                return resp.status, dict(resp.headers), data
        except (aiohttp.ClientError, TimeoutError):
            return 0, {}, b""

    async def send(self, record: Record) -> None:
        step, names = record.step, self.scenario.names
        if self.strategy == "gatewise":
            body = {"model": "bench", "messages": prompt_for(step), "max_tokens": 256}
            status, headers, _ = await self._post(self.gateway + "/v1/chat/completions", body)
            record.status = status
            if status == 200:
                record.model = headers.get("x-gatewise-model")
                await self._rate(record, headers.get("x-gatewise-response-id"))
            return
        order = [names[step % len(names)]] if self.strategy == "round-robin" else names
        for model in order:
            body = {"model": model, "messages": prompt_for(step), "max_tokens": 256}
            status, _, _ = await self._post(self.upstream + "/chat/completions", body)
            record.status = status
            if status == 200:
                record.model = model
                await self._rate(record, None)
                return
            if status not in _RETRYABLE:
                return

    async def _rate(self, record: Record, response_id: str | None) -> None:
        """A simulated user rates a share of the answers from the model's true quality."""
        if record.model is None:
            return
        rating = self.scenario.user_rating(record.model, record.step, self.seed)
        if rating is None:
            return
        if response_id is not None:  # only the gateway learns from it; baselines ignore it
            body = {"response_id": response_id, "overall": rating}
            status, _, _ = await self._post(self.gateway + "/v1/feedback", body)
            if status != 200:
                return
        record.rated = True
        self.ratings += 1


async def _drive(scenario: Scenario, client: _Client) -> tuple[list[Record], float]:
    limiter = asyncio.Semaphore(scenario.concurrency)
    records: list[Record] = []
    tasks: set[asyncio.Task[None]] = set()
    started = time.monotonic()

    async def one(record: Record) -> None:
        try:
            await client.send(record)
        finally:
            record.done = time.monotonic()
            limiter.release()

    for step in range(scenario.requests):
        if scenario.rate:
            wait = started + step / scenario.rate - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        await limiter.acquire()
        record = Record(step, time.monotonic(), ratings_before=client.ratings)
        records.append(record)
        task = asyncio.create_task(one(record))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*list(tasks))
    return records, started


async def run_scenario(
    scenario: Scenario, strategies: list[str], seed: int, workdir: Path
) -> dict[str, Run]:
    """Every strategy in turn against one upstream; the gateway boots during the baselines."""
    upstream = ScriptedUpstream(scenario, seed)
    await upstream.start()
    gateway: GatewayProcess | None = None
    runs: dict[str, Run] = {}
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=30)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            if "gatewise" in strategies:
                gateway = GatewayProcess(scenario.gateway_config(upstream.url, seed), workdir)
                await gateway.spawn()
            for strategy in sorted(strategies, key=lambda s: s == "gatewise"):
                client = _Client(scenario, strategy, session, seed)
                client.upstream = upstream.url
                if gateway is not None and strategy == "gatewise":
                    await gateway.ready(session)
                    client.gateway = gateway.url
                upstream.reset()
                began = time.monotonic()
                records, started = await _drive(scenario, client)
                seconds = time.monotonic() - began
                run = Run(scenario, strategy, records, upstream.hits, started, seconds)
                if gateway is not None and strategy == "gatewise":
                    run.scores = await gateway.rankings(session, scenario.optimization)
                runs[strategy] = run
    finally:
        if gateway is not None:
            await gateway.stop()
        await upstream.stop()
    return {s: runs[s] for s in strategies}
