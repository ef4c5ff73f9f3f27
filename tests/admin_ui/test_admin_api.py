"""The admin API against a real gateway process seeded with SDK traffic: shapes, filters,
auth, errors, the OpenAPI description, and rankings that agree with routing."""

from __future__ import annotations

import signal
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from admin_ui.auth import AdminAuthMiddleware, is_direct_local
from tests.admin_ui.admin_api_helpers import ADMIN, HI, TEXT, TOKEN, Seeded, config
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream

# ---- auth ----------------------------------------------------------------------------------

ADMIN_GETS = ["/performance", "/performance/rankings", "/performance/metrics/alpha",
              "/performance/summary", "/performance/blacklisted", "/performance/prompts",
              "/evaluations",
              "/evaluations/model/alpha", "/evaluations/summary", "/admin/responses",
              "/admin", "/experiments"]  # fmt: skip


@pytest.mark.parametrize("path", ADMIN_GETS)
def test_admin_token_is_required(seeded: Seeded, path: str) -> None:
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
        reply = httpx.get(seeded.gw.url + path, headers=headers)
        assert reply.status_code == 401, (path, headers)
        assert reply.json()["error"]["code"] == "invalid_admin_token"
    assert httpx.get(seeded.gw.url + path, headers=ADMIN).status_code == 200
    client_key = {"authorization": "Bearer test-key"}  # a client key is not an admin token
    assert httpx.get(seeded.gw.url + path, headers=client_key).status_code == 401


def test_token_protects_writes_too_and_openapi_is_public(seeded: Seeded) -> None:
    url = seeded.gw.url
    assert httpx.delete(url + "/performance/blacklisted/alpha").status_code == 401
    feedback = {"response_id": seeded.first[1], "overall": 1}
    assert httpx.post(url + "/admin/feedback", json=feedback).status_code == 401
    experiment = {
        "name": "x",
        "route": "auto",
        "arms": [{"name": "a", "model": "alpha"}, {"name": "b", "model": "beta"}],
    }
    assert httpx.post(url + "/experiments", json=experiment).status_code == 401
    assert httpx.post(url + "/experiments/x/stop").status_code == 401
    assert httpx.get(url + "/admin/openapi.json").status_code == 200


