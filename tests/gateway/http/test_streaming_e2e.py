"""Streaming end to end: SSE through a real gateway, read by the official SDK and httpx."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import upstream_config
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream

HI = [{"role": "user", "content": "hi"}]

pytestmark = pytest.mark.usefixtures("fresh")


@pytest.fixture(scope="module")
def gw(up: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("streaming-e2e")
    config = upstream_config(up, selection={"exploration_rate": 0, "exploration_bonus": 0})
    with GatewayProcess(config, workdir) as process:
        yield process


def wait_for(event: threading.Event, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if event.wait(0.05):
            return True
    return event.is_set()


def test_stream_chunks_are_parsed_and_concatenate_to_the_upstream_content(
    client: openai.OpenAI, up: FakeUpstream
) -> None:
    content = "one two three four five six"
    up.behave("alpha-up", content=content)
    stream = client.chat.completions.create(model="alpha", messages=HI, stream=True)
    chunks = list(stream)
    assert len(chunks) >= len(content.split())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == content
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert {c.model for c in chunks} == {"alpha"}
    ids = {c.id for c in chunks}
    assert len(ids) == 1 and "upstream" not in ids.pop()


def test_stream_without_usage_request_hides_the_usage_chunk_the_gateway_asked_for(
    client: openai.OpenAI, up: FakeUpstream
) -> None:
    stream = client.chat.completions.create(model="alpha", messages=HI, stream=True)
    chunks = list(stream)
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)  # no trailing usage-only chunk
    [seen] = up.calls("/chat/completions")
    assert seen.body["model"] == "alpha-up"
    assert seen.body["stream"] is True
    # the gateway needs the token counts for itself, so it always asks for them
    assert seen.body["stream_options"]["include_usage"] is True


def test_stream_with_usage_request_gets_the_final_usage_chunk(
    client: openai.OpenAI, up: FakeUpstream
) -> None:
    up.behave("alpha-up", content="a b c")
    stream = client.chat.completions.create(
        model="alpha", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 3
    assert last.usage.prompt_tokens == 9
    assert last.model == "alpha"
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_response_headers(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="alpha", messages=HI, stream=True, extra_headers={"x-request-id": "stream-1"}
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.headers["x-gatewise-model"] == "alpha"
    assert raw.headers["x-gatewise-attempts"] == "1"
    assert raw.headers["x-request-id"] == "stream-1"
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)


def leave_after_the_first_chunk(gw: GatewayProcess) -> None:
    """Stream a chat from model alpha, read the first chunk, and close the connection."""
    body = {"model": "alpha", "messages": HI, "stream": True}
    headers = {"authorization": "Bearer test-key"}
    with (
        httpx.Client(timeout=10) as http,
        http.stream("POST", gw.url + "/v1/chat/completions", json=body, headers=headers) as r,
    ):
        assert r.status_code == 200
        assert next(r.iter_bytes()).startswith(b"data: ")


def test_client_disconnect_cancels_the_upstream_request(
    gw: GatewayProcess, up: FakeUpstream
) -> None:
    # 100 words with 0.2 s between them: about 20 s if nobody stops it.
    up.behave("alpha-up", content=" ".join(f"w{i}" for i in range(100)), delay=0.2)
    leave_after_the_first_chunk(gw)
    # the response and the client are closed: the gateway must hang up on the upstream
    assert wait_for(up.disconnected, timeout=8), "the upstream stream was not cancelled"
    assert len(up.calls("/chat/completions")) == 1


def test_a_client_leaving_mid_pause_cancels_the_upstream_at_once(
    gw: GatewayProcess, up: FakeUpstream
) -> None:
    # The upstream pauses 60 s after its first word: the gateway must not wait for the
    # next chunk to notice that the client has gone, nor for its 5 s read timeout.
    up.behave("alpha-up", content="first second", pause_after_first=60)
    leave_after_the_first_chunk(gw)
    assert wait_for(up.disconnected, timeout=3), "the upstream stream was not cancelled"
