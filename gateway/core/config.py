"""Turns `gateway.yaml` into one validated, resolved object, once, at start.

Pydantic is used here and only here: the request path reads plain attributes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.core.types import CONVERSATION_TYPES, ConversationType, Optimization
from providers.base import Usage
from providers.factory import TransportKind
from providers.http1.proxy import Proxy
from providers.mock.config import MockConfig as MockConfig  # the gateway's YAML embeds it
from providers.tls import TlsOptions
from providers.transport import MAX_BODY

__all__ = [
    "COMBINATION",
    "DEFAULT_CONFIG_PATH",
    "EXPERIMENT_METRICS",
    "STORAGE_URL_ENV",
    "ArmConfig",
    "ComparisonConfig",
    "Config",
    "ConfigError",
    "ExperimentConfig",
    "GuardConfig",
    "KeyBudget",
    "KeyConfig",
    "KeyRateLimit",
    "ModelConfig",
    "ProviderConfig",
    "RouteConfig",
    "check_experiment",
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


class ExhaustedRoute(_Strict):
    route: str  # served instead when the budget is spent (usually a cheaper route)


class KeyBudget(_Strict):
    """Spend caps in USD, from the same cost accounting as the dashboard (UTC days and
    months). Spent: refused with 429 insufficient_quota, or served by `route`."""

    daily_usd: float | None = Field(None, gt=0)
    monthly_usd: float | None = Field(None, gt=0)
    when_exhausted: Literal["reject"] | ExhaustedRoute = "reject"


class KeyRateLimit(_Strict):
    """Over the last 60 seconds (and at once), across the fleet; 429 with Retry-After
    past them."""

    requests_per_minute: int | None = Field(None, gt=0)
    tokens_per_minute: int | None = Field(None, gt=0)
    # Answers in flight at once (a stream until it ends), across the fleet: a key's long
    # streams cannot take every connection a worker has.
    max_concurrent: int | None = Field(None, gt=0)


class KeyConfig(_Strict):
    """A named client key: an identity that owns its answers, with what it may use.
    The secret is given as `key` (usually "${VAR}") or only as its SHA-256 (hex)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    key: str | None = Field(None, min_length=1, repr=False)
    key_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    routes: list[str] | None = None  # with `models`: what it may ask for (unset: anything)
    models: list[str] | None = None
    optimization: Optimization | None = None  # when the request names none
    budget: KeyBudget | None = None
    rate_limit: KeyRateLimit | None = None
    # Filled by the loader: the unset env variables that disable this key.
    missing_env: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _one_secret(self) -> KeyConfig:
        given = (self.key is not None) + (self.key_sha256 is not None)
        if given != 1 and not self.missing_env:
            raise ValueError("a key needs exactly one of 'key' and 'key_sha256'")
        return self

    @property
    def enabled(self) -> bool:
        return not self.missing_env


def _key_kind(value: Any) -> str:
    return "plain" if isinstance(value, str) else "named"


# A string or a mapping, told apart by type so that an error names one shape, not both.
_KeyEntry = Annotated[
    Annotated[str, Tag("plain")] | Annotated[KeyConfig, Tag("named")],
    Discriminator(_key_kind),
]


