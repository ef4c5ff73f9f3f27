"""The upstream error hierarchy: classes decide blame, `kind` names them in records."""

from __future__ import annotations

import orjson
import pytest

from providers import errors
from providers.errors import (
    BadRequest,
    CapacityExhausted,
    ClientGone,
    ContextLengthExceeded,
    GatewayStopped,
    InvalidResponse,
    NoMemory,
    ProviderError,
    RateLimited,
    RequestRejected,
    ResponseTooLarge,
    TransportError,
    UnsupportedRequest,
    UpstreamAuthError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamNotFound,
    UpstreamServerError,
    UpstreamStatusError,
    UpstreamTimeout,
    classify_status,
    redact,
    upstream_json,
)

# The names stored in the attempts table and shown on the dashboard: never rename one.
KINDS = {
    UpstreamTimeout: "timeout",
    UpstreamConnectionError: "connection",
    InvalidResponse: "invalid_body",
    ResponseTooLarge: "invalid_body",
    UpstreamServerError: "server_error",
    RateLimited: "rate_limited",
    UpstreamAuthError: "auth",
    UpstreamNotFound: "not_found",
    BadRequest: "bad_request",
    ContextLengthExceeded: "context_length",
    UnsupportedRequest: "unsupported",
    CapacityExhausted: "pool_exhausted",
    ClientGone: "client_gone",
    GatewayStopped: "gateway_stopped",
    NoMemory: "memory_busy",
}
CATEGORIES = (
    ProviderError,
    UpstreamError,
    TransportError,
    UpstreamStatusError,
    RequestRejected,
)
# The kinds that count against the model (RETRYABLE_KINDS before the hierarchy).
BLAMED = {
    "timeout",
    "connection",
    "invalid_body",
    "server_error",
    "rate_limited",
    "auth",
    "not_found",
}


def test_every_raisable_class_keeps_its_kind() -> None:
    for cls, kind in KINDS.items():
        assert cls.kind == kind
        assert cls("m").kind == kind


def test_the_module_defines_no_class_that_is_not_listed_here() -> None:
    defined = {
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, ProviderError)
    }
    assert defined == set(KINDS) | set(CATEGORIES)


def test_blame_follows_the_two_branches() -> None:
    for cls, kind in KINDS.items():
        assert cls.blames_model is (kind in BLAMED), cls
        assert issubclass(cls, UpstreamError) is cls.blames_model
        # the gateway's saturation, the client's leaving, its stopping: not the upstream's
        own = cls in (CapacityExhausted, ClientGone, GatewayStopped, NoMemory)
        assert issubclass(cls, RequestRejected) is not (cls.blames_model or own)


def test_the_shape_of_the_tree() -> None:
    assert issubclass(UpstreamTimeout, TransportError)
    assert issubclass(UpstreamConnectionError, TransportError)
    assert issubclass(TransportError, UpstreamError)
    assert issubclass(ResponseTooLarge, InvalidResponse)
    assert not issubclass(InvalidResponse, TransportError)
    for cls in (UpstreamServerError, RateLimited, UpstreamAuthError, UpstreamNotFound):
        assert issubclass(cls, UpstreamStatusError)
    assert issubclass(ContextLengthExceeded, BadRequest)
    assert issubclass(UnsupportedRequest, RequestRejected)


@pytest.mark.parametrize("cls", CATEGORIES)
def test_a_category_is_never_raised_itself(cls: type[ProviderError]) -> None:
    with pytest.raises(TypeError, match="category"):
        cls("m")


def test_fields() -> None:
    exc = RateLimited("slow down", status=429, retry_after=2.5)
    assert (exc.message, exc.status, exc.retry_after, exc.param) == ("slow down", 429, 2.5, None)
    assert str(exc) == "slow down"
    assert BadRequest("no", param="temperature").param == "temperature"


