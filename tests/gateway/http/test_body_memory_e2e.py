"""The request bodies a worker holds, bounded all together (`server.max_body_memory`): a
real gateway, a fake upstream that holds its answers, and the official SDKs.

Each request takes its body's bytes and an estimate of what parsing them takes
(gateway.http.body.parsed_size) from the worker's budget, and gives them back when its
answer ends. A body of plain text takes about twice its bytes; one of tiny objects many
times more."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from tests.conftest import upstream_config
from tests.gateway.http.test_client_gone_e2e import within
from tests.gateway.server.test_metrics_e2e import parse, total
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream

BUDGET = 3_000_000  # bytes of memory for every body held at once
HI = [{"role": "user", "content": "hi"}]
HELD = "gatewise_request_body_bytes"
REFUSED = "gatewise_request_body_refusals_total"


def config(upstream: FakeUpstream) -> dict[str, Any]:
    cfg = upstream_config(upstream)
    cfg["server"]["max_body_bytes"] = 4 * 1024 * 1024
    cfg["server"]["max_body_memory"] = BUDGET
    return cfg


def said(size: int) -> list[dict[str, str]]:
    """A user message of `size` bytes of plain text: its body takes about 2 x `size`."""
    return [{"role": "user", "content": "word " * (size // 5)}]


def sdk(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="test-key", max_retries=0)


def claude(gw: GatewayProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="test-key", max_retries=0)


def told_to_retry(error: openai.APIStatusError) -> None:
    """A refusal for want of room, in the OpenAI API's shape: retry shortly."""
    assert error.status_code == 503
    assert error.response.headers["retry-after"] == "1"
    assert error.code == "gateway_overloaded"
    assert "retry shortly" in error.message


def a_pair(
    upstream: FakeUpstream, cfg: dict[str, Any], route: str, content: str
) -> Callable[[], list[str]]:
    """A route `route` of beta and gamma, both answering `content`: what was asked of
    either, so far."""
    upstream.behave("beta-up", content=content)
    upstream.behave("gamma-up", content=content)
    cfg["routes"].append({"name": route, "models": ["beta", "gamma"]})
    return lambda: [m for m in upstream.models_called() if m in ("beta-up", "gamma-up")]


def metrics(gw: GatewayProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    answer = httpx.get(gw.url + "/metrics", timeout=10)  # no admin token: loopback reads it
    assert answer.status_code == 200, answer.text
    return parse(answer.text)


def test_a_body_with_no_room_beside_those_held_is_told_to_retry_in_its_apis_shape(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess]
) -> None:
    gate = threading.Event()
    alpha = upstream.behave("alpha-up", hold=gate)
    gw = start_gateway(config(upstream))
    with sdk(gw) as client, claude(gw) as anthropic_client, ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.chat.completions.create, model="alpha", messages=said(1_000_000))
        assert alpha.held.wait(10)  # its 1 MB body is held (~2 MB of the 3 MB) until it ends
        assert 2_000_000 <= total(metrics(gw), HELD) < BUDGET

        with pytest.raises(openai.InternalServerError) as refused:
            client.chat.completions.create(model="beta", messages=said(600_000))
        told_to_retry(refused.value)

        with pytest.raises(anthropic.InternalServerError) as told:
            anthropic_client.messages.create(model="beta", max_tokens=16, messages=said(600_000))
        assert told.value.status_code == 503
        assert told.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]

        # A small request still fits beside the large one.
        assert client.chat.completions.create(model="beta", messages=HI).model == "beta"
        gate.set()
        assert first.result(timeout=30).model == "alpha"

        # Its answer ended, its share is back: the same 600 KB request now fits.
        within(10, lambda: total(metrics(gw), HELD) == 0)
        assert client.chat.completions.create(model="beta", messages=said(600_000)).model == "beta"
    assert total(metrics(gw), REFUSED) == 2
    # Logged once, with the cause, not once per refusal (the second is counted).
    lines = [orjson.loads(line) for line in gw.logs().splitlines() if line.startswith("{")]
    [line] = [line for line in lines if line.get("cause") == "body_memory"]
    assert line["event"] == "inbound_limit" and line["level"] == "warning"
    assert len([s for s in upstream.seen if s.body["model"] == "beta-up"]) == 2  # refused: none


