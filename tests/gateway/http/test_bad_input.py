"""Bad client input is refused by the gateway itself, before any upstream is called.

Raw bytes over httpx, so the test controls exactly what the gateway receives.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.conftest import upstream_config
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream

SECRET = "sk-upstream-secret-123456"
AUTH = {"authorization": "Bearer test-key"}
JSON = {**AUTH, "content-type": "application/json"}
HI = [{"role": "user", "content": "hi"}]
LIMIT = 4096


@pytest.fixture(scope="module")
def gw(up: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("bad-input")
    config = upstream_config(up)
    with GatewayProcess(config, workdir) as process:
        yield process


@pytest.fixture
def http(gw: GatewayProcess, up: FakeUpstream) -> Iterator[httpx.Client]:
    up.behaviours.clear()
    up.seen.clear()
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        yield client
    # whatever the client sent, nothing reached the upstream
    assert up.seen == []


def refused(response: httpx.Response, status: int, param: str | None = None) -> dict:
    """The gateway's answer is an OpenAI-shaped error that leaks nothing."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert SECRET not in response.text
    assert "Traceback" not in response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if param is not None:
        assert error["param"] == param
        assert param in error["message"]
    return error


def post(http: httpx.Client, path: str, content: bytes, headers: dict | None = None):
    return http.post(path, content=content, headers=JSON if headers is None else headers)


def chat(**fields: object) -> bytes:
    return orjson.dumps({"model": "alpha", "messages": HI, **fields})


def test_a_good_request_reaches_the_upstream(gw: GatewayProcess, up: FakeUpstream) -> None:
    """The control case: the same client and body shape do get through when valid."""
    up.seen.clear()
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        response = post(client, "/v1/chat/completions", chat())
    assert response.status_code == 200
    assert len(up.seen) == 1


@pytest.mark.parametrize(
    "raw",
    [b'{"model": "alpha", "messages": [', b"{'model': 'alpha'}", b"not json at all", b"\xff\xfe"],
    ids=["truncated", "single-quotes", "text", "binary"],
)
def test_malformed_json_is_400(http: httpx.Client, raw: bytes) -> None:
    error = refused(post(http, "/v1/chat/completions", raw), 400)
    assert error["type"] == "invalid_request_error"


def test_empty_body_is_400(http: httpx.Client) -> None:
    refused(post(http, "/v1/chat/completions", b""), 400)


@pytest.mark.parametrize("raw", [b"[]", b'[{"model": "alpha", "messages": []}]', b'"x"', b"42"])
def test_json_that_is_not_an_object_is_400(http: httpx.Client, raw: bytes) -> None:
    refused(post(http, "/v1/chat/completions", raw), 400)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("messages", "hello"),
        ("max_tokens", "100"),
        ("temperature", "0.7"),
        ("stream", "yes"),
        ("top_p", "high"),
        ("n", 1.5),
        ("max_tokens", True),
        ("stream_options", "include_usage"),
    ],
)
def test_wrong_types_are_400_naming_the_field(
    http: httpx.Client, field: str, value: object
) -> None:
    error = refused(post(http, "/v1/chat/completions", chat(**{field: value})), 400, field)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {"messages": HI}, "model"),
        ("/v1/chat/completions", {"model": 7, "messages": HI}, "model"),
        ("/v1/chat/completions", {"model": "alpha"}, "messages"),
        ("/v1/embeddings", {"model": "embedder", "input": 5}, "input"),
        ("/v1/images/generations", {"model": "painter"}, "prompt"),
        ("/v1/completions", {"model": "alpha", "prompt": {"text": "x"}}, "prompt"),
    ],
)
def test_missing_or_mistyped_required_fields_are_400(
    http: httpx.Client, path: str, body: dict, param: str
) -> None:
    refused(post(http, path, orjson.dumps(body)), 400, param)


def test_bad_message_entries_are_400(http: httpx.Client) -> None:
    refused(post(http, "/v1/chat/completions", chat(messages=[])), 400, "messages")
    refused(post(http, "/v1/chat/completions", chat(messages=["hi"])), 400, "messages[0]")
    refused(
        post(http, "/v1/chat/completions", chat(messages=[{"content": "hi"}])),
        400,
        "messages[0].role",
    )


def test_body_over_the_limit_is_413(http: httpx.Client) -> None:
    raw = chat(padding="x" * (LIMIT + 100))
    assert len(raw) > LIMIT
    error = refused(post(http, "/v1/chat/completions", raw), 413)
    assert str(LIMIT) in error["message"]