def test_prefixed_keeps_the_class_and_the_fields() -> None:
    exc = RateLimited("slow down", status=429, retry_after=3.0, param="p")
    named = exc.prefixed("groq")
    assert type(named) is RateLimited
    assert named.message == str(named) == "groq: slow down"
    assert (named.status, named.retry_after, named.param) == (429, 3.0, "p")


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (500, b'{"error": {"message": "boom"}}', UpstreamServerError),
        (502, b"<html>bad gateway</html>", UpstreamServerError),
        (503, b"", UpstreamServerError),
        (529, b"", UpstreamServerError),
        (429, b"", RateLimited),
        (401, b"", UpstreamAuthError),
        (403, b"", UpstreamAuthError),
        (404, b"", UpstreamNotFound),
        (408, b"", UpstreamTimeout),
        (400, b'{"error": {"message": "bad temperature"}}', BadRequest),
        (409, b"", BadRequest),
        (422, b"", BadRequest),
        (400, b'{"error": {"message": "x", "code": "context_length_exceeded"}}',
         ContextLengthExceeded),
        (400, b'{"error": {"message": "maximum context length is 8192 tokens"}}',
         ContextLengthExceeded),
        (400, b'{"error": {"message": "prompt is too long: 300000 tokens"}}',
         ContextLengthExceeded),
    ],
)  # fmt: skip
def test_classify_status(status: int, body: bytes, cls: type[ProviderError]) -> None:
    exc = classify_status(status, body, {}, "up")
    assert type(exc) is cls
    assert exc.kind == KINDS[cls]
    assert exc.status == status
    assert exc.message.startswith(f"up returned HTTP {status}")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [({"retry-after": "7"}, 7.0), ({"Retry-After": "0.5"}, 0.5), ({"retry-after": "soon"}, None),
     ({}, None)],
)  # fmt: skip
def test_retry_after_comes_from_the_header(headers: dict[str, str], expected: float) -> None:
    exc = classify_status(429, b"", headers, "up")
    assert isinstance(exc, RateLimited)
    assert exc.retry_after == expected


def test_classify_status_redacts_secrets() -> None:
    body = b'{"error": {"message": "key local-key-123 is wrong; sk-abcdefghijkl too"}}'
    exc = classify_status(401, body, {}, "up", ("local-key-123",))
    assert "local-key-123" not in str(exc)
    assert "sk-abcdefghijkl" not in str(exc)
    assert exc.message.count("[redacted]") == 2


def test_redact_trims_and_removes_bearer_tokens() -> None:
    assert redact("Bearer abcdefghijk rest") == "[redacted] rest"
    assert len(redact("x" * 1000)) == 300


@pytest.mark.parametrize("data", [b"{not json", b"[1, 2]", b'"text"'])
def test_upstream_json_refuses_anything_but_an_object(data: bytes) -> None:
    with pytest.raises(InvalidResponse, match="the body is not"):
        upstream_json(data, "the body")
    assert upstream_json(b'{"a": 1}', "the body") == {"a": 1}


def test_json_nested_deeper_than_orjson_writes_is_refused_as_read_not_when_passed_on() -> None:
    def nested(levels: int) -> bytes:
        return b'{"a":' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"

    upstream_json(nested(254), "the body")  # as deep as can be encoded again
    with pytest.raises(InvalidResponse, match="the body nests JSON deeper than 254 levels"):
        upstream_json(nested(255), "the body")
    # Many brackets side by side are not depth: encoded once to see, and kept.
    wide = b'{"a":[' + b",".join([b"[]"] * 1000) + b"]}"
    assert len(upstream_json(wide, "the body")["a"]) == 1000
    assert errors.encodable("[" * 300 + "]" * 300, orjson.loads("[" * 300 + "]" * 300)) is False


def test_a_request_nested_too_deep_to_send_is_the_clients_error() -> None:
    assert errors.request_json({"a": [[1]]}) == b'{"a":[[1]]}'
    body = {"messages": orjson.loads("[" * 300 + "]" * 300)}
    with pytest.raises(errors.BadRequest, match="deeper than 254 levels") as caught:
        errors.request_json(body)
    assert caught.value.blames_model is False and caught.value.status == 400


def test_an_upstream_body_that_would_take_too_much_memory_is_refused_unparsed() -> None:
    objects = b'{"x":[' + b"{}," * 1_000_000 + b"{}]}"  # 3 MB, ~90 MB estimated parsed
    with pytest.raises(ResponseTooLarge) as refused:
        upstream_json(objects, "the body", max_parsed=50_000_000)
    assert refused.value.blames_model  # the next model is tried
    assert "more than 50,000,000 bytes of memory once parsed" in str(refused.value)
    text = orjson.dumps({"x": "word " * 600_000})  # 3 MB of text: about its bytes parsed
    assert upstream_json(text, "the body", max_parsed=50_000_000)["x"].startswith("word")
    assert len(upstream_json(objects, "the body")["x"]) == 1_000_001  # within the default
