"""A provider behind an egress proxy: the gateway reaches it through a CONNECT tunnel."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Callable, Iterator

import openai
import pytest

from tests.conftest import upstream_config
from tests.providers.http1.native_helpers import ConnectProxy, proxying
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream

HI = [{"role": "user", "content": "hi"}]
PASSWORD = "egress-pa55word"


@pytest.fixture
def egress() -> Iterator[ConnectProxy]:
    """The loopback CONNECT proxy, on its own event loop in a thread."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, object] = {}

    async def serve() -> None:
        async with proxying() as proxy:
            stop = box["stop"] = asyncio.Event()
            box["proxy"] = proxy
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield box["proxy"]  # type: ignore[misc]
    finally:
        loop.call_soon_threadsafe(box["stop"].set)  # type: ignore[attr-defined]
        thread.join(10)
        loop.close()


def test_a_provider_with_a_proxy_is_reached_through_it(
    upstream: FakeUpstream, egress: ConnectProxy, start_gateway: Callable[..., GatewayProcess]
) -> None:
    config = upstream_config(upstream)
    config["providers"][0]["proxy"] = egress.url(f"team:{PASSWORD}")
    gw = start_gateway(config)
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="test-key", max_retries=0) as client:
        reply = client.chat.completions.create(model="alpha", messages=HI)
        streamed = list(client.chat.completions.create(model="alpha", messages=HI, stream=True))
    assert reply.choices[0].message.content == "Hello from the fake upstream."
    assert any(c.choices and c.choices[0].delta.content for c in streamed)
    assert egress.heads and all(
        h.startswith(b"CONNECT 127.0.0.1:%d HTTP/1.1" % upstream.port) for h in egress.heads
    )
    auth = base64.b64encode(f"team:{PASSWORD}".encode()).decode()
    assert all(f"Proxy-Authorization: Basic {auth}".encode() in h for h in egress.heads)
    assert PASSWORD not in gw.logs()


def test_a_proxy_url_the_gateway_cannot_use_is_a_config_error(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess]
) -> None:
    config = upstream_config(upstream)
    config["providers"][0]["proxy"] = f"socks5://team:{PASSWORD}@127.0.0.1:1080"
    with pytest.raises(RuntimeError, match="exited early") as info:
        start_gateway(config)
    text = str(info.value)
    assert "providers[0].proxy" in text and "proxy scheme must be http" in text
    assert PASSWORD not in text
