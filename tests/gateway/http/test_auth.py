"""ApiKeyMiddleware: `Authorization: Bearer <key>` on /v1/*, OpenAI-shaped 401s otherwise."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.core.keys import KeyRing
from gateway.http.auth import ApiKeyMiddleware, bearer_token

KEYS = ["key-one", "key-two"]


async def ok(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True, "path": request.url.path})


def app(keys: list[str]) -> ApiKeyMiddleware:
    inner = Starlette(
        routes=[
            Route("/v1/models", ok),
            Route("/v1/chat/completions", ok, methods=["POST"]),
            Route("/v1/messages", ok, methods=["POST"]),
            Route("/healthz", ok),
            Route("/admin/api/stats", ok),
        ]
    )
    return ApiKeyMiddleware(inner, KeyRing(keys))


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[[list[str]], httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []

    def make(keys: list[str]) -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app(keys)), base_url="http://gateway.test"
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def client(client_for: Callable[[list[str]], httpx.AsyncClient]) -> httpx.AsyncClient:
    return client_for(KEYS)


def assert_401(resp: httpx.Response, message: str) -> None:
    assert resp.status_code == 401
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert set(body) == {"error"}
    assert body["error"] == {
        "message": body["error"]["message"],
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
    assert message in body["error"]["message"]


async def test_no_key_is_401(client: httpx.AsyncClient) -> None:
    resp = await client.get("/v1/models")
    assert_401(resp, "You didn't provide an API key")


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer   ", "Basic a2V5LW9uZQ==", "key-one"])
async def test_malformed_authorization_is_treated_as_no_key(
    client: httpx.AsyncClient, header: str
) -> None:
    resp = await client.get("/v1/models", headers={"Authorization": header})
    assert_401(resp, "You didn't provide an API key")


@pytest.mark.parametrize("token", ["wrong", "key-one-and-more", "key-on", "KEY-ONE"])
async def test_wrong_key_is_401(client: httpx.AsyncClient, token: str) -> None:
    resp = await client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {token}"})
    assert_401(resp, "Incorrect API key provided.")
    assert token not in resp.text


@pytest.mark.parametrize("key", KEYS)
async def test_right_key_passes(client: httpx.AsyncClient, key: str) -> None:
    resp = await client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 200
    assert resp.json() == {"ok": True, "path": "/v1/chat/completions"}


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "BeArEr"])
async def test_bearer_scheme_is_case_insensitive(client: httpx.AsyncClient, scheme: str) -> None:
    resp = await client.get("/v1/models", headers={"Authorization": f"{scheme} key-two"})
    assert resp.status_code == 200


async def test_surrounding_spaces_in_the_token_are_ignored(client: httpx.AsyncClient) -> None:
    resp = await client.get("/v1/models", headers={"Authorization": "Bearer  key-one "})
    assert resp.status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/admin/api/stats"])
async def test_non_v1_paths_pass_without_a_key(client: httpx.AsyncClient, path: str) -> None:
    resp = await client.get(path)
    assert resp.status_code == 200
    assert resp.json()["path"] == path


async def test_unknown_v1_path_still_needs_a_key(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/nothing-here")).status_code == 401
    resp = await client.get("/v1/nothing-here", headers={"Authorization": "Bearer key-one"})
    assert resp.status_code == 404


async def test_no_keys_configured_is_open(
    client_for: Callable[[list[str]], httpx.AsyncClient],
) -> None:
    client = client_for([])
    assert (await client.get("/v1/models")).status_code == 200
    resp = await client.get("/v1/models", headers={"Authorization": "Bearer whatever"})
    assert resp.status_code == 200


def test_bearer_token_parsing() -> None:
    assert bearer_token(None) is None
    assert bearer_token("") is None
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer abc ") == "abc"
    assert bearer_token("Bearer ") is None
    assert bearer_token("Token abc") is None


async def test_x_api_key_opens_anthropics_messages_api_only(
    client_for: Callable[[list[str]], httpx.AsyncClient],
) -> None:
    client = client_for(KEYS)
    key = {"x-api-key": "key-one"}
    assert (await client.post("/v1/messages", headers=key)).status_code == 200
    refused = await client.post("/v1/chat/completions", headers=key)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    bearer = {"authorization": "Bearer key-two"}
    assert (await client.post("/v1/messages", headers=bearer)).status_code == 200


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "nope"}, {"authorization": "Bearer x"}])
async def test_anthropics_api_is_refused_in_anthropics_shape(
    client_for: Callable[[list[str]], httpx.AsyncClient], headers: dict[str, str]
) -> None:
    r = await client_for(KEYS).post("/v1/messages", headers=headers)
    assert r.status_code == 401
    assert r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "authentication_error"