def test_chunked_body_over_the_limit_is_413(http: httpx.Client) -> None:
    """No Content-Length to trust: the gateway counts the bytes as they arrive."""
    raw = chat(padding="x" * (LIMIT + 100))

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(raw), 512):
            yield raw[i : i + 512]

    response = http.post("/v1/chat/completions", content=pieces(), headers=JSON)
    refused(response, 413)


def test_multipart_file_upload_is_400_naming_the_part(http: httpx.Client) -> None:
    response = http.post(
        "/v1/videos",
        headers=AUTH,
        data={"model": "filmmaker", "prompt": "a cat"},
        files={"input_reference": ("ref.png", b"\x89PNG fake", "image/png")},
    )
    refused(response, 400, "input_reference")


def test_multipart_over_the_limit_is_413(http: httpx.Client) -> None:
    response = http.post(
        "/v1/videos",
        headers=AUTH,
        files={"model": (None, "filmmaker"), "prompt": (None, "x" * (LIMIT + 100))},
    )
    refused(response, 413)


def test_malformed_multipart_is_400(http: httpx.Client) -> None:
    headers = {**AUTH, "content-type": "multipart/form-data; boundary=zzz"}
    refused(post(http, "/v1/videos", b"this is not multipart", headers), 400)


def test_unknown_model_is_404(http: httpx.Client) -> None:
    response = post(http, "/v1/chat/completions", chat(model="no-such-model"))
    error = refused(response, 404, "model")
    assert error["code"] == "model_not_found"


def test_model_of_the_wrong_kind_is_400(http: httpx.Client) -> None:
    refused(post(http, "/v1/chat/completions", chat(model="painter")), 400, "model")


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "application/json"},
        {"content-type": "application/json", "authorization": "Bearer wrong"},
        {"content-type": "application/json", "authorization": "Basic dGVzdC1rZXk6"},
        {"content-type": "application/json", "authorization": "test-key"},
    ],
    ids=["missing", "wrong", "basic", "no-scheme"],
)
def test_missing_or_bad_key_is_401(http: httpx.Client, headers: dict) -> None:
    error = refused(post(http, "/v1/chat/completions", chat(), headers), 401)
    assert error["code"] == "invalid_api_key"


def test_bad_key_is_checked_before_the_body(http: httpx.Client) -> None:
    """An unauthenticated client learns nothing about its body, however broken."""
    headers = {"content-type": "application/json"}
    refused(post(http, "/v1/chat/completions", b"{not json", headers), 401)
    refused(post(http, "/v1/chat/completions", b"x" * (LIMIT + 1), headers), 401)


def test_invalid_optimize_header_is_400(http: httpx.Client) -> None:
    headers = {**JSON, "x-gatewise-optimize": "vibes"}
    refused(post(http, "/v1/chat/completions", chat(), headers), 400, "x-gatewise-optimize")


def test_unknown_path_is_an_openai_shaped_404(http: httpx.Client) -> None:
    error = refused(http.post("/v1/no/such/path", content=chat(), headers=JSON), 404)
    assert error["code"] == "not_found"


def test_wrong_method_is_an_openai_shaped_405(http: httpx.Client) -> None:
    error = refused(http.get("/v1/chat/completions", headers=AUTH), 405)
    assert error["code"] == "method_not_allowed"


DEEP = "[" * 300 + "]" * 300  # orjson reads 1,024 levels and writes 254
ASKED = '{"model":"alpha","messages":[{"role":"user","content":"hi"}],'


@pytest.mark.parametrize(
    "body",
    [
        '{"model":"alpha","messages":[{"role":"user","content":' + DEEP + "}]}",
        ASKED + '"metadata":{"x":' + DEEP + "}}",
        ASKED + '"tools":[' + DEEP + "]}",
    ],
    ids=["content", "metadata", "tools"],
)
def test_json_nested_deeper_than_can_be_passed_on_is_400_not_a_500(
    http: httpx.Client, gw: GatewayProcess, body: str
) -> None:
    """A 600-byte body of nested lists was read, then failed where it was encoded again
    or walked: a 500 and a traceback in the log."""
    error = refused(post(http, "/v1/chat/completions", body.encode()), 400)
    assert "deeper than 254 levels" in error["message"]
    assert "Traceback" not in gw.logs()