def _guarded() -> AdminAuthMiddleware:
    async def ok(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/performance", ok), Route("/admin/openapi.json", ok)])
    return AdminAuthMiddleware(app, token=None)


def test_without_a_token_the_admin_api_is_loopback_only() -> None:
    guarded = _guarded()
    remote = TestClient(guarded, client=("10.1.2.3", 5555), base_url="http://127.0.0.1")
    assert remote.get("/performance").status_code == 403
    assert remote.get("/performance").json()["error"]["code"] == "admin_loopback_only"
    assert remote.get("/admin/openapi.json").status_code == 200
    for host in ("127.0.0.1", "::1", "127.0.0.9"):
        for base in ("http://127.0.0.1:8000", "http://localhost", "http://[::1]:8000"):
            local = TestClient(guarded, client=(host, 5555), base_url=base)
            assert local.get("/performance").status_code == 200, (host, base)


RELAYED = [
    {"x-forwarded-for": "203.0.113.9"},
    {"x-forwarded-for": "127.0.0.1"},  # a spoofed "local" is still relayed
    {"x-forwarded-proto": "https"},
    {"x-forwarded-host": "gateway.example.com"},
    {"forwarded": "for=203.0.113.9"},
    {"x-real-ip": "203.0.113.9"},
    {"via": "1.1 proxy"},
    {"x-envoy-external-address": "203.0.113.9"},
    {"host": "gateway.example.com"},  # a proxy passing the public Host, or DNS rebinding
    {"host": "127.0.0.1.evil.example"},
    {"origin": "https://evil.example"},  # another site's page in a local browser
]


@pytest.mark.parametrize("headers", RELAYED, ids=lambda h: next(iter(h.items()))[0])
def test_without_a_token_a_relayed_loopback_request_is_refused(headers: dict[str, str]) -> None:
    local = TestClient(_guarded(), client=("127.0.0.1", 5555), base_url="http://127.0.0.1:8000")
    reply = local.get("/performance", headers=headers)
    assert reply.status_code == 403
    assert reply.json()["error"]["code"] == "admin_loopback_only"
    assert "server.admin_token" in reply.json()["error"]["message"]


def test_without_a_token_a_local_page_may_post_and_an_http10_relay_may_not() -> None:
    local = TestClient(_guarded(), client=("127.0.0.1", 5555), base_url="http://127.0.0.1:8000")
    assert local.get("/performance", headers={"origin": "http://127.0.0.1:8000"}).status_code == 200
    assert local.get("/performance", headers={"origin": "http://localhost:8000"}).status_code == 200
    assert is_direct_local(
        {"type": "http", "http_version": "1.1", "client": ("127.0.0.1", 1),
         "headers": [(b"host", b"localhost:8000")]}
    )  # fmt: skip
    assert not is_direct_local(
        {
            "type": "http",
            "http_version": "1.0",
            "client": ("127.0.0.1", 1),
            "headers": [(b"host", b"127.0.0.1:8000")],
        }
    )  # fmt: skip  (nginx's default proxy_pass speaks HTTP/1.0)


def test_no_token_configured_serves_loopback_clients(
    upstream: FakeUpstream, tmp_path: Path, start_gateway: Callable[..., GatewayProcess]
) -> None:
    gw = start_gateway(config(upstream, tmp_path / "open.db"))  # ${ADMIN_TOKEN_X} unset
    assert httpx.get(gw.url + "/performance").status_code == 200


# ---- shapes -------------------------------------------------------------------------------


def test_performance_rows(seeded: Seeded) -> None:
    body = seeded.get("/performance")
    assert body["object"] == "list" and isinstance(body["generated_at"], float)
    assert body["total"] == len(body["data"]) == 4
    rows = {(r["model"], r["conversation_type"]): r for r in body["data"]}
    assert set(rows) == {(m, "text-to-text") for m in TEXT} | {("embedder", "embedding")}
    alpha = rows[("alpha", "text-to-text")]
    assert alpha["requests"] >= 2 and alpha["successes"] >= 2 and alpha["failures"] == 0
    assert alpha["success_rate"] == 1.0
    assert set(alpha["latency_ms"]) == {"mean", "p50", "p95", "p99", "count"}
    assert alpha["latency_ms"]["count"] == alpha["successes"]
    assert alpha["cost"]["total"] > 0 and alpha["cost"]["per_request"] > 0
    assert alpha["priors"] == {"accuracy": 9, "creativity": 1, "speed": 3}
    assert alpha["evaluated"] >= 2 and alpha["auto_score"] == 1.0
    assert alpha["feedback"]["overall"] == {"mean": 5.0, "count": 1}
    for key in ("blacklisted", "consecutive_failures", "flag_rates", "pricing", "ttft_ms"):
        assert key in alpha


def test_performance_filters_and_paging(seeded: Seeded) -> None:
    typed = seeded.get("/performance", conversationType="embedding")["data"]
    assert [r["model"] for r in typed] == ["embedder"]
    page = seeded.get("/performance", limit=2, offset=1)
    assert page["total"] == 4
    everything = seeded.get("/performance")["data"]
    assert [r["model"] for r in page["data"]] == [r["model"] for r in everything[1:3]]


def test_metrics_of_one_model_with_buckets(seeded: Seeded) -> None:
    body = seeded.get("/performance/metrics/alpha", bucket="minute")
    assert (body["model"], body["provider"]) == ("alpha", "up")
    [row] = body["metrics"]
    assert row["model"] == "alpha"
    series = body["timeseries"]
    assert series["bucket_seconds"] == 60 and series["until"] > series["since"]
    assert series["data"] and all(p["ts"] % 60 == 0 for p in series["data"])
    assert sum(p["requests"] for p in series["data"]) == row["requests"]
    assert (
        seeded.get("/performance/metrics/alpha", bucket="day")["timeseries"]["bucket_seconds"]
        == 86400
    )
    assert (
        seeded.get("/performance/metrics/embedder", conversationType="text-to-text")["metrics"]
        == []
    )


def test_evaluations_listing_and_filters(seeded: Seeded) -> None:
    body = seeded.get("/evaluations")
    assert (body["object"], body["limit"], body["offset"]) == ("list", 100, 0)
    rows = body["data"]
    assert [r["ts"] for r in rows] == sorted((r["ts"] for r in rows), reverse=True)
    for key in ("response_id", "model", "flags", "auto_score", "latency_ms", "feedback"):
        assert key in rows[0]
    rated = {r["response_id"]: r["feedback"] for r in rows}
    assert rated[seeded.first[0]]["overall"] == 5
    embedding = seeded.get("/evaluations", conversationType="embedding")["data"]
    assert [r["model"] for r in embedding] == ["embedder"]
    text = seeded.get("/evaluations", conversationType="text-to-text")["data"]
    assert {r["model"] for r in text} == set(TEXT)

    since = seeded.get("/evaluations", since=seeded.between)["data"]
    assert {r["response_id"] for r in since} >= set(seeded.second[:3])
    assert not {r["response_id"] for r in since} & set(seeded.first)
    until = seeded.get("/evaluations", until=seeded.between)["data"]
    assert {r["response_id"] for r in until} == set(seeded.first)
    iso = datetime.fromtimestamp(seeded.between, UTC).isoformat()
    assert seeded.get("/evaluations", until=iso)["data"] == until

    limited = seeded.get("/evaluations", limit=3, offset=2)
    assert (limited["limit"], limited["offset"]) == (3, 2)
    assert limited["data"] == rows[2:5]


def test_evaluations_of_one_model_and_summary(seeded: Seeded) -> None:
    one = seeded.get("/evaluations/model/alpha")
    assert one["model"] == "alpha"
    [evaluation] = one["evaluation"]
    assert evaluation["count"] >= 2 and evaluation["scored"] == evaluation["count"]
    assert evaluation["flag_rates"] == {}
    assert one["feedback"][0]["overall"] == 5.0
    assert {r["model"] for r in one["responses"]} == {"alpha"}
    assert [h["response_id"] for h in one["feedback_history"]] == [seeded.first[0]]

    summary = seeded.get("/evaluations/summary", bucket="hour")
    overall = summary["overall"]
    assert overall["responses"] >= 8
    assert overall["evaluated"] == overall["responses"] - 1  # embeddings are not judged
    assert overall["mean_auto_score"] == 1.0
    assert overall["rated_responses"] == 1
    assert overall["feedback_means"]["overall"] == 5.0
    assert isinstance(summary["suggestions"], list)
    assert summary["trend"] and all(b["ts"] % 3600 == 0 for b in summary["trend"])
    assert {m["model"] for m in summary["models"]} == {*TEXT, "embedder"}


def test_recent_responses_and_one_response(seeded: Seeded) -> None:
    recent = seeded.get("/admin/responses", limit=2)
    assert recent["object"] == "list" and len(recent["data"]) == 2
    rid = seeded.first[1]
    one = seeded.get(f"/admin/responses/{rid}")
    assert (one["response_id"], one["model"]) == (rid, "beta")
    missing = seeded.get("/admin/responses/chatcmpl-nope", status=404)
    assert missing["error"]["code"] == "response_not_found"


def test_blacklist_listing_and_release(
    upstream: FakeUpstream, tmp_path: Path, start_gateway: Callable[..., GatewayProcess]
) -> None:
    cfg = config(upstream, tmp_path / "bl.db")
    cfg["models"][0]["fallbacks"] = ["beta", "gamma"]  # alpha, asked by name, falls back
    gw = start_gateway(cfg, {"ADMIN_TOKEN_X": TOKEN})
    upstream.behave("alpha-up", status=500)
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="test-key", max_retries=0) as sdk:
        for _ in range(3):
            assert sdk.chat.completions.create(model="alpha", messages=HI).model != "alpha"
    with httpx.Client(base_url=gw.url, headers=ADMIN) as http:
        [entry] = http.get("/performance/blacklisted").json()["data"]
        assert entry["model"] == "alpha" and entry["consecutive_failures"] == 3
        assert 0 < entry["seconds_left"] <= 3600
        assert http.get("/performance/summary").json()["blacklisted"] == ["alpha"]
        assert http.delete("/performance/blacklisted/alpha").json() == {
            "model": "alpha",
            "cleared": True,
        }
        assert http.get("/performance/blacklisted").json()["data"] == []
        assert http.delete("/performance/blacklisted/alpha").json()["cleared"] is False
    assert gw.stop() in (0, -signal.SIGTERM)


