"""Without an admin token, a real nginx on the same host does not make outside clients
local: through it the admin API refuses, straight to the gateway it answers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import upstream_config
from tests.support.gateway import GatewayProcess
from tests.support.nginx import running_nginx
from tests.support.upstream import FakeUpstream, free_port

# The deployment's way (forwarding headers, the public Host) and nginx's bare default
# (HTTP/1.0, Host set to the upstream's address, no header added).
LOCATIONS = {
    "forwarding": """
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;""",
    "bare": "",
}


@pytest.mark.parametrize("style", LOCATIONS)
def test_without_a_token_nginx_on_the_same_host_does_not_open_the_admin_api(
    style: str,
    upstream: FakeUpstream,
    start_gateway: Callable[..., GatewayProcess],
    tmp_path: Path,
) -> None:
    gw = start_gateway(upstream_config(upstream))  # no admin_token
    port = free_port()
    conf = f"""
worker_processes 1;
events {{ worker_connections 64; }}
http {{
    access_log off;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{gw.port};{LOCATIONS[style]}
        }}
    }}
}}
"""
    proxied = f"http://127.0.0.1:{port}"
    with running_nginx(conf, tmp_path, proxied + "/healthz"):
        assert httpx.get(proxied + "/healthz").status_code == 200  # the proxy works
        for method, path in (("GET", "/performance"), ("GET", "/admin/responses"),
                             ("DELETE", "/performance/blacklisted/alpha")):  # fmt: skip
            reply = httpx.request(method, proxied + path, headers={"host": "gw.example.com"})
            assert reply.status_code == 403, (style, path, reply.text)
            assert reply.json()["error"]["code"] == "admin_loopback_only"
        direct = httpx.get(gw.url + "/performance")
        assert direct.status_code == 200  # on the host itself, as before
    assert "admin API answers only requests made directly on this host" in gw.logs()
