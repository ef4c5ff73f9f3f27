"""Client keys made, changed, rotated and revoked at runtime, through the admin API.

They live in the store (state kind "key", one row per name), so every worker and replica
knows them: an admin action is stored before it is acknowledged, and every process pulls
the rows that changed every `interval` (0.5 s), so a revoked key stops working
everywhere within about a second. The store keeps only the SHA-256 of a secret; the
secret itself is shown once, in the answer that created or rotated it. A name, once
used, stays taken (revoked keys keep their row): answers belong to names, and a new key
must not inherit the ratings rights of an old one.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Collection
from typing import Any

from pydantic import ValidationError

from gateway.core.config import KeyConfig
from gateway.core.errors import Conflict, InvalidRequest, NotFound
from gateway.core.keys import KeyRing, Tenant, digest, tenant_of_config
from gateway.core.tasks import cancel
from gateway.storage.base import Store

__all__ = ["KEYS", "KeyRegistry"]

log = logging.getLogger("gatewise.keys")

KEYS = "key"  # state kind: name -> the key's settings, its secret's hash, revoked or not
_SETTINGS = ("routes", "models", "optimization", "budget", "rate_limit")


def _secret() -> str:
    return "gw-" + secrets.token_urlsafe(32)


class KeyRegistry:
    def __init__(
        self,
        ring: KeyRing,
        store: Store,
        known: Collection[str],
        *,
        interval: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ring = ring
        self.store = store
        self.known = frozenset(known)  # the route and model names a key may be scoped to
        self.interval = interval
        self.clock = clock
        self.rows: dict[str, dict[str, Any]] = {}  # name -> stored row
        self._pulled: float | None = None
        self.failing = False
        self._task: asyncio.Task[None] | None = None

    # -- admin actions: stored, then acknowledged ------------------------------------------
    async def create(self, spec: Any) -> tuple[dict[str, Any], str]:
        """A new key from `spec` (name and settings); returns its row and its secret."""
        if not isinstance(spec, dict):
            raise InvalidRequest("The body must be a JSON object with at least a name.")
        name = spec.get("name")
        if isinstance(name, str) and (name in self.rows or self._configured(name)):
            raise Conflict(f"A key named '{name}' exists (or existed); names are not reused.")
        secret = _secret()
        row = {**self._validated(spec, secret), "revoked": False, "created_at": self.clock()}
        await self._save(row)
        return self.describe(row), secret

    async def update(self, name: str, patch: Any) -> dict[str, Any]:
        row = self._runtime_row(name)
        if not isinstance(patch, dict) or "name" in patch or "key" in patch:
            raise InvalidRequest(
                f"A key's settings ({', '.join(_SETTINGS)}) can be changed; not its name or "
                "secret (rotate it for a new secret)."
            )
        merged = {**{k: row.get(k) for k in _SETTINGS}, **patch, "name": name}
        updated = {**row, **self._validated(merged, None), "key_sha256": row["key_sha256"]}
        await self._save(updated)
        return self.describe(updated)

    async def rotate(self, name: str) -> tuple[dict[str, Any], str]:
        """A new secret for the key; the old one stops working at once here, and within
        one pull everywhere."""
        row = self._runtime_row(name)
        secret = _secret()
        rotated = {**row, "key_sha256": digest(secret), "rotated_at": self.clock()}
        await self._save(rotated)
        return self.describe(rotated), secret

    async def revoke(self, name: str) -> dict[str, Any]:
        row = self._runtime_row(name)
        revoked = {**row, "revoked": True, "revoked_at": self.clock()}
        await self._save(revoked)
        return self.describe(revoked)

    # -- reading --------------------------------------------------------------------------
    def describe(self, row: dict[str, Any]) -> dict[str, Any]:
        """A runtime key as the admin sees it: never its secret or its hash."""
        return {
            "object": "api_key",
            "name": row["name"],
            "source": "runtime",
            "revoked": row.get("revoked", False),
            "created_at": row.get("created_at"),
            **{k: row.get(k) for k in _SETTINGS},
        }

    def listing(self) -> list[dict[str, Any]]:
        return [self.describe(row) for _, row in sorted(self.rows.items())]

    # -- the fleet ------------------------------------------------------------------------
    async def pull(self) -> None:
        """Take in the rows changed since the last pull (all of them at first)."""
        began = self.clock()
        since = None if self._pulled is None else self._pulled - 10.0
        rows = await self.store.load_states(KEYS, changed_since=since)
        self._pulled = began
        if rows:
            self.rows.update(rows)
            self._apply()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gatewise-keys")

    async def close(self) -> None:
        await cancel(self._task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.pull()
            except self.store.OUTAGES as exc:
                if not self.failing:  # once per outage, not every half second
                    log.warning("runtime keys cannot be read: %s", type(exc).__name__)
                self.failing = True
            else:
                if self.failing:
                    log.warning("runtime keys are read again")
                self.failing = False

    # -- inside ---------------------------------------------------------------------------
    async def _save(self, row: dict[str, Any]) -> None:
        await self.store.save_states([(KEYS, row["name"], row)])  # durable, then acknowledged
        self.rows[row["name"]] = row
        self._apply()

    def _apply(self) -> None:
        working: dict[str, Tenant] = {}
        for row in self.rows.values():
            if not row.get("revoked") and not self._configured(row["name"]):
                config = KeyConfig.model_validate(
                    {"name": row["name"], "key_sha256": row["key_sha256"],
                     **{k: row.get(k) for k in _SETTINGS}}
                )  # fmt: skip
                working[row["key_sha256"]] = tenant_of_config(config)
        self.ring.set_runtime(working, ever=bool(self.rows))

    def _configured(self, name: str) -> bool:
        return any(t.name == name for t in self.ring.configured())

    def _runtime_row(self, name: str) -> dict[str, Any]:
        if self._configured(name):
            raise Conflict(
                f"The key '{name}' is defined in the configuration file; change it there."
            )
        row = self.rows.get(name)
        if row is None:
            raise NotFound(f"Unknown API key '{name}'.", param="name", code="key_not_found")
        return row

    def _validated(self, spec: dict[str, Any], secret: str | None) -> dict[str, Any]:
        unknown = set(spec) - {"name", *_SETTINGS}
        if unknown:
            raise InvalidRequest(
                f"Unknown field(s): {', '.join(sorted(unknown))}. Allowed: name, "
                f"{', '.join(_SETTINGS)}."
            )
        hashed = digest(secret) if secret is not None else "0" * 64
        try:
            config = KeyConfig.model_validate({**spec, "key_sha256": hashed})
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise InvalidRequest(
                f"{where}: {first['msg'].removeprefix('Value error, ')}",
                param=where,
            ) from None
        for name in [*(config.routes or ()), *(config.models or ())]:
            if name not in self.known:
                raise InvalidRequest(f"Unknown route or model '{name}'.", param="routes")
        fallback = config.budget.when_exhausted if config.budget is not None else "reject"
        if not isinstance(fallback, str) and fallback.route not in self.known:
            raise InvalidRequest(
                f"Unknown route '{fallback.route}'.", param="budget.when_exhausted.route"
            )
        dumped = config.model_dump(mode="json", include={"name", *_SETTINGS})
        return {**dumped, "key_sha256": hashed}