# ---- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/performance/metrics/nope"), ("GET", "/evaluations/model/nope"),
     ("DELETE", "/performance/blacklisted/nope")],
)  # fmt: skip
def test_unknown_model_is_404(seeded: Seeded, method: str, path: str) -> None:
    reply = seeded.http.request(method, path)
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "model_not_found"
    assert "nope" in reply.json()["error"]["message"]


@pytest.mark.parametrize(
    ("path", "params", "param"),
    [
        ("/performance", {"conversationType": "text-to-smell"}, "conversationType"),
        ("/performance/rankings", {"optimization": "vibes"}, "optimization"),
        ("/evaluations", {"since": "yesterday-ish"}, "since"),
        ("/evaluations", {"limit": "0"}, "limit"),
        ("/evaluations", {"limit": "abc"}, "limit"),
        ("/evaluations", {"offset": "-1"}, "offset"),
        ("/evaluations", {"since": "200", "until": "100"}, "until"),
        ("/performance/metrics/alpha", {"bucket": "fortnight"}, "bucket"),
        ("/evaluations/summary", {"bucket": "week"}, "bucket"),
    ],
)
def test_bad_filters_are_422(seeded: Seeded, path: str, params: dict[str, str], param: str) -> None:
    error = seeded.get(path, status=422, **params)["error"]
    assert error["param"] == param
    assert error["code"] == "invalid_filter"
    assert param in error["message"]


# ---- OpenAPI ----------------------------------------------------------------------------------
