"""Catalog.resolve: which models may serve a requested name, or why none can."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from gateway.core.config import Config, parse_config
from gateway.core.errors import GatewayError
from gateway.core.types import CONVERSATION_TYPES
from gateway.http.errors import status_of
from gateway.routing.catalog import Catalog, build_provider
from providers.base import Call, Endpoint
from providers.factory import TRANSPORTS
from tests.providers.http1.native_helpers import answering, serving
from tests.support.tls import make_pki


def make_config() -> Config:
    raw = {
        "providers": [
            {"name": "sim", "type": "mock"},
            {
                "name": "openai",
                "type": "openai",
                "base_url": "https://api.openai.com/v1",
                "api_key": "${TEST_OPENAI_KEY}",
            },
        ],
        "models": [
            {"name": "a", "provider": "sim", "fallbacks": ["c", "gpt", "b"]},
            {"name": "b", "provider": "sim"},
            {"name": "c", "provider": "sim"},
            {"name": "d", "provider": "sim"},
            {"name": "e", "provider": "sim", "conversation_types": ["embedding"]},
            {
                "name": "both",
                "provider": "sim",
                "conversation_types": ["text-to-text", "embedding"],
            },
            {"name": "gpt", "provider": "openai"},
            {"name": "alone", "provider": "sim"},
        ],
        "routes": [
            {"name": "auto", "models": ["gpt", "b", "a", "e", "both"], "optimization": "speed"},
            {"name": "other", "models": ["d", "c", "a", "b"]},
            {"name": "embeds", "models": ["e", "gpt"], "optimization": "cost"},
            {"name": "dark", "models": ["gpt"]},
        ],
    }
    return parse_config(raw, env={})


@pytest.fixture
def catalog() -> Catalog:
    return Catalog(make_config(), {})


def names(catalog: Catalog, name: str, ctype: str = "text-to-text") -> list[str]:
    return [m.name for m in catalog.resolve(name, ctype).candidates]  # type: ignore[arg-type]


def error(catalog: Catalog, name: object, ctype: str = "text-to-text") -> GatewayError:
    with pytest.raises(GatewayError) as info:
        catalog.resolve(name, ctype)  # type: ignore[arg-type]
    return info.value


def test_route_resolves_to_members_of_the_conversation_type(catalog: Catalog) -> None:
    target = catalog.resolve("auto", "text-to-text")
    assert target.name == "auto"
    assert target.route == "auto"
    assert target.optimization == "speed"
    # gpt is disabled and e is an embedding model: both are left out, order is kept
    assert [m.name for m in target.candidates] == ["b", "a", "both"]
    assert names(catalog, "auto", "embedding") == ["e", "both"]
    assert names(catalog, "other") == ["d", "c", "a", "b"]
    assert catalog.resolve("other", "text-to-text").optimization == "accuracy"


def test_concrete_model_candidates_are_itself_then_its_fallbacks_only(
    catalog: Catalog,
) -> None:
    target = catalog.resolve("a", "text-to-text")
    assert target.name == "a"
    assert target.route is None
    assert target.optimization is None
    # itself, then its fallbacks (c, b; gpt disabled); never auto's or other's members
    assert [m.name for m in target.candidates] == ["a", "c", "b"]


def test_a_model_without_fallbacks_is_never_served_by_its_routes_peers(
    catalog: Catalog,
) -> None:
    # b, d and both are members of routes, with peers there; asked by name, they are alone
    assert names(catalog, "b") == ["b"]
    assert names(catalog, "d") == ["d"]
    assert names(catalog, "both", "embedding") == ["both"]
    assert names(catalog, "both", "text-to-text") == ["both"]
    assert names(catalog, "e", "embedding") == ["e"]


def test_model_in_no_route_and_without_fallbacks_is_alone(catalog: Catalog) -> None:
    assert names(catalog, "alone") == ["alone"]


def test_candidates_are_model_configs(catalog: Catalog) -> None:
    target = catalog.resolve("b", "text-to-text")
    assert target.candidates[0] is catalog.models["b"]


@pytest.mark.parametrize("name", ["nope", "", "AUTO", 42, None])
def test_unknown_name_is_404(catalog: Catalog, name: object) -> None:
    err = error(catalog, name)
    assert status_of(err)[0] == 404
    assert err.code == "model_not_found"
    assert err.param == "model"
    assert status_of(err)[1] == "invalid_request_error"


def test_model_of_a_disabled_provider_is_503_naming_the_variable(catalog: Catalog) -> None:
    err = error(catalog, "gpt")
    assert status_of(err)[0] == 503
    assert err.code == "provider_disabled"
    assert status_of(err)[1] == "server_error"
    assert "TEST_OPENAI_KEY" in err.message
    assert "'openai'" in err.message


def test_wrong_conversation_type_is_400(catalog: Catalog) -> None:
    err = error(catalog, "e", "text-to-text")
    assert status_of(err)[0] == 400
    assert err.code == "model_not_supported"
    assert err.param == "model"
    assert "embedding" in err.message
    # the conversation type is checked before the provider's state
    assert status_of(error(catalog, "gpt", "embedding"))[0] == 400


def test_route_without_a_member_for_the_type_is_400(catalog: Catalog) -> None:
    err = error(catalog, "embeds", "text-to-image")
    assert status_of(err)[0] == 400
    assert err.code == "model_not_supported"
    assert "'embeds'" in err.message
    # a route whose only member is disabled
    assert status_of(error(catalog, "dark"))[0] == 400


def test_enabled_provider_with_env_set_serves_its_model() -> None:
    config = make_config()
    raw = config.model_dump(exclude={"source"})
    for p in raw["providers"]:
        p.pop("missing_env")
        if p["name"] == "openai":
            p["api_key"] = "${TEST_OPENAI_KEY}"
    enabled = Catalog(parse_config(raw, env={"TEST_OPENAI_KEY": "sk-x"}), {})
    assert names(enabled, "gpt") == ["gpt"]
    assert names(enabled, "a") == ["a", "c", "gpt", "b"]
    assert names(enabled, "auto") == ["gpt", "b", "a", "both"]


def test_every_target_type_is_known(catalog: Catalog) -> None:
    for name in ("a", "auto", "both"):
        for ctype in CONVERSATION_TYPES:
            try:
                target = catalog.resolve(name, ctype)
            except GatewayError as err:
                assert status_of(err)[0] == 400
            else:
                assert all(ctype in m.conversation_types for m in target.candidates)


def test_listing_contains_enabled_models_and_routes_only(catalog: Catalog) -> None:
    listing = catalog.listing()
    ids = [entry["id"] for entry in listing]
    assert ids == ["a", "b", "c", "d", "e", "both", "alone", "auto", "other", "embeds", "dark"]
    assert "gpt" not in ids
    by_id = {entry["id"]: entry for entry in listing}
    assert by_id["a"] == {"id": "a", "object": "model", "created": 1_700_000_000, "owned_by": "sim"}
    assert by_id["auto"]["owned_by"] == "gatewise"
    assert all(entry["object"] == "model" for entry in listing)


def test_unable_names_the_models_whose_provider_lacks_the_endpoint() -> None:
    config = parse_config(
        {
            "providers": [
                {"name": "a", "type": "anthropic", "base_url": "http://127.0.0.1:9"},
                {"name": "m", "type": "mock"},
            ],
            "models": [{"name": "claude", "provider": "a"}, {"name": "sim", "provider": "m"}],
        }
    )
    providers = {
        p.name: build_provider(p, [m for m in config.models if m.provider == p.name])
        for p in config.providers
    }
    catalog = Catalog(config, providers)
    assert catalog.unable(Endpoint.RESPONSES) == {"claude"}  # Anthropic has no Responses API
    assert catalog.unable(Endpoint.CHAT) == frozenset()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_provider_caps_answers_at_its_max_response_bytes(transport: str) -> None:
    raw = {"name": "up", "type": "openai", "base_url": "http://127.0.0.1:9/v1",
           "max_response_bytes": 12345, "transport": transport}  # fmt: skip
    config = parse_config({"providers": [raw], "models": [], "routes": []}, env={})
    provider = build_provider(config.providers[0], [])
    try:
        assert provider._transport.max_body == 12345
    finally:
        await provider.aclose()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_provider_reaches_a_private_upstream_with_its_tls_files(
    transport: str, tmp_path: Path
) -> None:
    """Issue 17.9: a private CA added to the roots, and a client certificate presented."""
    pki = make_pki(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=pki.ca)
    server_ctx.load_cert_chain(pki.server_cert, pki.server_key)
    server_ctx.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no handshake
    reply = b'{"object": "list", "data": []}'
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(reply), reply)
    async with serving(answering(ok), server_ctx) as srv:
        raw = {"name": "up", "type": "openai", "base_url": f"https://127.0.0.1:{srv.port}/v1",
               "transport": transport, "ca_file": str(pki.ca),
               "client_cert": str(pki.client_cert), "client_key": str(pki.client_key)}  # fmt: skip
        config = parse_config({"providers": [raw], "models": [], "routes": []}, env={})
        provider = build_provider(config.providers[0], [])
        try:
            got = await provider.send(Call(Endpoint.EMBEDDINGS, {"input": "x"}, "m"))
        finally:
            await provider.aclose()
    assert got.body == {"object": "list", "data": []}
