"""The admin API's OpenAPI description, and rankings that agree with routing."""

from __future__ import annotations

import pytest

from tests.admin_ui.admin_api_helpers import TEXT, Seeded


def test_openapi_describes_every_admin_path(seeded: Seeded) -> None:
    spec = seeded.get("/admin/openapi.json")
    assert spec["openapi"].startswith("3.1")
    assert spec["info"]["title"] and spec["info"]["version"]
    assert spec["components"]["securitySchemes"]["admin"]["scheme"] == "bearer"
    expected = {
        "/performance": "get", "/performance/rankings": "get",
        "/performance/metrics/{model}": "get", "/performance/summary": "get",
        "/performance/blacklisted": "get", "/performance/blacklisted/{model}": "delete",
        "/performance/prompts": "get",
        "/evaluations": "get", "/evaluations/model/{model}": "get",
        "/evaluations/summary": "get", "/admin/responses": "get", "/admin/feedback": "post",
    }  # fmt: skip
    for path, method in expected.items():
        operation = spec["paths"][path][method]
        assert operation["summary"] and "200" in operation["responses"]
        for param in operation.get("parameters", []):
            assert param["in"] in ("query", "path") and "schema" in param
            if param["in"] == "path":
                assert param["required"] is True and "{" + param["name"] + "}" in path


# ---- rankings and routing ------------------------------------------------------------------


def test_rankings_start_from_the_priors(seeded: Seeded) -> None:
    rankings = seeded.get("/performance/rankings")["rankings"]
    assert set(rankings) == {"cost", "accuracy", "creativity", "speed", "continuity"}
    assert rankings["speed"][0]["model"] == "beta"  # speed prior 9
    assert rankings["accuracy"][0]["model"] == "alpha"  # accuracy prior 9
    assert rankings["creativity"][0]["model"] == "beta"  # creativity prior 5
    assert rankings["cost"][0]["model"] == "gamma"  # the cheapest pricing
    assert rankings["speed"][0]["parts"]["prior"] == 0.9


@pytest.mark.parametrize("optimization", ["speed", "accuracy", "creativity", "cost"])
def test_rankings_agree_with_routing(seeded: Seeded, optimization: str) -> None:
    body = seeded.get("/performance/rankings", optimization=optimization)
    assert body["conversation_type"] == "text-to-text"
    ranking = body["rankings"][optimization]
    assert [r["rank"] for r in ranking] == [1, 2, 3]
    assert {r["model"] for r in ranking} == set(TEXT)
    scores = [r["score"] for r in ranking]
    assert scores == sorted(scores, reverse=True)
    for entry in ranking:
        parts = entry["parts"]
        assert {"weight_live", "success_rate", "value", "exploration_bonus"} <= set(parts)
        if optimization != "cost":  # cost has no prior: it is computed from pricing
            assert {"prior", "live"} <= set(parts)
        expected = (parts["value"] + parts["exploration_bonus"]) * parts["success_rate"]
        assert entry["score"] == pytest.approx(expected, abs=1e-5)
    assert seeded.chat("auto", optimization).model == ranking[0]["model"]


def test_summary_totals_equal_the_performance_rows(seeded: Seeded) -> None:
    summary = seeded.get("/performance/summary")
    rows = seeded.get("/performance")["data"]
    assert summary["requests"] == sum(r["requests"] for r in rows)
    assert summary["successes"] == sum(r["successes"] for r in rows)
    assert summary["failures"] == sum(r["failures"] for r in rows)
    assert summary["cost"] == pytest.approx(sum(r["cost"]["total"] for r in rows), abs=1e-6)
    assert summary["success_rate"] == 1.0 and summary["blacklisted"] == []
    by_type = summary["by_conversation_type"]
    assert set(by_type) == {"text-to-text", "embedding"}
    text_rows = [r for r in rows if r["conversation_type"] == "text-to-text"]
    assert by_type["text-to-text"]["requests"] == sum(r["requests"] for r in text_rows)
    assert by_type["embedding"]["busiest_model"] == "embedder"
    assert (
        by_type["text-to-text"]["best_models"]["speed"]
        == (
            seeded.get("/performance/rankings", optimization="speed")["rankings"]["speed"][0][
                "model"
            ]
        )
    )
