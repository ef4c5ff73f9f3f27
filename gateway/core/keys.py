"""Client keys as identities: who sent a request, what it may use, and whose answers are
whose.

A key is found by the SHA-256 of the presented secret, so the ring holds no secret at
all (configured keys are hashed when loaded; `key_sha256` never had one) and a lookup
is one hash and one dict access, whatever the number of keys. Comparing digests in a
dict does not leak the secret through timing: an attacker would have to find inputs
whose SHA-256 shares a growing prefix with the key's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.core.config import KeyBudget, KeyConfig, KeyRateLimit
from gateway.core.types import Optimization

__all__ = ["KeyRing", "Tenant", "digest", "tenant_of_config"]


_FOUND_MAX = 10_000  # secrets remembered at once (keys in use; more are hashed each time)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Tenant:
    """The holder of one client key. `allowed` is the route and model names it may ask
    for (None: any); `optimization` is used when a request names none."""

    name: str
    allowed: frozenset[str] | None = None
    optimization: Optimization | None = None
    budget: KeyBudget | None = None
    rate_limit: KeyRateLimit | None = None
    # Whether its requests are counted against anything (most keys: no). A field, not a
    # property: every request of every key asks.
    limited: bool = field(init=False, compare=False, repr=False)
    # How many of its answers may be in flight at once (None: any number).
    concurrency: int | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "limited", self.budget is not None or self.rate_limit is not None)
        limit = self.rate_limit
        object.__setattr__(self, "concurrency", limit.max_concurrent if limit else None)

    def may_use(self, name: str) -> bool:
        return self.allowed is None or name in self.allowed


class KeyRing:
    """The client keys: configured ones, and those made at runtime through the admin API
    (`set_runtime`, from the store). With none of either the gateway is open and requests
    have no owner (None), so every answer can be rated by anyone, as before keys existed.
    """

    def __init__(self, keys: Iterable[str | KeyConfig]) -> None:
        keys = list(keys)
        # A named key whose secret is unset disables that key, never opens the gateway.
        self._configured_any = bool(keys)
        self._runtime_any = False  # once a key was made at runtime, even if revoked since
        self._by_digest: dict[str, Tenant] = {}
        self._runtime: dict[str, Tenant] = {}
        # Secrets already found, so a request costs a dict lookup, not a SHA-256 (~1 µs).
        # Only working keys enter (a stranger's guesses never do); emptied whenever the
        # runtime keys change, so a revoked key is not found here either.
        self._found: dict[str, Tenant] = {}
        # The same, by the credential exactly as it arrived (`recall`): no parsing either.
        self._recalled: dict[bytes, Tenant] = {}
        for key in keys:
            if isinstance(key, str):
                hashed = digest(key)
                self._by_digest[hashed] = Tenant(f"key-{hashed[:8]}")
            elif key.enabled:
                hashed = key.key_sha256.lower() if key.key_sha256 else digest(key.key or "")
                self._by_digest[hashed] = tenant_of_config(key)

    @property
    def open(self) -> bool:
        return not (self._configured_any or self._runtime_any)

    def __len__(self) -> int:
        return len(self._by_digest) + len(self._runtime)

    def find(self, secret: str) -> Tenant | None:
        tenant = self._found.get(secret)
        if tenant is not None:
            return tenant
        hashed = digest(secret)
        tenant = self._by_digest.get(hashed) or self._runtime.get(hashed)
        if tenant is not None and len(self._found) < _FOUND_MAX:
            self._found[secret] = tenant
        return tenant

    def recall(self, raw: bytes) -> Tenant | None:
        """The holder of a credential as it arrived (a raw header value), if one was
        found for it before (`remember`)."""
        return self._recalled.get(raw)

    def remember(self, raw: bytes, tenant: Tenant) -> None:
        """`raw` was found to be `tenant`'s working credential (never a stranger's
        guess: only found keys are remembered, at most _FOUND_MAX, forgotten whenever
        the runtime keys change)."""
        if len(self._recalled) < _FOUND_MAX:
            self._recalled[raw] = tenant

    def tenants(self) -> list[Tenant]:
        return [*self._by_digest.values(), *self._runtime.values()]

    def configured(self) -> list[Tenant]:
        return list(self._by_digest.values())

    def set_runtime(self, by_digest: dict[str, Tenant], *, ever: bool) -> None:
        """The keys made at runtime that work now (by the SHA-256 of their secret), and
        whether any was ever made (a gateway whose keys were all revoked stays closed)."""
        if by_digest != self._runtime:
            self._found = {}
            self._recalled = {}
        self._runtime = by_digest
        self._runtime_any = self._runtime_any or ever or bool(by_digest)


def tenant_of_config(key: KeyConfig) -> Tenant:
    allowed = (
        None
        if key.routes is None and key.models is None
        else frozenset([*(key.routes or ()), *(key.models or ())])
    )
    return Tenant(key.name, allowed, key.optimization, key.budget, key.rate_limit)
