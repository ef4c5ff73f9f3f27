"""What a client may ask for: models, routes and the providers behind them.

Everything is resolved once at start, so the request path does dictionary lookups only.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.core.config import Config, MockConfig, ModelConfig, ProviderConfig
from gateway.core.errors import InvalidRequest, ModelUnavailable, NotFound
from gateway.core.types import CONVERSATION_TYPES, ConversationType, Optimization
from providers.base import Endpoint, Provider
from providers.factory import create_provider
from providers.transport import Timeout

__all__ = ["Catalog", "Target", "build_provider"]


@dataclass(frozen=True, slots=True)
class Target:
    """The models that may serve one requested name, in their configured order."""

    name: str
    route: str | None
    optimization: Optimization | None
    candidates: tuple[ModelConfig, ...]
    tolerance: float | None = None  # the route's quality_tolerance


class Catalog:
    def __init__(self, config: Config, providers: Mapping[str, Provider]) -> None:
        self.config = config
        self.providers = providers
        self.models = {m.name: m for m in config.models}
        self.routes = {r.name: r for r in config.routes}
        self.enabled = {m.name for m in config.models if config.provider(m.provider).enabled}
        self._targets: dict[tuple[str, ConversationType], Target] = {}
        self._unable: dict[Endpoint, frozenset[str]] = {}
        for name in (*self.models, *self.routes):
            for ctype in CONVERSATION_TYPES:
                target = self._build(name, ctype)
                if target is not None:
                    self._targets[(name, ctype)] = target

    def resolve(self, name: object, ctype: ConversationType) -> Target:
        target = self._targets.get((name, ctype)) if isinstance(name, str) else None
        if target is not None:
            return target
        if name in self.models:
            model = self.models[name]
            if ctype not in model.conversation_types:
                raise InvalidRequest(
                    f"The model '{name}' does not serve {ctype}; it serves "
                    f"{', '.join(model.conversation_types)}.",
                    param="model",
                    code="model_not_supported",
                )
            provider = self.config.provider(model.provider)
            raise ModelUnavailable(
                f"The model '{name}' is unavailable: its provider '{provider.name}' is disabled "
                f"because {', '.join(provider.missing_env)} is not set.",
                code="provider_disabled",
            )
        if name in self.routes:
            raise InvalidRequest(
                f"The route '{name}' has no available model that serves {ctype}.",
                param="model",
                code="model_not_supported",
            )
        raise NotFound(
            f"The model '{name}' does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )

    def provider_for(self, model: ModelConfig) -> Provider:
        return self.providers[model.provider]

    def unable(self, endpoint: Endpoint) -> frozenset[str]:
        """The models whose provider cannot serve `endpoint` (usually none): one lookup on
        the request path instead of asking every ranked model's provider."""
        found = self._unable.get(endpoint)
        if found is None:
            found = self._unable[endpoint] = frozenset(
                name
                for name, model in self.models.items()
                if model.provider in self.providers
                and not self.providers[model.provider].supports(endpoint)
            )
        return found

    def _build(self, name: str, ctype: ConversationType) -> Target | None:
        """A route's members are interchangeable; a named model is not: it is served by
        itself or by the `fallbacks:` its configuration names, never by a route's other
        members (which may be dearer or weaker: issue 19)."""
        if name in self.routes:
            route = self.routes[name]
            names, optimization, route_name = route.models, route.optimization, route.name
            tolerance = route.quality_tolerance
        else:
            model = self.models[name]
            names = [name, *model.fallbacks]
            optimization = None
            route_name = None
            tolerance = None
            if name not in self.enabled or ctype not in model.conversation_types:
                return None
        seen: dict[str, ModelConfig] = {}
        for candidate in names:
            model = self.models[candidate]
            if candidate in self.enabled and ctype in model.conversation_types:
                seen.setdefault(candidate, model)
        if not seen:
            return None
        return Target(name, route_name, optimization, tuple(seen.values()), tolerance)

    def listing(self) -> list[dict[str, object]]:
        """Entries for GET /v1/models: every available model, then every route."""
        created = 1_700_000_000
        out: list[dict[str, object]] = [
            {"id": m.name, "object": "model", "created": created, "owned_by": m.provider}
            for m in self.config.models
            if m.name in self.enabled
        ]
        out += [
            {"id": r.name, "object": "model", "created": created, "owned_by": "gatewise"}
            for r in self.config.routes
        ]
        return out


def build_provider(config: ProviderConfig, models: list[ModelConfig]) -> Provider:
    """Create one provider with its own connection pool."""
    behaviours = None
    if config.type == "mock":
        # Each model gets its own failure sequence unless the YAML pins a seed.
        behaviours = {
            m.upstream: MockConfig.model_validate(
                {**config.mock.model_dump(), "seed": zlib.crc32(m.name.encode()), **m.mock}
            )
            for m in models
        }
    return create_provider(
        config.type,
        config.name,
        base_url=config.base_url,  # the config validator guarantees one where needed
        api_key=config.api_key,
        headers=config.headers,
        transport=config.transport,
        timeout=Timeout(
            config.timeout, config.connect_timeout, config.pool_timeout, config.stream_timeout
        ),
        max_connections=config.max_connections,
        max_body=config.max_response_bytes,
        proxy=config.proxy,
        tls=config.tls,
        mock=config.mock,
        mock_models=behaviours,
    )
