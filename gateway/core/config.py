"""Turns `gateway.yaml` into one validated, resolved object, once, at start.

Pydantic is used here and only here: the request path reads plain attributes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.core.types import CONVERSATION_TYPES, ConversationType, Optimization
from providers.base import Usage
from providers.http1.proxy import Proxy
from providers.mock.config import MockConfig as MockConfig  # the gateway's YAML embeds it
from providers.transport import MAX_BODY

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "STORAGE_URL_ENV",
    "Config",
    "ConfigError",
    "ModelConfig",
    "ProviderConfig",
    "RouteConfig",
    "config_path",
    "load_config",
    "parse_config",
]

DEFAULT_CONFIG_PATH = "gateway.yaml"
STORAGE_URL_ENV = "GATEWISE_STORAGE_URL"  # overrides storage.url
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(Exception):
    """A configuration problem, worded for the person who edits the file."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CorsConfig(_Strict):
    allow_origins: list[str] = []
    allow_headers: list[str] = ["authorization", "content-type"]


class ServerConfig(_Strict):
    api_keys: list[str] = []
    admin_token: str | None = None
    max_body_bytes: int = Field(10 * 1024 * 1024, gt=0)
    cors: CorsConfig | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class ProviderConfig(_Strict):
    name: str = Field(min_length=1)
    type: Literal["openai", "anthropic", "mock"]
    base_url: str | None = None
    api_key: str | None = None
    # A whole answer within `timeout`; a stream's first byte within it, then no silence
    # longer than it, and all of it within `stream_timeout` (an upstream that sends
    # keep-alive comments forever ends there, as the upstream's timeout).
    timeout: float = Field(60.0, gt=0)
    stream_timeout: float = Field(600.0, gt=0)
    connect_timeout: float = Field(10.0, gt=0)
    # How long a request waits for the pool to have room for a connection before it is
    # answered 503 with Retry-After (the gateway's saturation, not the upstream's fault).
    pool_timeout: float = Field(5.0, gt=0)
    headers: dict[str, str] = {}
    # Open connections to this provider per worker: a stream holds one for its whole
    # length, and one worker holds thousands of streams.
    max_connections: int = Field(4096, gt=0)
    # A larger (decoded) answer fails as a bad body and the next model is tried.
    max_response_bytes: int = Field(MAX_BODY, gt=0)
    # http://[user:password@]host:port; unset: HTTPS_PROXY / HTTP_PROXY / NO_PROXY apply
    # (loopback hosts excepted).
    proxy: str | None = None
    transport: Literal["aiohttp", "httpx", "native"] = "native"
    mock: MockConfig = MockConfig()
    # Filled by the loader: the unset env variables that disable this provider.
    missing_env: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return not self.missing_env

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, value: str | None) -> str | None:
        if value:
            Proxy.parse(value)  # its ValueError says what is wrong without echoing secrets
        return value or None

    @model_validator(mode="after")
    def _needs_base_url(self) -> ProviderConfig:
        if self.type != "mock" and not self.base_url and not self.missing_env:
            raise ValueError(f"provider of type '{self.type}' needs a base_url")
        return self


class Pricing(_Strict):
    input_per_million: float = Field(0.0, ge=0)
    output_per_million: float = Field(0.0, ge=0)
    per_image: float = Field(0.0, ge=0)
    per_second: float = Field(0.0, ge=0)

    def cost_of(self, usage: Usage | None) -> float:
        """What an answer cost, from the usage the upstream reported."""
        if usage is None:
            return 0.0
        return (
            usage.prompt_tokens * self.input_per_million / 1_000_000
            + usage.completion_tokens * self.output_per_million / 1_000_000
            + usage.images * self.per_image
            + usage.seconds * self.per_second
        )


class Priors(_Strict):
    accuracy: float = Field(5.0, ge=0, le=10)
    creativity: float = Field(5.0, ge=0, le=10)
    speed: float = Field(5.0, ge=0, le=10)