class ServerConfig(_Strict):
    # Plain strings (anonymous keys, named after their hash) or named keys.
    api_keys: list[_KeyEntry] = []
    admin_token: str | None = None
    # A token that reads GET /metrics only (Prometheus's bearer_token); the admin token
    # reads it too. Unset: /metrics is guarded like the admin API.
    metrics_token: str | None = None
    max_body_bytes: int = Field(10 * 1024 * 1024, gt=0)
    # The memory all request bodies one worker holds, and the whole answers read for them,
    # may take together, parsed (an upper estimate: providers/json_memory.py). Past it new
    # requests, and answers that do not fit, get 503 with Retry-After.
    max_body_memory: int = Field(1024**3, gt=0)
    cors: CorsConfig | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Inbound limits, per worker (gateway/server/protocol.py enforces them). A connection
    # must send a complete request head within header_timeout seconds of connecting (or of
    # the head's first byte, on a kept-alive connection): silent and trickling clients are
    # cut at that deadline, not per byte.
    header_timeout: float = Field(10.0, gt=0, le=300)
    # A request body must arrive whole within body_timeout seconds of its head's end (not
    # reset per byte: a trickled body is cut too); past it, 408 and the connection closed.
    # 60 s carries the largest body (max_body_bytes, 10 MiB) at 1.4 Mbit/s.
    body_timeout: float = Field(60.0, gt=0, le=3600)
    # A kept-alive connection with no request for this long is closed. Longer than the
    # 60 s nginx keeps idle upstream connections, so that nginx in front never reuses one
    # the gateway is closing.
    idle_timeout: float = Field(75.0, gt=0, le=3600)
    # Open client connections per worker; one more is answered 503 with Retry-After and
    # closed. Unset: half the worker's open-file limit, less 64 files for the store, logs
    # and listener (a stream holds two files: its client's and its upstream's).
    max_connections: int | None = Field(None, gt=0)
    # A client that takes nothing of its answer for this long while the worker's write
    # buffer for it is full is disconnected (nginx's send_timeout): a stream it stalls is
    # recorded as the client's leaving, not the model's failure.
    send_timeout: float = Field(60.0, gt=0, le=3600)
    # A stream that wrote nothing for this long (its upstream thinking, or preparing a
    # tool call) gets an SSE comment, so that a proxy or load balancer in front does not
    # close it as idle (60 s in AWS ALB's and nginx's defaults); one whose answer has not
    # begun gets its head first (gateway/http/heartbeat.py, EarlyHead). 0: never.
    stream_keepalive: float = Field(15.0, ge=0, le=300)
    # On SIGTERM a worker stops accepting and gives the answers under way this long to
    # finish; then it ends each in its API's shape (a stream: an error event and its end
    # marker; an answer not begun: 503 with Retry-After) and exits. Under Kubernetes'
    # default 30 s grace period, with time left to write them and store the last records.
    shutdown_timeout: float = Field(25.0, ge=0, le=3600)
    # A request line and headers larger than this, or more headers, get 431.
    max_header_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    max_headers: int = Field(100, ge=8, le=10_000)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _header_safe(name: str) -> str:
    """Model and provider names go out in every answer's x-gatewise-* headers, rendered as
    they are (gateway.core.headers): no control character may split the head."""
    if _CONTROL.search(name):
        raise ValueError("must not contain control characters (it is sent in a header)")
    return name


_HeaderSafeName = Annotated[str, Field(min_length=1), AfterValidator(_header_safe)]


class ProviderConfig(_Strict):
    name: _HeaderSafeName
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
    # TLS to a private upstream (PEM files): ca_file is added to the system's roots for
    # this provider only; client_cert (and client_key, unless the key is in the cert's
    # file) is the certificate the gateway presents.
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    transport: TransportKind = "native"  # every transport offered passes the same suite
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

    @field_validator("base_url")
    @classmethod
    def _no_credentials_in_base_url(cls, value: str | None) -> str | None:
        # A user:password@ in the url would be sent nowhere useful and shown everywhere
        # the url is (check, logs): refuse it, without repeating it.
        if value and "@" in urlsplit(value).netloc:
            raise ValueError(
                "base_url must not contain a user name or password (user:password@host); "
                "put the key in api_key, or other credentials in headers "
                "(e.g. Authorization: Basic ...)"
            )
        return value

    @property
    def tls(self) -> TlsOptions | None:
        if not (self.ca_file or self.client_cert or self.client_key):
            return None
        return TlsOptions(self.ca_file, self.client_cert, self.client_key)

    @model_validator(mode="after")
    def _tls_files_load(self) -> ProviderConfig:
        """At load, not at the first request: a missing or wrong file names itself."""
        tls = self.tls
        if tls is not None and self.enabled:
            tls.context()  # its ValueError says which option and file
        return self

    @model_validator(mode="after")
    def _needs_base_url(self) -> ProviderConfig:
        if self.type != "mock" and not self.base_url and not self.missing_env:
            raise ValueError(f"provider of type '{self.type}' needs a base_url")
        return self


