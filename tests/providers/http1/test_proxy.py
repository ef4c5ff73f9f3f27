"""providers/http1/proxy.py through NativeTransport: upstreams reached by a CONNECT tunnel."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path

import pytest

from providers.aiohttp_transport import AiohttpTransport
from providers.errors import UpstreamConnectionError
from providers.http1.pool import NativeTransport
from providers.http1.proxy import Proxy, proxy_for
from providers.httpx_transport import HttpxTransport
from providers.transport import Timeout
from tests.providers.http1.native_helpers import JSON, OK, answering, proxying, self_signed, serving

PASSWORD = "pr0xy-s3cret"


def _transport(proxy: str | None = None, **kwargs) -> NativeTransport:
    return NativeTransport(Timeout(total=5, connect=5), proxy=proxy, **kwargs)


async def test_http_through_a_configured_proxy_with_credentials() -> None:
    async with serving(answering(OK)) as srv, proxying() as proxy:
        t = _transport(proxy.url(f"team:{PASSWORD.replace('0', '%30')}"))
        try:
            for _ in range(3):
                resp = await t.request("POST", srv.url(), JSON, b"{}")
                assert (resp.status, resp.body) == (200, b"hello")
        finally:
            await t.aclose()
    (head,) = proxy.heads  # one tunnel, kept alive for all three requests
    assert head.startswith(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n" % srv.port)
    auth = base64.b64encode(f"team:{PASSWORD}".encode()).decode()
    assert f"Proxy-Authorization: Basic {auth}".encode() in head
    assert srv.accepted == 1 and len(srv.requests) == 3
    assert srv.requests[0].header("proxy-authorization") is None  # only the proxy sees it


async def test_https_runs_tls_inside_the_tunnel(tmp_path: Path) -> None:
    pair = self_signed(tmp_path)
    if pair is None:
        pytest.skip("neither the cryptography package nor the openssl CLI is available")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(*pair)
    trusting = ssl.create_default_context(cafile=str(pair[0]))
    async with serving(answering(OK), ssl_context=server_ctx) as srv, proxying() as proxy:
        t = _transport(proxy.url(), ssl_context=trusting)
        try:
            url = f"https://localhost:{srv.port}/x"  # verified by name, through the tunnel
            assert (await t.request("GET", url, {})).body == b"hello"
            stream = await t.stream("GET", url, {})
            assert await stream.aread() == b"hello"
            await stream.aclose()
        finally:
            await t.aclose()
    assert proxy.heads[0].startswith(b"CONNECT localhost:%d " % srv.port)
    assert srv.requests[0].header("host") == f"localhost:{srv.port}"


async def test_a_refused_tunnel_is_a_connection_failure_without_the_credentials() -> None:
    async with serving(answering(OK)) as srv, proxying(status=407) as proxy:
        t = _transport(proxy.url(f"team:{PASSWORD}"))
        try:
            with pytest.raises(UpstreamConnectionError) as info:
                await t.request("GET", srv.url(), {})
        finally:
            await t.aclose()
    assert info.value.kind == "connection"
    assert str(info.value) == "upstream connection failed: proxy refused the tunnel: HTTP 407"
    assert PASSWORD not in repr(info.value.__cause__) and srv.accepted == 0
    assert t._open == 0


async def test_the_environment_proxy_carries_named_hosts(monkeypatch) -> None:
    async with serving(answering(OK)) as srv, proxying() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url())
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        t = _transport()
        try:  # never resolved here: the proxy gets the name (and maps it to loopback)
            resp = await t.request("GET", f"http://upstream.test:{srv.port}/x", {})
        finally:
            await t.aclose()
    assert resp.body == b"hello"
    assert proxy.heads[0].startswith(b"CONNECT upstream.test:%d " % srv.port)


def test_which_proxy_applies(monkeypatch) -> None:
    for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert proxy_for("api.openai.com", True, None) is None
    monkeypatch.setenv("HTTPS_PROXY", "http://egress:3128")
    assert proxy_for("api.openai.com", True, None) == Proxy("egress", 3128)
    assert proxy_for("api.openai.com", False, None) is None  # http takes HTTP_PROXY
    for loopback in ("127.0.0.1", "::1", "localhost", "127.9.9.9"):
        assert proxy_for(loopback, True, None) is None
    monkeypatch.setenv("NO_PROXY", "internal.example, .corp")
    assert proxy_for("internal.example", True, None) is None
    assert proxy_for("llm.corp", True, None) is None
    configured = Proxy("explicit", 8080)
    assert proxy_for("127.0.0.1", True, configured) is configured  # named: for every host


BASIC = "Basic " + base64.b64encode(b"a:b:c@d").decode()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://egress:3128", Proxy("egress", 3128)),
        ("egress.corp", Proxy("egress.corp", 80)),
        ("http://a%3Ab:c%40d@egress:1", Proxy("egress", 1, BASIC)),
    ],
)
def test_proxy_urls(url: str, expected: Proxy) -> None:
    assert Proxy.parse(url) == expected


@pytest.mark.parametrize("url", ["https://egress:3128", "socks5://egress:1080", "http://:3128"])
def test_proxy_urls_that_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        Proxy.parse(url)


@pytest.mark.parametrize("kind", [AiohttpTransport, HttpxTransport])
async def test_the_other_transports_take_the_configured_proxy(kind: type) -> None:
    async with serving(answering(OK)) as srv, proxying() as proxy:
        t = kind(Timeout(total=5, connect=5), 8, proxy=proxy.url())
        try:
            assert (await t.request("GET", srv.url(), {})).body == b"hello"
        finally:
            await t.aclose()
    assert proxy.heads[0].startswith(b"GET http://127.0.0.1:%d/x HTTP/1.1" % srv.port)