class ModelConfig(_Strict):
    name: str = Field(min_length=1)
    provider: str
    upstream_model: str | None = None
    conversation_types: list[ConversationType] = ["text-to-text"]
    context_window: int | None = Field(None, gt=0)
    pricing: Pricing = Pricing()
    priors: Priors = Priors()
    fallbacks: list[str] = []
    mock: dict[str, Any] = {}

    @property
    def upstream(self) -> str:
        return self.upstream_model or self.name

    @field_validator("conversation_types")
    @classmethod
    def _not_empty(cls, value: list[ConversationType]) -> list[ConversationType]:
        if not value:
            raise ValueError(f"list at least one of {', '.join(CONVERSATION_TYPES)}")
        return value


class RouteConfig(_Strict):
    name: str = Field(min_length=1)
    models: list[str] = Field(min_length=1)
    optimization: Optimization = "accuracy"


class SelectionConfig(_Strict):
    max_attempts: int = Field(3, ge=1, le=10)
    exploration_rate: float = Field(0.03, ge=0, le=1)
    exploration_bonus: float = Field(0.35, ge=0, le=2)
    blacklist_threshold: int = Field(3, ge=1)
    blacklist_base_seconds: float = Field(3600.0, gt=0)
    blacklist_max_seconds: float = Field(86400.0, gt=0)
    when_all_blacklisted: Literal["reject", "probe"] = "reject"
    deadline_seconds: float = Field(300.0, gt=0)
    prior_weight: float = Field(20.0, gt=0)
    score_refresh_seconds: float = Field(0.05, ge=0)
    seed: int | None = None


class StorageConfig(_Strict):
    # $GATEWISE_STORAGE_URL overrides it (parse_config). Not in repr: it may hold a password.
    url: str = Field("sqlite:///gatewise.db", repr=False)
    pool_size: int = Field(10, ge=1)  # connections per process (PostgreSQL)
    log_payloads: bool = False
    retention_days: float = Field(30.0, gt=0)
    flush_interval: float = Field(1.0, gt=0)
    queue_size: int = Field(10000, gt=0)
    # Workers and replicas on one store route on what all of them observed, refreshed
    # every share_interval seconds (benches every half of it). False: each process
    # reads the others' state at start only.
    share: bool = True
    share_interval: float = Field(1.0, gt=0, le=60)


class Config(_Strict):
    server: ServerConfig = ServerConfig()
    providers: list[ProviderConfig] = []
    models: list[ModelConfig] = []
    routes: list[RouteConfig] = []
    selection: SelectionConfig = SelectionConfig()
    storage: StorageConfig = StorageConfig()
    source: str = "<memory>"

    @model_validator(mode="after")
    def _cross_references(self) -> Config:
        _unique("providers", [p.name for p in self.providers])
        _unique("models", [m.name for m in self.models])
        _unique("routes", [r.name for r in self.routes])
        providers = {p.name for p in self.providers}
        models = {m.name for m in self.models}
        for i, model in enumerate(self.models):
            if model.provider not in providers:
                raise ValueError(
                    f"models[{i}].provider: unknown provider '{model.provider}'"
                    f" (expected one of: {', '.join(sorted(providers)) or 'none defined'})"
                )
            if model.mock:
                try:
                    MockConfig.model_validate(
                        {**self.provider(model.provider).mock.model_dump(), **model.mock}
                    )
                except ValidationError as exc:
                    first = exc.errors(include_url=False)[0]
                    where = _location(first["loc"])
                    raise ValueError(f"models[{i}].mock.{where}: {first['msg']}") from None
            for j, name in enumerate(model.fallbacks):
                if name not in models:
                    raise ValueError(f"models[{i}].fallbacks[{j}]: unknown model '{name}'")
        for i, route in enumerate(self.routes):
            if route.name in models:
                raise ValueError(f"routes[{i}].name: '{route.name}' is already a model name")
            for j, name in enumerate(route.models):
                if name not in models:
                    raise ValueError(f"routes[{i}].models[{j}]: unknown model '{name}'")
        return self

    def provider(self, name: str) -> ProviderConfig:
        return next(p for p in self.providers if p.name == name)


