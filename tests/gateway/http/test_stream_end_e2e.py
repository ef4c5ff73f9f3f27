"""Every stream the gateway sends ends with exactly one `data: [DONE]`, whatever the
upstream's end looked like: clients that wait for it treat anything else as broken."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.conftest import upstream_config
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream

HI = [{"role": "user", "content": "hi"}]
DONE = b"data: [DONE]\n\n"

pytestmark = pytest.mark.usefixtures("fresh")


@pytest.fixture(scope="module")
def gw(up: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = upstream_config(up, selection={"exploration_rate": 0, "exploration_bonus": 0})
    config["providers"].append(
        {
            "name": "claude",
            "type": "anthropic",
            "base_url": up.url.removesuffix("/v1"),
            "api_key": "sk-ant-upstream-secret-123456",
            "timeout": 5,
        }
    )
    config["models"].append({"name": "sonnet", "provider": "claude", "upstream_model": "sonnet-up"})
    with GatewayProcess(config, tmp_path_factory.mktemp("stream-end")) as process:
        yield process


def raw_stream(gw: GatewayProcess, model: str, **extra: Any) -> bytes:
    body = {"model": model, "messages": HI, "stream": True, **extra}
    headers = {"authorization": "Bearer test-key"}
    with httpx.Client(timeout=10) as http:
        r = http.post(gw.url + "/v1/chat/completions", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return r.content


def events(raw: bytes) -> list[dict[str, Any]]:
    return [
        orjson.loads(block.removeprefix(b"data: "))
        for block in raw.split(b"\n\n")
        if block.startswith(b"data: {")
    ]


def assert_ends_once_cleanly(raw: bytes, text: str) -> None:
    assert raw.endswith(DONE), raw[-200:]
    assert raw.count(DONE) == 1
    chunks = events(raw)
    assert not [c for c in chunks if "error" in c], raw
    said = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert said == text


ENDS = {
    "[DONE] in a read of its own": {"done_apart": 0.05},
    "usage on the finish chunk": {"usage_on_finish": True},
    "usage on the finish chunk, [DONE] apart": {"usage_on_finish": True, "done_apart": 0.05},
    "closed after the finish chunk without [DONE]": {"end_without_done": True},
}


@pytest.mark.parametrize("end", ENDS.values(), ids=list(ENDS))
@pytest.mark.parametrize("usage", [False, True], ids=["no-usage", "include-usage"])
def test_an_openai_compatible_stream_ends_with_one_done(
    gw: GatewayProcess, up: FakeUpstream, end: dict[str, Any], usage: bool
) -> None:
    up.behave("alpha-up", content="one two three", **end)
    extra = {"stream_options": {"include_usage": True}} if usage else {}
    raw = raw_stream(gw, "alpha", **extra)
    assert_ends_once_cleanly(raw, "one two three")
    with_usage = [c for c in events(raw) if c.get("usage")]
    if usage:
        assert with_usage and with_usage[-1]["usage"]["completion_tokens"] == 3
    else:
        assert not with_usage  # usage the gateway asked for stays with the gateway


@pytest.mark.parametrize("usage", [False, True], ids=["no-usage", "include-usage"])
@pytest.mark.parametrize("apart", [0.0, 0.05], ids=["together", "message_stop-apart"])
def test_an_anthropic_stream_ends_with_one_done(
    gw: GatewayProcess, up: FakeUpstream, apart: float, usage: bool
) -> None:
    up.behave("sonnet-up", content="one two three", done_apart=apart)
    extra = {"stream_options": {"include_usage": True}} if usage else {}
    raw = raw_stream(gw, "sonnet", **extra)
    assert_ends_once_cleanly(raw, "one two three")


def test_a_stream_cut_before_its_finish_ends_with_an_error_event_and_done(
    gw: GatewayProcess, up: FakeUpstream
) -> None:
    up.behave("alpha-up", content="one two three", fail_after_chunks=2)
    raw = raw_stream(gw, "alpha")
    assert raw.endswith(DONE) and raw.count(DONE) == 1
    assert "error" in events(raw)[-1]


def test_the_sdk_reads_a_paced_stream_to_its_end(client: openai.OpenAI, up: FakeUpstream) -> None:
    up.behave("alpha-up", content="one two three", done_apart=0.05, usage_on_finish=True)
    chunks = list(client.chat.completions.create(model="alpha", messages=HI, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "one two three"
    )
    assert chunks[-1].choices[0].finish_reason == "stop"
