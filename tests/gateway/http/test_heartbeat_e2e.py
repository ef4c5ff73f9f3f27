"""Keep-alive comments on quiet streams (gateway/http/heartbeat.py), end to end: a real
gateway whose `server.stream_keepalive` is 0.2 s, the fake upstream falling silent after
its first chunk, or holding its answer until the test has seen the gateway's early head,
and the official SDKs reading through the comments."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import orjson
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
    # delta falls back to gamma
    config["models"].append(
        {"name": "delta", "provider": "up", "upstream_model": "delta-up", "fallbacks": ["gamma"]}
    )
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


def test_a_stream_whose_answer_has_not_begun_gets_its_head_then_comments(
    gw: GatewayProcess, up: FakeUpstream
) -> None:
    hold = threading.Event()
    up.behave("beta-up", content="late but whole", hold=hold)
    body = {"model": "beta", "messages": HI, "stream": True}
    url = gw.url + "/v1/chat/completions"
    with httpx.stream("POST", url, json=body, headers=AUTH, timeout=30) as resp:
        # The head came while the upstream had not answered at all: no model named yet.
        assert resp.status_code == 200 and not hold.is_set()
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["x-gatewise-response-id"].startswith("chatcmpl-")
        assert "x-gatewise-model" not in resp.headers
        lines = resp.iter_lines()
        assert next(line for line in lines if line) == ": keep-alive"
        hold.set()
        rest = [line for line in lines if line]
    events = [orjson.loads(line[6:]) for line in rest if line.startswith("data: {")]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text == "late but whole" and rest[-1] == "data: [DONE]"
    assert {e["model"] for e in events} == {"beta"}
    assert {e["id"] for e in events} == {resp.headers["x-gatewise-response-id"]}


def test_a_prompt_answer_keeps_its_full_head(gw: GatewayProcess, up: FakeUpstream) -> None:
    body = {"model": "beta", "messages": HI, "stream": True}
    url = gw.url + "/v1/chat/completions"
    with httpx.stream("POST", url, json=body, headers=AUTH, timeout=30) as resp:
        assert resp.headers["x-gatewise-model"] == "beta"
        assert resp.headers["x-gatewise-attempts"] == "1"
        assert not [line for line in resp.iter_lines() if line.startswith(":")]


def test_fallback_after_the_early_head_still_answers(gw: GatewayProcess, up: FakeUpstream) -> None:
    hold = threading.Event()
    up.behave("delta-up", status=500, hold=hold, times=1)
    up.behave("gamma-up", content="from the fallback")
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="test-key", max_retries=0) as gpt:
        stream = gpt.chat.completions.create(model="delta", messages=HI, stream=True)
        assert "x-gatewise-model" not in stream.response.headers  # out before delta failed
        hold.set()
        chunks = [c for c in stream if c.choices]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "from the fallback"
    assert {c.model for c in chunks} == {"gamma"}
    assert up.models_called() == ["delta-up", "gamma-up"]


def test_a_failure_after_the_early_head_is_an_error_event(
    gw: GatewayProcess, up: FakeUpstream
) -> None:
    hold = threading.Event()
    up.behave("alpha-up", status=503, hold=hold)
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="test-key", max_retries=0) as gpt:
        stream = gpt.chat.completions.create(model="alpha", messages=HI, stream=True)
        assert stream.response.status_code == 200
        hold.set()
        with pytest.raises(openai.APIError, match="alpha") as failed:
            list(stream)
    assert "sk-upstream-secret" not in str(failed.value)
    body = {"model": "alpha", "messages": HI, "stream": True}
    hold.clear()
    url = gw.url + "/v1/chat/completions"
    with httpx.stream("POST", url, json=body, headers=AUTH, timeout=30) as resp:
        lines = resp.iter_lines()
        assert next(line for line in lines if line) == ": keep-alive"
        hold.set()
        rest = [line for line in lines if line]
    error = orjson.loads(rest[0].removeprefix("data: "))["error"]
    assert error["code"] == "upstream_error" and "alpha" in error["message"]
    assert rest[1:] == ["data: [DONE]"]


def test_anthropic_clients_get_the_early_head_and_the_answer(
    gw: GatewayProcess, up: FakeUpstream
) -> None:
    hold = threading.Event()
    up.behave("beta-up", content="late but whole", hold=hold)
    claude = anthropic.Anthropic(base_url=gw.url, api_key="test-key", max_retries=0)
    with claude, claude.messages.stream(model="beta", max_tokens=20, messages=HI) as answer:
        assert "x-gatewise-model" not in answer.response.headers
        hold.set()
        assert "".join(answer.text_stream) == "late but whole"
    up.behave("alpha-up", status=503, hold=(failing := threading.Event()))
    claude = anthropic.Anthropic(base_url=gw.url, api_key="test-key", max_retries=0)
    with claude, claude.messages.stream(model="alpha", max_tokens=20, messages=HI) as answer:
        failing.set()
        with pytest.raises(anthropic.APIStatusError, match="alpha"):
            "".join(answer.text_stream)