class Pricing(_Strict):
    input_per_million: float = Field(0.0, ge=0)
    output_per_million: float = Field(0.0, ge=0)
    # Prompt-cache reads and writes (Anthropic's cache_read / cache_creation input
    # tokens). Unset: the input price, so that an unpriced cache never makes an answer
    # look cheaper than it may have been.
    cached_input_per_million: float | None = Field(None, ge=0)
    cache_write_per_million: float | None = Field(None, ge=0)
    per_image: float = Field(0.0, ge=0)
    per_second: float = Field(0.0, ge=0)

    def cost_of(self, usage: Usage | None) -> float:
        """What an answer cost, from the usage the upstream reported."""
        if usage is None:
            return 0.0
        cost = (
            usage.prompt_tokens * self.input_per_million / 1_000_000
            + usage.completion_tokens * self.output_per_million / 1_000_000
            + usage.images * self.per_image
            + usage.seconds * self.per_second
        )
        if usage.cached_tokens or usage.cache_write_tokens:
            cost += self._cache_difference(usage)
        return cost

    def _cache_difference(self, usage: Usage) -> float:
        """Cached tokens are in prompt_tokens at the input price: re-price them."""
        read = self.cached_input_per_million
        write = self.cache_write_per_million
        difference = 0.0
        if read is not None:
            difference += usage.cached_tokens * (read - self.input_per_million)
        if write is not None:
            difference += usage.cache_write_tokens * (write - self.input_per_million)
        return difference / 1_000_000


class Priors(_Strict):
    accuracy: float = Field(5.0, ge=0, le=10)
    creativity: float = Field(5.0, ge=0, le=10)
    speed: float = Field(5.0, ge=0, le=10)


class ModelConfig(_Strict):
    name: _HeaderSafeName
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
    # Learn from ratings which of the route's models answers which kind of prompt well,
    # and route each text request on its own prompt (gateway/routing/prompt_router.py).
    per_prompt: bool = False
    # With `cost`: serve the cheapest model whose expected quality (learned from ratings)
    # is within this fraction of the best model's (0: the best; 1: the cheapest).
    quality_tolerance: float | None = Field(None, ge=0, le=1)


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


_DEFAULT_STORAGE_URL = "sqlite:///gatewise.db"


class StorageConfig(_Strict):
    # $GATEWISE_STORAGE_URL overrides it (parse_config). Not in repr: it may hold a password.
    url: str = Field(_DEFAULT_STORAGE_URL, repr=False)
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


# ---- experiments (issue 21): A/B tests on a route --------------------------------------

EXPERIMENT_METRICS = (
    "overall", "accuracy", "relevance", "helpfulness", "creativity", "auto_score", "cost",
    "latency",
)  # fmt: skip
ExperimentMetric = Literal[
    "overall", "accuracy", "relevance", "helpfulness", "creativity", "auto_score", "cost",
    "latency",
]  # fmt: skip
# `metric: combination`: a weighted sum of these per answer (`combination:` the weights).
COMBINATION = "combination"
_Metric = Literal[
    "overall", "accuracy", "relevance", "helpfulness", "creativity", "auto_score", "cost",
    "latency", "combination",
]  # fmt: skip
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# Request fields an arm may not set: they say what is asked, not how it is answered.
_FIXED_PARAMS = frozenset(
    {"model", "messages", "input", "prompt", "system", "instructions", "stream", "n", "user"}
)


