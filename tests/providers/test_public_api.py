"""The surface of the providers package, and the rules that keep it a library of its own:
every module declares `__all__`, nothing imports the gateway, no module imports another
that imports it back."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import providers

ROOT = Path(providers.__file__).parent
PUBLIC = {
    # the provider interface (base.py)
    "Provider", "Call", "Reply", "Usage", "Chunk", "ChunkStream", "BinaryReply", "Endpoint",
    # the errors (errors.py)
    "ProviderError", "UpstreamError", "TransportError", "UpstreamTimeout",
    "UpstreamConnectionError", "InvalidResponse", "ResponseTooLarge", "UpstreamStatusError",
    "UpstreamServerError", "RateLimited", "UpstreamAuthError", "UpstreamNotFound",
    "RequestRejected", "BadRequest", "ContextLengthExceeded", "UnsupportedRequest",
    "CapacityExhausted", "ClientGone", "GatewayStopped",
    "classify_status", "redact", "upstream_json",
    # a request's cancellation by the server's shutdown deadline, told from a client's
    "STOPPING", "stopped",
    # the network (transport.py)
    "Transport", "Timeout", "UpstreamResponse", "UpstreamStream", "MAX_BODY",
    # building (factory.py)
    "create_transport", "create_provider", "ProviderKind", "TransportKind", "TRANSPORTS",
    "TlsOptions",
    # the implementations
    "OpenAIProvider", "AnthropicProvider", "MockProvider", "MockConfig", "NativeTransport",
}  # fmt: skip


def modules() -> list[str]:
    names = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_the_package_exports_exactly_the_public_surface() -> None:
    assert set(providers.__all__) == PUBLIC
    assert len(providers.__all__) == len(PUBLIC)  # no name twice
    for name in PUBLIC:
        assert getattr(providers, name) is not None


def test_every_module_declares_all_and_defines_what_it_lists() -> None:
    for name in modules():
        module = importlib.import_module(name)
        exported = getattr(module, "__all__", None)
        assert isinstance(exported, list), f"{name} declares no __all__"
        for item in exported:
            assert hasattr(module, item), f"{name}.__all__ lists {item!r}, which it lacks"


def test_public_names_come_from_the_module_that_defines_them() -> None:
    for name in PUBLIC:
        obj = getattr(providers, name)
        home = getattr(obj, "__module__", None)
        if home is not None and home.startswith("providers."):
            assert name in importlib.import_module(home).__all__, (name, home)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at the top level of the file) for every import in `path`."""
    tree = ast.parse(path.read_text())
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name, top) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                found.append((child.module, top))
            inner = top and not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            visit(child, inner)

    visit(tree, True)
    return found


def test_providers_imports_nothing_from_the_gateway() -> None:
    for path in ROOT.rglob("*.py"):
        for module, _ in _imports(path):
            top = module.split(".")[0]
            assert top not in ("gateway", "admin_ui"), f"{path} imports {module}"


def test_no_import_cycles_between_modules() -> None:
    """Package __init__ files only gather the surface; between the other modules the
    import graph (top-level imports, TYPE_CHECKING ones included) has no cycle."""
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        if path.name == "__init__.py":
            continue
        name = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        graph[name] = {m for m, top in _imports(path) if top and m.startswith("providers.")}
    done: set[str] = set()

    def walk(node: str, path: list[str]) -> None:
        if node in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(node) :], node]))
        if node in done:
            return
        for nxt in graph.get(node, ()):
            walk(nxt, [*path, node])
        done.add(node)

    for node in graph:
        walk(node, [])
