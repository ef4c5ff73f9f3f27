"""Transports and providers built from plain options: the names a configuration uses.

The gateway turns its YAML into these keyword arguments; nothing here knows its
configuration objects. aiohttp and httpx are imported only when a transport of theirs
is asked for, so a gateway that does not use them never loads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, assert_never, get_args

from providers.anthropic import AnthropicProvider
from providers.base import Provider
from providers.http1.pool import NativeTransport
from providers.mock.config import MockConfig
from providers.mock.provider import MockProvider
from providers.openai import OpenAIProvider
from providers.tls import TlsOptions
from providers.transport import IDLE_TIMEOUT, MAX_BODY, Timeout, Transport

__all__ = ["TRANSPORTS", "ProviderKind", "TransportKind", "create_provider", "create_transport"]

TransportKind = Literal["native", "aiohttp", "httpx"]
ProviderKind = Literal["openai", "anthropic", "mock"]
# Every transport offered: each passes tests/providers/test_conformance.py, which runs
# against every name here.
TRANSPORTS: tuple[TransportKind, ...] = get_args(TransportKind)

_DEFAULT_TIMEOUT = Timeout()


def create_transport(
    kind: TransportKind,
    timeout: Timeout,
    max_connections: int,
    max_body: int = MAX_BODY,
    proxy: str | None = None,
    tls: TlsOptions | None = None,
    idle_timeout: float = IDLE_TIMEOUT,
) -> Transport:
    """`proxy` None: the native transport takes the environment's (HTTPS_PROXY, ...);
    httpx does too, aiohttp does not. `tls` None: the system's roots, no client
    certificate; its ValueError names a file that does not load. `idle_timeout`: how
    long an unused pooled connection is kept."""
    ctx = tls.context() if tls is not None else None
    if kind == "native":
        return NativeTransport(
            timeout, max_connections, max_body=max_body, proxy=proxy, ssl_context=ctx,
            idle_timeout=idle_timeout,
        )  # fmt: skip
    if kind == "aiohttp":
        from providers.aiohttp_transport import AiohttpTransport

        return AiohttpTransport(
            timeout, max_connections, max_body, proxy, ssl_context=ctx, idle_timeout=idle_timeout
        )
    if kind == "httpx":
        from providers.httpx_transport import HttpxTransport

        return HttpxTransport(
            timeout, max_connections, max_body=max_body, proxy=proxy, ssl_context=ctx,
            idle_timeout=idle_timeout,
        )  # fmt: skip
    assert_never(kind)


def create_provider(
    kind: ProviderKind,
    name: str,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    headers: Mapping[str, str] | None = None,
    transport: TransportKind = "native",
    timeout: Timeout = _DEFAULT_TIMEOUT,
    max_connections: int = 256,
    max_body: int = MAX_BODY,
    proxy: str | None = None,
    tls: TlsOptions | None = None,
    mock: MockConfig | None = None,
    mock_models: Mapping[str, MockConfig] | None = None,
) -> Provider:
    """One provider, with a connection pool of its own (the mock has none).

    openai and anthropic need `base_url`; the transport options apply to them only.
    The mock serves each upstream model as `mock_models` says, any other as `mock`.
    """
    if kind == "mock":
        return MockProvider(name, mock_models or {}, mock or MockConfig())
    if not base_url:
        raise ValueError(f"provider '{name}' of type '{kind}' needs a base_url")
    extra = dict(headers) if headers else None
    pool = create_transport(transport, timeout, max_connections, max_body, proxy, tls)
    if kind == "anthropic":
        return AnthropicProvider(name, base_url, pool, api_key, extra)
    if kind == "openai":
        return OpenAIProvider(name, base_url, pool, api_key, extra)
    assert_never(kind)
