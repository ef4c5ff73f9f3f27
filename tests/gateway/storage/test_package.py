"""The storage package's public surface: every module declares `__all__`, and it holds."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import gateway.storage

MODULES = sorted(
    f"gateway.storage.{info.name}" for info in pkgutil.iter_modules(gateway.storage.__path__)
)


@pytest.mark.parametrize("name", ["gateway.storage", *MODULES])
def test_every_module_declares_what_it_exports(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__dict__.get("__all__")
    assert exported, f"{name} declares no __all__"
    assert all(hasattr(module, item) for item in exported)


def test_the_package_exports_the_interface_and_its_backends() -> None:
    surface = {"Query", "Store", "StoreError", "SQLiteStore", "PostgresStore", "create_store"}
    assert set(gateway.storage.__all__) == surface
