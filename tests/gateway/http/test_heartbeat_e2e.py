"""Keep-alive comments on quiet streams (gateway/http/heartbeat.py), end to end: a real
gateway whose `server.stream_keepalive` is 0.2 s, the fake upstream falling silent after
its first chunk, and the official SDKs reading through the comments."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import upstream_config
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream

HI: list[Any] = [{"role": "user", "content": "hi"}]
AUTH = {"authorization": "Bearer test-key"}

pytestmark = pytest.mark.usefixtures("fresh")


@pytest.fixture(scope="module")
def gw(up: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = upstream_config(up, selection={"exploration_rate": 0, "exploration_bonus": 0})
    config["server"]["stream_keepalive"] = 0.2
    with GatewayProcess(config, tmp_path_factory.mktemp("heartbeat-e2e")) as process:
        yield process


def raw_lines(gw: GatewayProcess, model: str) -> list[str]:
    body = {"model": model, "messages": HI, "stream": True}
    url = gw.url + "/v1/chat/completions"
    with httpx.stream("POST", url, json=body, headers=AUTH, timeout=30) as resp:
        assert resp.status_code == 200
        return [line for line in resp.iter_lines() if line]


def test_a_quiet_stream_gets_comments_while_its_upstream_is_silent(
    gw: GatewayProcess, up: FakeUpstream
) -> None:
    up.behave("beta-up", content="first second", pause_after_first=1.5)
    lines = raw_lines(gw, "beta")
    assert lines[0].startswith("data: ") and '"first"' in lines[0]
    quiet = lines[1 : next(i for i, line in enumerate(lines) if i and line.startswith("data: "))]
    # 1.5 s of silence, a round every 0.2 s, a comment for each round with nothing
    # written since the one before: at least three.
    assert len(quiet) >= 3 and set(quiet) == {": keep-alive"}
    assert lines[-1] == "data: [DONE]"


def test_a_stream_that_keeps_writing_gets_no_comment(gw: GatewayProcess, up: FakeUpstream) -> None:
    up.behave("beta-up", content=" ".join(f"w{i}" for i in range(20)))
    lines = raw_lines(gw, "beta")
    assert not [line for line in lines if line.startswith(":")]


def test_the_sdks_read_a_quiet_stream_whole(gw: GatewayProcess, up: FakeUpstream) -> None:
    up.behave("beta-up", content="first second", pause_after_first=0.7)
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="test-key", max_retries=0) as gpt:
        stream = gpt.chat.completions.create(model="beta", messages=HI, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "first second"
    claude = anthropic.Anthropic(base_url=gw.url, api_key="test-key", max_retries=0)
    with claude, claude.messages.stream(model="beta", max_tokens=20, messages=HI) as answer:
        assert "".join(answer.text_stream) == "first second"