def test_a_body_of_tiny_objects_counts_what_parsing_it_takes(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess]
) -> None:
    gw = start_gateway(config(upstream))
    tiny = [{} for _ in range(20_000)]  # 60 KB of JSON, over 1 MB of dicts once parsed
    with sdk(gw) as client:
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(model="beta", messages=HI, extra_body={"x": tiny})
        # Alone it would take more than every body together may: it could never fit.
        assert refused.value.status_code == 413
        assert refused.value.code == "request_too_large"
        assert "max_body_memory" in refused.value.message
        # The same bytes of plain text take a fraction of it.
        assert client.chat.completions.create(model="beta", messages=said(60_000)).model == "beta"
    assert upstream.models_called() == ["beta-up"]


def test_a_stream_holds_its_body_until_it_ends(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess]
) -> None:
    upstream.behave("alpha-up", keep_alive_every=0.05)  # one chunk, then never done
    gw = start_gateway(config(upstream))
    with sdk(gw) as client:
        stream = client.chat.completions.create(
            model="alpha", messages=said(1_000_000), stream=True
        )
        with stream:
            assert next(iter(stream)).choices[0].delta.role == "assistant"
            with pytest.raises(openai.InternalServerError) as refused:
                client.chat.completions.create(model="beta", messages=said(600_000))
            assert refused.value.status_code == 503
        # The client left: the stream ended, and its body's share with it.
        within(10, lambda: total(metrics(gw), HELD) == 0)
        assert client.chat.completions.create(model="beta", messages=said(600_000)).model == "beta"


DROPPED = "gatewise_answer_body_refusals_total"
BIG = "word " * 120_000  # a 600 KB answer: about 1.3 MB held, raw and parsed


def test_an_answer_with_no_room_beside_the_bodies_held_is_dropped_and_told_to_retry(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess]
) -> None:
    """Answers are the client's to shape (`n`, images, embeddings): they count with the
    bodies. One that does not fit is dropped, no other model is asked (its answer would
    need the same room), and the client is told to retry in its API's shape."""
    gate = threading.Event()
    alpha = upstream.behave("alpha-up", hold=gate)
    cfg = config(upstream)
    asked_for_big = a_pair(upstream, cfg, "big", BIG)
    gw = start_gateway(cfg)

    with sdk(gw) as client, claude(gw) as anthropic_client, ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.chat.completions.create, model="alpha", messages=said(1_000_000))
        assert alpha.held.wait(10)  # ~2 MB of the 3 MB held until it ends

        with pytest.raises(openai.InternalServerError) as dropped:
            client.chat.completions.create(model="big", messages=HI)
        told_to_retry(dropped.value)
        assert len(asked_for_big()) == 1  # answered once, and no other model asked

        with pytest.raises(anthropic.InternalServerError) as told:
            anthropic_client.messages.create(model="big", max_tokens=16, messages=HI)
        assert told.value.status_code == 503
        assert told.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
        assert len(asked_for_big()) == 2

        gate.set()
        assert first.result(timeout=30).model == "alpha"
        # Its body's share is back, and the dropped answers' shares went with them.
        within(10, lambda: total(metrics(gw), HELD) == 0)
        answer = client.chat.completions.create(model="big", messages=HI)
        assert answer.choices[0].message.content == BIG
    assert total(metrics(gw), DROPPED) == 2
    assert total(metrics(gw), REFUSED) == 0  # no request body was refused
    lines = [orjson.loads(line) for line in gw.logs().splitlines() if line.startswith("{")]
    [line] = [line for line in lines if line.get("cause") == "answer_memory"]
    assert line["level"] == "warning"
    assert "sk-upstream-secret" not in gw.logs()


FRAME = "x" * 600_000  # one stream event of 600 KB (a streamed image's partial frame): ~1.2 MB


