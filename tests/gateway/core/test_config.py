"""gateway.yaml loading: env expansion, disabled providers and errors worded for the editor."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.core.config import (
    DEFAULT_CONFIG_PATH,
    ConfigError,
    Pricing,
    config_path,
    load_config,
    parse_config,
)
from providers.base import Usage
from providers.tls import TlsOptions
from tests.support.tls import make_pki

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "gateway.yaml"

BASE: dict[str, Any] = {
    "providers": [{"name": "mock", "type": "mock"}],
    "models": [
        {"name": "m1", "provider": "mock"},
        {"name": "m2", "provider": "mock", "conversation_types": ["embedding"]},
    ],
    "routes": [{"name": "auto", "models": ["m1"]}],
}


def base(**changes: Any) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    raw.update(copy.deepcopy(changes))
    return raw


def write(tmp_path: Path, raw: Any, name: str = "gateway.yaml") -> Path:
    path = tmp_path / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw), encoding="utf-8")
    return path


def error_of(tmp_path: Path, raw: Any) -> tuple[str, str]:
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    return str(info.value), str(path)


# -- the shipped file ------------------------------------------------------------------


def test_shipped_config_validates_without_any_env_vars() -> None:
    config = load_config(SHIPPED, env={})
    providers = {p.name: p for p in config.providers}
    assert set(providers) == {"openai", "anthropic", "ollama", "mock"}
    assert providers["openai"].missing_env == ("OPENAI_API_KEY",)
    assert providers["anthropic"].missing_env == ("ANTHROPIC_API_KEY",)
    assert providers["ollama"].missing_env == ("OLLAMA_BASE_URL",)
    for name in ("openai", "anthropic", "ollama"):
        assert not providers[name].enabled
        assert providers[name].api_key is None
    assert providers["mock"].enabled
    assert providers["mock"].missing_env == ()
    assert config.source == str(SHIPPED)
    # no client keys and no admin token: the gateway is open
    assert config.server.api_keys == []
    assert config.server.admin_token is None
    assert {r.name for r in config.routes} == {"auto", "fast", "cheap", "thrifty"}
    assert next(r for r in config.routes if r.name == "thrifty").quality_tolerance == 0.1


def test_shipped_config_with_keys_enables_providers() -> None:
    env = {
        "OPENAI_API_KEY": "sk-openai",
        "ANTHROPIC_API_KEY": "sk-ant",
        "OLLAMA_BASE_URL": "http://127.0.0.1:11434/v1",
        "GATEWISE_API_KEY": "client-key",
        "GATEWISE_ADMIN_TOKEN": "admin",
    }
    config = load_config(SHIPPED, env=env)
    assert all(p.enabled for p in config.providers)
    assert config.provider("openai").api_key == "sk-openai"
    assert config.provider("ollama").base_url == "http://127.0.0.1:11434/v1"
    assert config.server.api_keys == ["client-key"]
    assert config.server.admin_token == "admin"


# -- ${VAR} expansion ------------------------------------------------------------------


def test_env_expansion_everywhere() -> None:
    raw = base(
        server={"api_keys": ["${K1}", "literal", "pre-${K2}"], "admin_token": "${ADMIN}"},
        providers=[
            {"name": "mock", "type": "mock"},
            {
                "name": "up",
                "type": "openai",
                "base_url": "https://${HOST}/v1",
                "api_key": "${KEY}",
                "headers": {"x-org": "${ORG}", "x-fixed": "plain"},
            },
        ],
    )
    env = {
        "K1": "one",
        "K2": "two",
        "ADMIN": "tok",
        "HOST": "up.example",
        "KEY": "sk-x",
        "ORG": "o",
    }
    config = parse_config(raw, env=env)
    up = config.provider("up")
    assert up.enabled
    assert up.base_url == "https://up.example/v1"
    assert up.api_key == "sk-x"
    assert up.headers == {"x-org": "o", "x-fixed": "plain"}
    assert config.server.api_keys == ["one", "literal", "pre-two"]
    assert config.server.admin_token == "tok"


def test_env_defaults_to_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GW_TEST_KEY", "from-os")
    raw = base(server={"api_keys": ["${GW_TEST_KEY}"]})
    assert parse_config(raw).server.api_keys == ["from-os"]


def test_unset_api_keys_are_dropped_and_the_gateway_is_open() -> None:
    raw = base(server={"api_keys": ["${UNSET_A}", "${UNSET_B}"], "admin_token": "${UNSET_C}"})
    config = parse_config(raw, env={})
    assert config.server.api_keys == []
    assert config.server.admin_token is None


def test_unset_and_empty_variables_disable_a_provider_naming_them() -> None:
    raw = base(
        providers=[
            {"name": "mock", "type": "mock"},
            {
                "name": "up",
                "type": "openai",
                "base_url": "${URL}",
                "api_key": "${KEY}",
                "headers": {"x-org": "${ORG}"},
            },
        ],
        models=[{"name": "m1", "provider": "mock"}, {"name": "u", "provider": "up"}],
    )
    config = parse_config(raw, env={"ORG": ""})
    up = config.provider("up")
    assert not up.enabled
    assert up.missing_env == ("KEY", "URL", "ORG")
    assert up.base_url is None  # allowed: the provider is disabled, not broken


# -- errors ----------------------------------------------------------------------------


def test_unknown_top_level_key(tmp_path: Path) -> None:
    message, path = error_of(tmp_path, base(colour="blue"))
    assert message.startswith(f"{path}: invalid configuration")
    assert "colour: unknown key" in message


def test_wrong_type_names_the_path_and_the_expectation(tmp_path: Path) -> None:
    raw = base()
    raw["models"][1]["pricing"] = {"input_per_million": "x"}
    message, path = error_of(tmp_path, raw)
    assert path in message
    assert "models[1].pricing.input_per_million" in message
    assert "valid number" in message


def test_prior_out_of_range(tmp_path: Path) -> None:
    raw = base()
    raw["models"][0]["priors"] = {"speed": 11}
    message, path = error_of(tmp_path, raw)
    assert path in message
    assert "models[0].priors.speed" in message
    assert "less than or equal to 10" in message


def test_unknown_provider_in_a_model(tmp_path: Path) -> None:
    raw = base()
    raw["models"][1]["provider"] = "nowhere"
    message, path = error_of(tmp_path, raw)
    assert path in message
    assert "models[1].provider: unknown provider 'nowhere'" in message
    assert "expected one of: mock" in message


def test_unknown_model_in_a_route(tmp_path: Path) -> None:
    raw = base(routes=[{"name": "auto", "models": ["m1", "ghost"]}])
    message, path = error_of(tmp_path, raw)
    assert path in message
    assert "routes[0].models[1]: unknown model 'ghost'" in message


def test_per_prompt_route_needs_two_models(tmp_path: Path) -> None:
    raw = base(routes=[{"name": "auto", "models": ["m1"], "per_prompt": True}])
    message, path = error_of(tmp_path, raw)
    assert path in message
    assert "routes[0].per_prompt: a route needs at least two models" in message


def test_per_prompt_route_needs_accuracy(tmp_path: Path) -> None:
    raw = base(
        routes=[
            {"name": "auto", "models": ["m1", "m2"], "optimization": "cost", "per_prompt": True}
        ]
    )
    message, _ = error_of(tmp_path, raw)
    assert "routes[0].per_prompt: learns the accuracy" in message
    assert "not 'cost'" in message


def test_per_prompt_must_be_a_boolean(tmp_path: Path) -> None:
    raw = base(routes=[{"name": "auto", "models": ["m1", "m2"], "per_prompt": "sometimes"}])
    message, _ = error_of(tmp_path, raw)
    assert "routes[0].per_prompt" in message


def test_unknown_model_in_fallbacks(tmp_path: Path) -> None:
    raw = base()
    raw["models"][0]["fallbacks"] = ["ghost"]
    message, _ = error_of(tmp_path, raw)
    assert "models[0].fallbacks[0]: unknown model 'ghost'" in message


def test_route_named_like_a_model(tmp_path: Path) -> None:
    raw = base(routes=[{"name": "auto", "models": ["m1"]}, {"name": "m2", "models": ["m1"]}])
    message, path = error_of(tmp_path, raw)
    assert path in message
    assert "routes[1].name: 'm2' is already a model name" in message


@pytest.mark.parametrize("where", ["models", "providers"])
def test_a_name_that_could_split_a_header_is_refused(tmp_path: Path, where: str) -> None:
    raw = base()
    raw[where][0]["name"] = "m1\r\nset-cookie: x=1"  # sent in every answer's headers
    message, path = error_of(tmp_path, raw)
    assert path in message
    assert f"{where}[0].name: must not contain control characters" in message


def test_duplicate_model_names(tmp_path: Path) -> None:
    raw = base()
    raw["models"].append({"name": "m1", "provider": "mock"})
    message, path = error_of(tmp_path, raw)
    assert path in message
    assert "models[2].name: 'm1' is defined twice" in message


def test_unknown_conversation_type(tmp_path: Path) -> None:
    raw = base()
    raw["models"][0]["conversation_types"] = ["text-to-text", "text-to-smell"]
    message, path = error_of(tmp_path, raw)
    assert path in message
    assert "models[0].conversation_types[1]" in message
    assert "'text-to-image'" in message  # the allowed values are listed


def test_empty_conversation_types(tmp_path: Path) -> None:
    raw = base()
    raw["models"][0]["conversation_types"] = []
    message, _ = error_of(tmp_path, raw)
    assert "models[0].conversation_types: list at least one of text-to-text" in message


@pytest.mark.parametrize(
    ("mock", "where", "expected"),
    [
        ({"failure_rate": 2}, "models[0].mock.failure_rate", "less than or equal to 1"),
        ({"failure_kinds": ["boom"]}, "models[0].mock.failure_kinds[0]", "'5xx'"),
        ({"latency": 5}, "models[0].mock.latency", "Extra inputs are not permitted"),
    ],
)
def test_bad_mock_settings_on_a_model(
    tmp_path: Path, mock: dict[str, Any], where: str, expected: str
) -> None:
    raw = base()
    raw["models"][0]["mock"] = mock
    message, path = error_of(tmp_path, raw)
    assert path in message
    assert where in message
    assert expected in message


def test_provider_without_base_url(tmp_path: Path) -> None:
    raw = base(providers=[{"name": "mock", "type": "mock"}, {"name": "up", "type": "openai"}])
    message, _ = error_of(tmp_path, raw)
    assert "providers[1]: provider of type 'openai' needs a base_url" in message


def test_credentials_in_a_base_url_are_refused_without_being_repeated(tmp_path: Path) -> None:
    url = "https://gw-user:hunter2-secret@llm.internal/v1"
    raw = base(providers=[{"name": "mock", "type": "mock"},
                          {"name": "up", "type": "openai", "base_url": url}])  # fmt: skip
    message, _ = error_of(tmp_path, raw)
    assert "providers[1].base_url: base_url must not contain a user name or password" in message
    assert "hunter2" not in message and "gw-user" not in message


def _tls_provider(**tls: str) -> dict[str, Any]:
    up = {"name": "up", "type": "openai", "base_url": "https://llm.corp.test/v1", **tls}
    return base(providers=[{"name": "mock", "type": "mock"}, up])


def test_tls_files_are_loaded_with_the_configuration(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    ok = _tls_provider(
        ca_file=str(pki.ca), client_cert=str(pki.client_cert), client_key=str(pki.client_key)
    )
    tls = load_config(write(tmp_path, ok), env={}).providers[1].tls
    assert tls == TlsOptions(str(pki.ca), str(pki.client_cert), str(pki.client_key))
    assert load_config(write(tmp_path, base()), env={}).providers[0].tls is None
    cases = [
        ({"ca_file": str(tmp_path / "nope.pem")}, "ca_file: cannot read"),
        ({"ca_file": str(pki.client_key)}, "holds no PEM certificate"),
        ({"client_key": str(pki.client_key)}, "client_key needs client_cert"),
        (
            {"client_cert": str(pki.client_cert), "client_key": str(pki.server_key)},
            "are not a PEM certificate and the matching private key",
        ),
        ({"client_cert": str(pki.client_cert)}, "are not a PEM certificate"),  # no key in it
        (
            {"client_cert": str(pki.client_cert), "client_key": str(tmp_path / "k.pem")},
            "client_cert/client_key: cannot read: No such file or directory",
        ),
    ]
    for options, expected in cases:
        message, _ = error_of(tmp_path, _tls_provider(**options))
        assert "providers[1]: " in message and expected in message, message


def test_missing_required_key(tmp_path: Path) -> None:
    raw = base()
    del raw["models"][0]["provider"]
    message, _ = error_of(tmp_path, raw)
    assert "models[0].provider: required key is missing" in message


def test_non_mapping_top_level(tmp_path: Path) -> None:
    message, path = error_of(tmp_path, "- just\n- a list\n")
    assert message == f"{path}: expected a mapping at the top level, got list"


def test_non_mapping_server_and_non_list_providers(tmp_path: Path) -> None:
    message, path = error_of(tmp_path, base(server=["x"]))
    assert message == f"{path}: server: expected a mapping, got list"
    message, path = error_of(tmp_path, base(providers={"name": "mock"}))
    assert message == f"{path}: providers: expected a list, got dict"


def test_invalid_yaml(tmp_path: Path) -> None:
    message, path = error_of(tmp_path, "server: [unclosed\n")
    assert message.startswith(f"{path}: not valid YAML")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert message.startswith(f"{path}: cannot read the configuration")
    assert "No such file" in message


def test_empty_file_is_an_empty_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), env={})
    assert config.providers == [] and config.models == [] and config.routes == []


def test_parse_config_default_source() -> None:
    with pytest.raises(ConfigError, match=r"^<memory>: expected a mapping"):
        parse_config("text", env={})


# -- storage -----------------------------------------------------------------------------


def test_storage_defaults() -> None:
    storage = parse_config(base(), env={}).storage
    assert (storage.url, storage.pool_size) == ("sqlite:///gatewise.db", 10)
    assert parse_config(base(storage={"pool_size": 3}), env={}).storage.pool_size == 3


def test_the_environment_overrides_the_storage_url() -> None:
    url = "postgresql://gw:pw@db.internal/gatewise"
    raw = base(storage={"url": "sqlite:///file.db", "pool_size": 4})
    storage = parse_config(raw, env={"GATEWISE_STORAGE_URL": url}).storage
    assert (storage.url, storage.pool_size) == (url, 4)
    assert parse_config(base(), env={"GATEWISE_STORAGE_URL": url}).storage.url == url
    # Set but empty: the file's url stands.
    assert parse_config(raw, env={"GATEWISE_STORAGE_URL": ""}).storage.url == "sqlite:///file.db"
    assert raw["storage"]["url"] == "sqlite:///file.db"  # the caller's mapping is left alone


def test_a_relative_sqlite_path_is_relative_to_the_configuration_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # where the gateway starts no longer matters
    folder = tmp_path / "etc"
    folder.mkdir()
    named = write(folder, base(storage={"url": "sqlite:///data/gw.db"}))
    assert load_config(named, env={}).storage.url == f"sqlite:///{folder}/data/gw.db"
    default = write(folder, base(), name="default.yaml")
    assert load_config(default, env={}).storage.url == f"sqlite:///{folder}/gatewise.db"
    relative = Path("..") / "etc" / "default.yaml"  # a relative --config too
    assert load_config(relative, env={}).storage.url == f"sqlite:///{elsewhere}/../etc/gatewise.db"
    for kept in (f"sqlite:///{tmp_path}/abs.db", "sqlite://:memory:", "postgresql://db/gw"):
        path = write(folder, base(storage={"url": kept}), name="kept.yaml")
        assert load_config(path, env={}).storage.url == kept
    # the environment's url is the caller's, taken as given
    env = {"GATEWISE_STORAGE_URL": "sqlite:///here.db"}
    assert load_config(named, env=env).storage.url == "sqlite:///here.db"


def test_the_storage_url_is_not_in_the_config_repr() -> None:
    env = {"GATEWISE_STORAGE_URL": "postgresql://gw:S3cret@db/gatewise"}
    config = parse_config(base(), env=env)
    assert "S3cret" not in repr(config) and "S3cret" not in repr(config.storage)


def test_bad_storage_settings(tmp_path: Path) -> None:
    message, _ = error_of(tmp_path, base(storage={"pool_size": 0}))
    assert "storage.pool_size: Input should be greater than or equal to 1" in message
    with pytest.raises(ConfigError, match="storage: expected a mapping, got list"):
        parse_config(base(storage=["x"]), env={"GATEWISE_STORAGE_URL": "postgresql://db/gw"})


# -- which file ------------------------------------------------------------------------


def test_config_path_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWISE_CONFIG", raising=False)
    assert config_path() == DEFAULT_CONFIG_PATH == "gateway.yaml"
    assert config_path(None) == "gateway.yaml"
    monkeypatch.setenv("GATEWISE_CONFIG", "/etc/gw.yaml")
    assert config_path() == "/etc/gw.yaml"
    assert config_path("explicit.yaml") == "explicit.yaml"
    monkeypatch.setenv("GATEWISE_CONFIG", "")
    assert config_path() == "gateway.yaml"


# -- pricing ------------------------------------------------------------------------------


def test_cached_tokens_are_priced_as_such() -> None:
    pricing = Pricing(
        input_per_million=3,
        output_per_million=15,
        cached_input_per_million=0.3,
        cache_write_per_million=3.75,
    )
    usage = Usage(1_000_000 + 2_000_000 + 4_000_000, 1_000_000, 0, 0, 2_000_000, 4_000_000)
    assert pricing.cost_of(usage) == pytest.approx(3 + 15 + 2 * 0.3 + 4 * 3.75)


def test_unpriced_cache_tokens_cost_the_input_price() -> None:
    pricing = Pricing(input_per_million=3)
    usage = Usage(3_000_000, 0, cached_tokens=2_000_000, cache_write_tokens=1_000_000)
    assert pricing.cost_of(usage) == pytest.approx(9)
    assert pricing.cost_of(None) == 0.0


def _with_comparisons(*entries: dict) -> dict:
    return {
        "providers": [{"name": "p", "type": "mock"}],
        "models": [
            {"name": "a", "provider": "p"},
            {"name": "e", "provider": "p", "conversation_types": ["embedding"]},
        ],
        "routes": [{"name": "auto", "models": ["a"]}],
        "comparisons": list(entries),
    }


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"route": "nope", "challenger": "a", "sample": 0.1, "max_daily_usd": 1},
         "comparisons[0].route: unknown route 'nope' (expected one of: auto)"),
        ({"route": "auto", "challenger": "zz", "sample": 0.1, "max_daily_usd": 1},
         "comparisons[0].challenger: unknown model 'zz'"),
        ({"route": "auto", "challenger": "e", "sample": 0.1, "max_daily_usd": 1},
         "comparisons[0].challenger: 'e' does not serve text-to-text"),
        ({"route": "auto", "challenger": "a", "sample": 0, "max_daily_usd": 1},
         "comparisons[0].sample: Input should be greater than 0"),
        ({"route": "auto", "challenger": "a", "sample": 0.1},
         "comparisons[0].max_daily_usd: required key is missing"),
    ],
)  # fmt: skip
def test_comparison_errors_name_the_yaml_path(entry: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_with_comparisons(entry), source="gw.yaml")
    assert message in str(info.value)


def test_a_comparison_is_named_after_its_route_and_challenger() -> None:
    entry = {"route": "auto", "challenger": "a", "sample": 0.02, "max_daily_usd": 5}
    [comparison] = parse_config(_with_comparisons(entry)).comparisons
    assert comparison.key == "auto-vs-a" and comparison.max_concurrent == 4
    with pytest.raises(ConfigError, match=r"comparisons\[1\]: 'auto-vs-a' is defined twice"):
        parse_config(_with_comparisons(entry, entry))


@pytest.mark.parametrize("value", [1.5, -0.1, "a lot"])
def test_a_quality_tolerance_outside_0_to_1_names_its_path(tmp_path: Path, value: Any) -> None:
    raw = base(routes=[{"name": "auto", "models": ["m1"], "optimization": "cost",
                        "quality_tolerance": value}])  # fmt: skip
    message, path = error_of(tmp_path, raw)
    assert message.startswith(f"{path}: ")
    assert "routes[0].quality_tolerance" in message