class ArmConfig(_Strict):
    """One arm: a model, and how its requests change (a system prompt, parameters)."""

    name: str = Field(pattern=_NAME)
    model: str = Field(min_length=1)
    share: float | None = Field(None, ge=0, le=1)  # fixed split; unset everywhere: equal
    # Replaces the client's system prompt; "{system}" in it stands for the client's own.
    system_prompt: str | None = Field(None, max_length=20_000)
    params: dict[str, Any] = {}  # e.g. {temperature: 0.2}, set on every request of the arm

    @field_validator("params")
    @classmethod
    def _free_params(cls, value: dict[str, Any]) -> dict[str, Any]:
        fixed = sorted(set(value) & _FIXED_PARAMS)
        if fixed:
            raise ValueError(f"an arm cannot set {', '.join(fixed)}")
        return value


class GuardConfig(_Strict):
    """What stops an arm that harms users (its traffic goes to the control arm). Each is
    a sequential test at `alpha`, judged once the arm has `min_samples` answers."""

    max_error_rate: float | None = Field(None, gt=0, lt=1)
    max_latency_p95_ms: float | None = Field(None, gt=0)
    max_cost_per_answer_usd: float | None = Field(None, gt=0)
    min_samples: int = Field(20, ge=1)
    alpha: float = Field(0.01, gt=0, lt=0.5)


class ExperimentConfig(_Strict):
    name: str = Field(pattern=_NAME)
    route: str = Field(min_length=1)
    arms: list[ArmConfig] = Field(min_length=2, max_length=10)
    control: str | None = None  # the arm the others are compared to (unset: the first)
    metric: _Metric = "overall"
    # metric: combination: each answer's score is the weighted sum of these metrics
    # (higher is better: give cost and latency negative weights), e.g.
    # {overall: 1, cost: -100}. An answer counts once every part of it is known.
    combination: dict[ExperimentMetric, float] | None = None
    split: Literal["fixed", "adaptive"] = "fixed"
    min_share: float = Field(0.1, ge=0, le=0.5)  # adaptive: no arm gets less
    sticky_by: Literal["conversation", "user", "none"] = "conversation"
    guards: GuardConfig = GuardConfig()
    alpha: float = Field(0.05, gt=0, lt=0.5)  # the chance of a false winner, peeking included
    min_samples: int = Field(30, ge=2)  # observations per arm before any decision
    # Differences smaller than this do not matter: once the interval of every arm's
    # difference lies inside +-min_effect, "no detectable difference". Unset: 0.1 rating
    # points, 0.02 of auto score, 5 % of the control's mean cost or latency.
    min_effect: float | None = Field(None, gt=0)
    # Where the confidence sequence is narrowest: the observations per arm you expect.
    expected_samples: int = Field(150, ge=10)

    @property
    def control_arm(self) -> str:
        return self.control or self.arms[0].name

    @model_validator(mode="after")
    def _arms_agree(self) -> ExperimentConfig:
        names = [a.name for a in self.arms]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"arms[{i}].name: the arm '{name}' is defined twice")
        if self.control is not None and self.control not in names:
            raise ValueError(f"control: unknown arm '{self.control}' (arms: {', '.join(names)})")
        shares = [a.share for a in self.arms]
        given = [s for s in shares if s is not None]
        if given and len(given) != len(shares):
            missing = next(i for i, s in enumerate(shares) if s is None)
            raise ValueError(f"arms[{missing}].share: give every arm a share, or none")
        if given and abs(sum(given) - 1.0) > 1e-6:
            raise ValueError(f"arms: the shares must sum to 1, they sum to {round(sum(given), 6)}")
        if self.metric == COMBINATION:
            if not self.combination or not any(self.combination.values()):
                raise ValueError(
                    "combination: give the weights of the metrics to combine, "
                    "e.g. {overall: 1, cost: -100}"
                )
        elif self.combination is not None:
            raise ValueError("combination: only with metric: combination")
        return self

    def shares(self) -> list[float]:
        given = [a.share for a in self.arms]
        if any(s is None for s in given):
            return [1.0 / len(self.arms)] * len(self.arms)
        return [float(s or 0.0) for s in given]


