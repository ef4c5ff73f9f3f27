"""providers.factory: plain options in, the right transport or provider out."""

from __future__ import annotations

import subprocess
import sys

import pytest

from providers.aiohttp_transport import AiohttpTransport
from providers.anthropic import AnthropicProvider
from providers.base import Call, Endpoint
from providers.errors import UpstreamServerError
from providers.factory import TRANSPORTS, create_provider, create_transport
from providers.http1.pool import NativeTransport
from providers.httpx_transport import HttpxTransport
from providers.mock.config import MockConfig
from providers.mock.provider import MockProvider
from providers.openai import OpenAIProvider
from providers.transport import Timeout


async def test_create_transport_picks_the_kind() -> None:
    for kind, cls in (
        ("httpx", HttpxTransport),
        ("aiohttp", AiohttpTransport),
        ("native", NativeTransport),
    ):
        transport = create_transport(kind, Timeout(), 4, max_body=1234)
        assert type(transport) is cls
        assert transport.max_body == 1234
        await transport.aclose()


@pytest.mark.parametrize(
    ("kind", "cls"), [("openai", OpenAIProvider), ("anthropic", AnthropicProvider)]
)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_create_provider_over_http(kind: str, cls: type, transport: str) -> None:
    provider = create_provider(
        kind,
        "up",
        base_url="http://127.0.0.1:9/v1",
        api_key="k",
        headers={"x-org": "o"},
        transport=transport,
        timeout=Timeout(5, 1),
        max_connections=3,
        max_body=999,
    )
    try:
        assert type(provider) is cls
        assert provider.name == "up"
        assert provider._transport.max_body == 999
    finally:
        await provider.aclose()


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_an_http_provider_needs_a_base_url(kind: str) -> None:
    with pytest.raises(ValueError, match="needs a base_url"):
        create_provider(kind, "up")


async def test_the_mock_serves_each_model_as_configured() -> None:
    provider = create_provider(
        "mock",
        "sim",
        mock=MockConfig(failure_rate=1.0),
        mock_models={"good": MockConfig(failure_rate=0.0, quality=1.0)},
    )
    assert isinstance(provider, MockProvider)
    body = {"messages": [{"role": "user", "content": "hi"}]}
    reply = await provider.send(Call(Endpoint.CHAT, body, "good"))
    assert reply.body["choices"][0]["finish_reason"] == "stop"
    with pytest.raises(UpstreamServerError, match="simulated"):
        await provider.send(Call(Endpoint.CHAT, body, "other"))


def test_importing_providers_loads_neither_aiohttp_nor_httpx() -> None:
    code = (
        "import sys, providers, providers.factory\n"
        "print(sorted(m for m in ('aiohttp', 'httpx') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