def _unique(section: str, names: list[str]) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise ValueError(f"{section}[{i}].name: '{name}' is defined twice")
        seen.add(name)


def config_path(explicit: str | None = None) -> str:
    """The file to load: the explicit path, else $GATEWISE_CONFIG, else ./gateway.yaml."""
    return explicit or os.environ.get("GATEWISE_CONFIG") or DEFAULT_CONFIG_PATH


def load_config(path: str | os.PathLike[str], env: dict[str, str] | None = None) -> Config:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the configuration: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    return parse_config(raw if raw is not None else {}, source=source, env=env)


def parse_config(raw: Any, source: str = "<memory>", env: dict[str, str] | None = None) -> Config:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {_kind(raw)}")
    env = dict(os.environ) if env is None else env
    raw = dict(raw)
    _resolve_server(raw, env, source)
    _resolve_providers(raw, env, source)
    _resolve_storage(raw, env, source)
    raw["source"] = source
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def _resolve_server(raw: dict[str, Any], env: dict[str, str], source: str) -> None:
    server = raw.get("server")
    if server is None:
        return
    if not isinstance(server, dict):
        raise ConfigError(f"{source}: server: expected a mapping, got {_kind(server)}")
    server = dict(server)
    keys = server.get("api_keys")
    if isinstance(keys, list):
        resolved = [_expand(k, env) if isinstance(k, str) else k for k in keys]
        server["api_keys"] = [k for k in resolved if k != ""]
    token = server.get("admin_token")
    if isinstance(token, str):
        server["admin_token"] = _expand(token, env) or None
    raw["server"] = server


def _resolve_providers(raw: dict[str, Any], env: dict[str, str], source: str) -> None:
    providers = raw.get("providers")
    if providers is None:
        return
    if not isinstance(providers, list):
        raise ConfigError(f"{source}: providers: expected a list, got {_kind(providers)}")
    resolved = []
    for entry in providers:
        if not isinstance(entry, dict):
            resolved.append(entry)
            continue
        entry = dict(entry)
        missing: list[str] = []
        for key in ("api_key", "base_url"):
            if isinstance(entry.get(key), str):
                missing += _unset(entry[key], env)
                entry[key] = _expand(entry[key], env) or None
        if isinstance(entry.get("headers"), dict):
            headers = {}
            for name, value in entry["headers"].items():
                if isinstance(value, str):
                    missing += _unset(value, env)
                    value = _expand(value, env)
                headers[name] = value
            entry["headers"] = headers
        entry["missing_env"] = tuple(missing)
        resolved.append(entry)
    raw["providers"] = resolved


def _resolve_storage(raw: dict[str, Any], env: dict[str, str], source: str) -> None:
    """$GATEWISE_STORAGE_URL, when set, replaces storage.url: the database (and its
    password) can come from the environment, not the file."""
    url = env.get(STORAGE_URL_ENV)
    if not url:
        return
    storage = raw.get("storage")
    if storage is None:
        storage = {}
    if not isinstance(storage, dict):
        raise ConfigError(f"{source}: storage: expected a mapping, got {_kind(storage)}")
    raw["storage"] = {**storage, "url": url}


def _expand(value: str, env: dict[str, str]) -> str:
    return _ENV_REF.sub(lambda m: env.get(m.group(1), ""), value)


def _unset(value: str, env: dict[str, str]) -> list[str]:
    return [name for name in _ENV_REF.findall(value) if not env.get(name)]


def _describe(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for err in exc.errors(include_url=False):
        where = _location(err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "missing":
            message = "required key is missing"
        lines.append(f"  {where}: {message}" if where else f"  {message}")
    return "\n".join(lines)


def _location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith("function-") or part in ("literal", "str", "int"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _kind(value: Any) -> str:
    return type(value).__name__ if value is not None else "nothing"
