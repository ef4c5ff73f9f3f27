"""A real gateway with traces on: the client's trace reaches the upstream, one hop down."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.conftest import upstream_config
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


def test_the_upstream_gets_a_traceparent_in_the_clients_trace(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess]
) -> None:
    gw = start_gateway(upstream_config(upstream), env={"OTEL_TRACES_EXPORTER": "console"})
    headers = {
        "authorization": "Bearer test-key",
        "traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01",
    }
    body = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}]}
    answer = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    [call] = upstream.calls("/chat/completions")
    version, trace_id, parent, flags = call.headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
    assert parent not in (CLIENT_SPAN, "0" * 16)  # the attempt's own span


def test_without_otel_settings_nothing_is_sent_upstream(
    upstream: FakeUpstream, start_gateway: Callable[..., GatewayProcess]
) -> None:
    gw = start_gateway(upstream_config(upstream))
    headers = {"authorization": "Bearer test-key", "traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"}
    body = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}]}
    assert (
        httpx.post(gw.url + "/v1/chat/completions", json=body, headers=headers).status_code == 200
    )
    [call] = upstream.calls("/chat/completions")
    assert "traceparent" not in call.headers
