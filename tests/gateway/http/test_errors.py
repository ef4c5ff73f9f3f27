"""Domain errors become OpenAI-shaped responses in one place, with their status and headers."""

from __future__ import annotations

import orjson
import pytest

from gateway.core.errors import (
    AllModelsBlacklisted,
    Failure,
    GatewayError,
    InvalidFeedback,
    InvalidFilter,
    InvalidRequest,
    LengthRequired,
    ModelUnavailable,
    NoModelAvailable,
    NotFound,
    RejectedByUpstream,
    RequestTooLarge,
    StoreUnavailable,
    UpstreamFailed,
)
from gateway.http.errors import error_response, status_of
from providers.errors import (
    BadRequest,
    ContextLengthExceeded,
    RateLimited,
    UpstreamServerError,
    UpstreamTimeout,
)


def failed(*errors: Exception) -> UpstreamFailed:
    return UpstreamFailed([Failure(f"m{i}", "p", e) for i, e in enumerate(errors)])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (InvalidRequest("x"), 400, "invalid_request_error"),
        (RequestTooLarge("x"), 413, "invalid_request_error"),
        (LengthRequired("x"), 411, "invalid_request_error"),
        (InvalidFeedback("x"), 422, "invalid_request_error"),
        (InvalidFilter("x"), 422, "invalid_request_error"),
        (NotFound("x"), 404, "invalid_request_error"),
        (ModelUnavailable("x"), 503, "server_error"),
        (NoModelAvailable("x"), 503, "server_error"),
        (AllModelsBlacklisted("x", retry_after=5), 503, "server_error"),
        (StoreUnavailable("x"), 503, "server_error"),
        (RejectedByUpstream(BadRequest("x", status=422)), 422, "invalid_request_error"),
        (RejectedByUpstream(BadRequest("x", status=500)), 400, "invalid_request_error"),
        (RejectedByUpstream(ContextLengthExceeded("x", status=400)), 400, "invalid_request_error"),
        (failed(UpstreamServerError("x", status=500)), 502, "server_error"),
        (failed(UpstreamTimeout("x"), UpstreamTimeout("y")), 504, "server_error"),
        (failed(RateLimited("x", status=429)), 503, "server_error"),
        (failed(UpstreamTimeout("x"), RateLimited("y", status=429)), 502, "server_error"),
        (GatewayError("x"), 500, "server_error"),
    ],
)
def test_each_kind_has_its_status(error: GatewayError, status: int, kind: str) -> None:
    assert status_of(error) == (status, kind)


def test_the_body_has_openais_shape_and_retry_after_becomes_a_header() -> None:
    response = error_response(
        AllModelsBlacklisted("all benched", retry_after=2100), {"x-request-id": "r1"}
    )
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2100"
    assert response.headers["x-request-id"] == "r1"
    body = orjson.loads(bytes(response.body))
    assert body == {
        "error": {
            "message": "all benched",
            "type": "server_error",
            "param": None,
            "code": "all_models_blacklisted",
        }
    }


def test_rate_limits_everywhere_say_when_to_come_back() -> None:
    error = failed(
        RateLimited("x", status=429, retry_after=7.0), RateLimited("y", status=429, retry_after=2.2)
    )
    response = error_response(error)
    assert response.headers["retry-after"] == "3"  # the soonest, rounded up
    assert error.code == "upstream_rate_limited"


def test_a_context_length_refusal_names_the_messages() -> None:
    error = RejectedByUpstream(ContextLengthExceeded("too long", status=400))
    assert (error.code, error.param) == ("context_length_exceeded", "messages")
