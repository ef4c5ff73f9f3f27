"""The operator pages and their assets over plain HTTP (no browser)."""

from __future__ import annotations

import re

import httpx

from admin_ui.pages import STATIC_DIR


def test_pages_and_assets_are_served_with_their_types(start_gateway, ui_config) -> None:
    gw = start_gateway(ui_config())
    for path in ("/model-performance", "/feedback"):
        resp = httpx.get(gw.url + path)
        assert resp.status_code == 200, path
        assert resp.headers["content-type"] == "text/html; charset=utf-8"
        assert resp.text.startswith("<!doctype html>")
        assert "script-src 'self'" in resp.headers["content-security-policy"]
        for asset in re.findall(r'(?:src|href)="(/ui/[^"]+)"', resp.text):
            assert httpx.get(gw.url + asset).status_code == 200, asset
    expected = {
        ".js": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".svg": "image/svg+xml",
    }
    shipped = sorted(p for p in STATIC_DIR.iterdir() if p.suffix in expected)
    assert {p.name for p in shipped} >= {"api.js", "charts.js", "dashboard.js", "feedback.js"}
    for path in shipped:
        resp = httpx.get(f"{gw.url}/ui/{path.name}")
        assert resp.status_code == 200, path.name
        assert resp.headers["content-type"] == expected[path.suffix]
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert resp.content == path.read_bytes()
        if path.suffix == ".js":
            # Every module a script imports is shipped too.
            for name in re.findall(r'from "\./([^"]+)"', path.read_text()):
                assert (STATIC_DIR / name).is_file(), f"{path.name} imports missing {name}"


def test_only_static_assets_are_reachable(start_gateway, ui_config) -> None:
    gw = start_gateway(ui_config())
    for path in ("/ui/missing.js", "/ui/dashboard.html", "/ui/..%2Fpages.py", "/ui/"):
        resp = httpx.get(gw.url + path)
        assert resp.status_code == 404, path
        assert "error" in resp.json()


def test_pages_are_public_but_their_data_needs_the_token(start_gateway, ui_config) -> None:
    gw = start_gateway(ui_config(admin_token="page-secret"))
    assert httpx.get(gw.url + "/model-performance").status_code == 200
    assert httpx.get(gw.url + "/feedback").status_code == 200
    assert httpx.get(gw.url + "/ui/style.css").status_code == 200
    assert httpx.get(gw.url + "/performance").status_code == 401
    ok = httpx.get(gw.url + "/performance", headers={"Authorization": "Bearer page-secret"})
    assert ok.status_code == 200