def test_a_streams_large_event_with_no_room_is_dropped_before_the_stream_begins_or_midway(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess]
) -> None:
    """A stream's events pass on as they come, but an event is held until it is whole:
    a large one counts with the bodies while it is. With no room before the stream
    began, the client is told to retry as for a whole answer, and no other model is
    asked; midway, the stream ends with the error. Given back once cut."""
    gate = threading.Event()
    alpha = upstream.behave("alpha-up", hold=gate)
    upstream.behave("delta-up", content="hi " + FRAME)  # after a small one
    cfg = config(upstream)
    cfg["models"].append({"name": "delta", "provider": "up", "upstream_model": "delta-up"})
    asked_for_frames = a_pair(upstream, cfg, "frames", FRAME)  # the first event is large
    gw = start_gateway(cfg)

    with sdk(gw) as client, claude(gw) as anthropic_client, ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.chat.completions.create, model="alpha", messages=said(1_000_000))
        assert alpha.held.wait(10)  # ~2 MB of the 3 MB held until it ends

        with pytest.raises(openai.InternalServerError) as dropped:
            client.chat.completions.create(model="frames", messages=HI, stream=True)
        told_to_retry(dropped.value)
        assert len(asked_for_frames()) == 1  # answered once, and no other model asked

        with pytest.raises(anthropic.InternalServerError) as told:
            anthropic_client.messages.create(
                model="frames", max_tokens=16, messages=HI, stream=True
            )
        assert told.value.status_code == 503
        assert told.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
        assert len(asked_for_frames()) == 2

        text = ""
        with pytest.raises(openai.APIError) as midway:
            for chunk in client.chat.completions.create(model="delta", messages=HI, stream=True):
                text += chunk.choices[0].delta.content or ""
        assert text == "hi"  # what came before it reached the client
        assert "retry shortly" in midway.value.message
        heard = ""
        with (
            pytest.raises(anthropic.APIStatusError) as overloaded,
            anthropic_client.messages.stream(model="delta", max_tokens=16, messages=HI) as events,
        ):
            for piece in events.text_stream:
                heard += piece
        assert heard == "hi"
        # An error event a client retries on, as Anthropic's own when overloaded.
        assert overloaded.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
        assert total(metrics(gw), DROPPED) == 4

        gate.set()
        assert first.result(timeout=30).model == "alpha"
        within(10, lambda: total(metrics(gw), HELD) == 0)  # every share given back
        stream = client.chat.completions.create(model="frames", messages=HI, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream) == FRAME
        within(10, lambda: total(metrics(gw), HELD) == 0)
    assert "sk-upstream-secret" not in gw.logs()


HUGE = "word " * 1_600_000  # an 8 MB answer: ~16 MB held, raw and parsed


def slow_reader(gw: GatewayProcess, api: str) -> socket.socket:
    """A client that asks `beta` for HUGE and takes little of it at a time (until it
    reads): most of the answer waits in the worker's buffer."""
    path, body = (
        (b"/v1/chat/completions", orjson.dumps({"model": "beta", "messages": HI}))
        if api == "openai"
        else (b"/v1/messages", orjson.dumps({"model": "beta", "max_tokens": 16, "messages": HI}))
    )
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", gw.port))
    slow.sendall(
        b"POST %s HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer test-key\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (path, len(body), body)
    )
    # Answered and recorded: the worker wrote it all, and the client read none of it.
    within(10, lambda: total(metrics(gw), "gatewise_requests_total", model="beta") == 1)
    return slow


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_an_answer_a_client_has_not_taken_keeps_its_share_until_it_has(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess], api: str
) -> None:
    """The server's last write returns before it drains: an 8 MB answer to a client that
    does not read waits in the worker's buffer. Its share of max_body_memory is held
    until the client has taken it, so that slow readers cannot make a worker hold
    answers beyond the bound."""
    upstream.behave("beta-up", content=HUGE)
    cfg = config(upstream)
    cfg["server"]["max_body_memory"] = 24_000_000  # room for one such answer
    gw = start_gateway(cfg)
    with slow_reader(gw, api) as slow, sdk(gw) as client:
        assert total(metrics(gw), HELD) > 8_000_000
        with pytest.raises(openai.InternalServerError) as dropped:
            client.chat.completions.create(model="beta", messages=HI)
        assert dropped.value.status_code == 503  # no room beside the answer not taken
        said = orjson.loads(read_answer(slow))  # the client takes it now, all of it
        text = said["choices"][0]["message"] if api == "openai" else said["content"][0]
        assert text["content" if api == "openai" else "text"] == HUGE
        within(10, lambda: total(metrics(gw), HELD) == 0)
        again = client.chat.completions.create(model="beta", messages=HI)
        assert again.choices[0].message.content == HUGE


def test_an_answer_not_taken_gives_its_share_back_when_its_client_leaves(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess]
) -> None:
    upstream.behave("beta-up", content=HUGE)
    cfg = config(upstream)
    cfg["server"]["max_body_memory"] = 24_000_000
    gw = start_gateway(cfg)
    slow = slow_reader(gw, "openai")
    assert total(metrics(gw), HELD) > 8_000_000
    slow.close()  # never read: the connection goes, and the buffer with it
    within(10, lambda: total(metrics(gw), HELD) == 0)


def read_answer(sock: socket.socket) -> bytes:
    """The body of an HTTP answer with a Content-Length, read to its end."""
    data = bytearray()
    while b"\r\n\r\n" not in data:
        data += sock.recv(1 << 16)
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    rest = bytearray(body)
    while len(rest) < length:
        rest += sock.recv(1 << 20)
    return bytes(rest)