def check_experiment(
    experiment: ExperimentConfig,
    models: dict[str, ModelConfig],
    routes: Collection[str],
    where: str = "",
) -> None:
    """The names an experiment uses exist: its route, and every arm's model (serving at
    least one conversation type with the route). Raises ValueError naming the path."""
    if experiment.route not in routes:
        raise ValueError(
            f"{where}route: unknown route '{experiment.route}'"
            f" (expected one of: {', '.join(sorted(routes)) or 'none defined'})"
        )
    for j, arm in enumerate(experiment.arms):
        if arm.model not in models:
            raise ValueError(f"{where}arms[{j}].model: unknown model '{arm.model}'")


class ComparisonConfig(_Strict):
    """A same-prompt comparison: a `sample` share of the route's answered requests is
    also sent to `challenger`, off the client's path, for at most `max_daily_usd` a UTC
    day across the fleet (gateway/routing/comparisons.py)."""

    route: str
    challenger: str
    sample: float = Field(gt=0, le=1)
    max_daily_usd: float = Field(gt=0)
    # Shadow calls in flight per process; a sampled request past it is not shadowed.
    max_concurrent: int = Field(4, ge=1, le=256)
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

    @property
    def key(self) -> str:
        """Its name in the API and the store: `name`, else "<route>-vs-<challenger>"."""
        return self.name or f"{self.route}-vs-{self.challenger}"


class Config(_Strict):
    server: ServerConfig = ServerConfig()
    providers: list[ProviderConfig] = []
    models: list[ModelConfig] = []
    routes: list[RouteConfig] = []
    selection: SelectionConfig = SelectionConfig()
    storage: StorageConfig = StorageConfig()
    experiments: list[ExperimentConfig] = []
    comparisons: list[ComparisonConfig] = []
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
        routes = {r.name for r in self.routes}
        key_names = [k.name for k in self.server.api_keys if isinstance(k, KeyConfig)]
        for i, name in enumerate(key_names):
            if name in key_names[:i]:
                raise ValueError(f"server.api_keys: the name '{name}' is used twice")
        for i, key in enumerate(self.server.api_keys):
            if not isinstance(key, KeyConfig):
                continue
            fallback = key.budget.when_exhausted if key.budget is not None else "reject"
            if not isinstance(fallback, str) and fallback.route not in routes | models:
                raise ValueError(
                    f"server.api_keys[{i}].budget.when_exhausted.route: unknown route "
                    f"'{fallback.route}'"
                )
            for field, known, what in (("routes", routes, "route"), ("models", models, "model")):
                for j, name in enumerate(getattr(key, field) or ()):
                    if name not in known:
                        raise ValueError(
                            f"server.api_keys[{i}].{field}[{j}]: unknown {what} '{name}'"
                        )
        for i, route in enumerate(self.routes):
            if route.name in models:
                raise ValueError(f"routes[{i}].name: '{route.name}' is already a model name")
            for j, name in enumerate(route.models):
                if name not in models:
                    raise ValueError(f"routes[{i}].models[{j}]: unknown model '{name}'")
            if route.per_prompt and len(set(route.models)) < 2:
                raise ValueError(
                    f"routes[{i}].per_prompt: a route needs at least two models to choose "
                    "between per prompt"
                )
            if route.per_prompt and route.optimization != "accuracy":
                raise ValueError(
                    f"routes[{i}].per_prompt: learns the accuracy of answers from ratings, "
                    f"so it needs optimization 'accuracy', not '{route.optimization}'"
                )
        self._check_experiments()
        _check_comparisons(self)
        return self

    def _check_experiments(self) -> None:
        _unique("experiments", [e.name for e in self.experiments])
        models = {m.name: m for m in self.models}
        routes = {r.name for r in self.routes}
        running: dict[str, str] = {}
        for i, experiment in enumerate(self.experiments):
            check_experiment(experiment, models, routes, f"experiments[{i}].")
            if experiment.route in running:
                raise ValueError(
                    f"experiments[{i}].route: the route '{experiment.route}' already has the "
                    f"experiment '{running[experiment.route]}'; one experiment per route"
                )
            running[experiment.route] = experiment.name

    def provider(self, name: str) -> ProviderConfig:
        return next(p for p in self.providers if p.name == name)


