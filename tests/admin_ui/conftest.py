"""Fixtures for the operator pages: a mock-only gateway config, the SDK, and headless
Chromium driven by Playwright (the system's /usr/bin/chromium; never downloaded)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.admin_ui.admin_api_helpers import TEXT, TOKEN, Seeded, config, wait_for
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"Chromium is required in CI ({reason})")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed")
    if not os.path.exists(CHROMIUM):
        _unavailable(f"{CHROMIUM} is not installed")
    expect.set_options(timeout=10_000)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def expect(browser: Any) -> Any:
    """Playwright's auto-waiting assertions (imported lazily so that a missing
    playwright package skips, or fails in CI, instead of breaking collection)."""
    from playwright.sync_api import expect

    return expect


@dataclass
class Tab:
    """A page plus every console error and uncaught exception it produced."""

    page: Any
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def tab(browser: Any) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    result = Tab(page)
    page.on("console", lambda m: result.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: result.errors.append(f"pageerror: {exc}"))
    try:
        yield result
    finally:
        context.close()


@pytest.fixture
def ui_config(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """Two text models in a route and an embedding model, all on the built-in mock
    provider with no latency; `extra_models`/`extra_routes` add more."""

    def build(
        extra_models: list[dict[str, Any]] = (),
        extra_routes: list[dict[str, Any]] = (),
        **server: Any,
    ) -> dict[str, Any]:
        mock = {"latency_ms": 0, "completion_tokens": 8}
        return {
            "server": {"api_keys": [], **server},
            "providers": [{"name": "mock", "type": "mock"}],
            "models": [
                {
                    "name": "alpha",
                    "provider": "mock",
                    "pricing": {"input_per_million": 1, "output_per_million": 2},
                    "mock": {**mock, "seed": 1},
                },
                {
                    "name": "beta",
                    "provider": "mock",
                    "pricing": {"input_per_million": 3, "output_per_million": 4},
                    "mock": {**mock, "seed": 2},
                },
                {
                    "name": "embedder",
                    "provider": "mock",
                    "conversation_types": ["embedding"],
                    "mock": {"latency_ms": 0},
                },
                *extra_models,
            ],
            "routes": [{"name": "auto", "models": ["alpha", "beta"]}, *extra_routes],
            "selection": {"exploration_rate": 0, "score_refresh_seconds": 0},
            "storage": {
                "url": f"sqlite:///{tmp_path / 'ui.db'}",
                "log_payloads": True,
                "flush_interval": 0.1,
            },
        }

    return build


@pytest.fixture
def sdk_for() -> Callable[[str], openai.OpenAI]:
    def make(url: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)

    return make


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    upstream = FakeUpstream().start()
    tmp = tmp_path_factory.mktemp("admin")
    gw = GatewayProcess(config(upstream, tmp / "admin.db"), tmp, {"ADMIN_TOKEN_X": TOKEN})
    s = Seeded(gw.start())
    try:
        s.first = [s.chat(m).id for m in TEXT] + [s.chat("auto").id]
        # Between the two groups as the gateway stamped them: an answer's time is taken
        # when the gateway closes it, which can be just after the client has it.
        first = wait_for(lambda: s.get("/evaluations")["data"], lambda rows: len(rows) == 4)
        s.between = max(row["ts"] for row in first) + 1e-6
        assert s.between < time.time()  # so the second group is stamped after it
        s.second = [s.chat(m).id for m in TEXT]
        s.sdk.embeddings.create(model="embedder", input=["a", "b"])
        s.http.post("/admin/feedback", json={"response_id": s.first[0], "overall": 5})
        wait_for(lambda: s.get("/evaluations")["data"], lambda rows: len(rows) == 8)
        yield s
    finally:
        s.sdk.close()
        s.http.close()
        gw.stop()
        upstream.stop()