def _check_comparisons(config: Config) -> None:
    """`comparisons:` names a route and a model that exist, the challenger answers text,
    and no two entries share a name."""
    routes = {r.name for r in config.routes}
    models = {m.name: m for m in config.models}
    seen: set[str] = set()
    for i, comparison in enumerate(config.comparisons):
        if comparison.route not in routes:
            raise ValueError(
                f"comparisons[{i}].route: unknown route '{comparison.route}'"
                f" (expected one of: {', '.join(sorted(routes)) or 'none defined'})"
            )
        challenger = models.get(comparison.challenger)
        if challenger is None:
            raise ValueError(
                f"comparisons[{i}].challenger: unknown model '{comparison.challenger}'"
            )
        if "text-to-text" not in challenger.conversation_types:
            raise ValueError(
                f"comparisons[{i}].challenger: '{challenger.name}' does not serve "
                "text-to-text; only text answers are compared"
            )
        if comparison.key in seen:
            raise ValueError(
                f"comparisons[{i}]: '{comparison.key}' is defined twice (give it a name)"
            )
        seen.add(comparison.key)


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
    if isinstance(raw, dict):
        raw = _anchor_sqlite(raw, Path(path).parent)
    return parse_config(raw if raw is not None else {}, source=source, env=env)


def _anchor_sqlite(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """A relative SQLite path in the file (the default's included) is relative to the
    file, not to wherever the gateway was started: `gatewise serve --config
    /etc/gatewise/gateway.yaml` keeps one database whatever its working directory.
    $GATEWISE_STORAGE_URL, applied after, is the caller's and stays as given."""
    storage = raw.get("storage", {})
    if not isinstance(storage, dict):
        return raw  # parse_config names the problem
    url = storage.get("url", _DEFAULT_STORAGE_URL)
    prefix = "sqlite:///"
    if not isinstance(url, str) or not url.startswith(prefix) or "$" in url:
        return raw
    relative = url[len(prefix) :]
    if not relative or relative.startswith("/") or relative == ":memory:":
        return raw  # absolute (four slashes), or invalid: left to the store to judge
    anchored = prefix + str((base / relative).absolute())
    return {**raw, "storage": {**storage, "url": anchored}}


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
        resolved: list[Any] = []
        for key in keys:
            if isinstance(key, str):
                if (expanded := _expand(key, env)) != "":
                    resolved.append(expanded)
            elif isinstance(key, dict) and isinstance(key.get("key"), str):
                missing = _unset(key["key"], env)
                resolved.append({**key, "key": _expand(key["key"], env) or None,
                                 "missing_env": tuple(missing)})  # fmt: skip
            else:
                resolved.append(key)
        server["api_keys"] = resolved
    for name in ("admin_token", "metrics_token"):
        token = server.get(name)
        if isinstance(token, str):
            server[name] = _expand(token, env) or None
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
        if err["type"] == "model_type" and err["loc"][-1] == "named":
            message = "expected a key (a string) or a mapping with name and key"
        elif err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "missing":
            message = "required key is missing"
        inner = _INNER_PATH.match(message) if where.startswith("experiments[") else None
        if inner is not None:  # a nested model's validator named a path inside it
            sep = "" if inner.group(1).startswith("[") else "."
            where, message = where + sep + inner.group(1), message[inner.end() :]
        lines.append(f"  {where}: {message}" if where else f"  {message}")
    return "\n".join(lines)


_INNER_PATH = re.compile(r"^([a-z_]+(?:\[\d+\])?(?:\.[a-z_]+(?:\[\d+\])?)*): ")
_UNION_TAGS = ("literal", "str", "int", "plain", "named")  # pydantic's, not the file's


def _location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith("function-") or part in _UNION_TAGS:
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _kind(value: Any) -> str:
    return type(value).__name__ if value is not None else "nothing"
