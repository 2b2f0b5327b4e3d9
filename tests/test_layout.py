"""The package's shape: shells load lazily, imports point down, no import cycles."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "identity_middleware"


def _imports_in_fresh_interpreter(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    output = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    return set(output.split())


# A Flask app serving a request, and a Django site serving one (sync and async), as users write them.
_FLASK_REQUEST = """
from flask import Flask
from identity_middleware import IdentityWSGIMiddleware, current_identity, record_usage
from identity_middleware.stores import MemoryStore
app = Flask(__name__)
app.wsgi_app = IdentityWSGIMiddleware(app.wsgi_app, store=MemoryStore(), default_budgets={"daily": "1"})
@app.post("/chat")
def chat():
    record_usage("0.01")
    return {"for": current_identity().external_id}
response = app.test_client().post("/chat", json={"identity": {"id": "u"}})
assert response.json == {"for": "u"}, response.data
"""

_DJANGO_REQUEST = """
import asyncio
import django
from django.conf import settings
settings.configure(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["testserver"], SECRET_KEY="x",
                   INSTALLED_APPS=["identity_middleware.django"],
                   MIDDLEWARE=["identity_middleware.django.IdentityMiddleware"],
                   IDENTITY_MIDDLEWARE={"DEFAULT_BUDGETS": [{"period": "daily", "amount": "1"}]})
django.setup()
from django.http import JsonResponse
from django.test import AsyncClient, Client
from django.urls import path
from identity_middleware import current_identity, record_usage
def chat(request):
    record_usage("0.01")
    return JsonResponse({"for": current_identity().external_id})
async def achat(request):
    record_usage("0.01")
    return JsonResponse({"for": current_identity().external_id})
urlpatterns = [path("chat", chat), path("achat", achat)]
assert Client().post("/chat", {"identity": {"id": "u"}}, content_type="application/json").json() == {"for": "u"}
response = asyncio.run(AsyncClient().post("/achat", {"identity": {"id": "u"}}, content_type="application/json"))
assert response.json() == {"for": "u"}
"""


@pytest.mark.parametrize("code", [
    "import identity_middleware",
    "from identity_middleware import IdentityWSGIMiddleware, record_usage, current_identity, Config",
    "from identity_middleware.stores import MemoryStore, RedisStore",
    _FLASK_REQUEST,
    _DJANGO_REQUEST,
], ids=["import", "wsgi-names", "stores", "flask-request", "django-requests"])
def test_the_core_surface_and_flask_and_django_do_not_import_starlette_anyio_or_limits(code: str) -> None:
    loaded = _imports_in_fresh_interpreter(code)
    assert not {"starlette", "anyio", "limits"} & loaded


def test_the_package_import_loads_the_core_types_only() -> None:
    loaded = {name for name in _imports_in_fresh_interpreter("import identity_middleware")
              if name.startswith("identity_middleware")}
    beyond_core = {name for name in loaded if not name.startswith("identity_middleware.core")}
    assert beyond_core == {"identity_middleware", "identity_middleware.context", "identity_middleware.unmetered"}
    assert {"identity_middleware.core.models", "identity_middleware.core.errors"} <= loaded


@pytest.mark.parametrize("name", ["Config", "record_usage", "instrument", "PriceTable", "IdentityWSGIMiddleware"])
def test_every_public_name_resolves_on_first_use(name: str) -> None:
    import identity_middleware

    assert name in identity_middleware.__all__
    assert getattr(identity_middleware, name).__name__ == name


def test_the_asgi_middleware_loads_on_first_use() -> None:
    loaded = _imports_in_fresh_interpreter(
        "import identity_middleware\nassert identity_middleware.IdentityMiddleware.__module__ == "
        "'identity_middleware.asgi'")
    assert "starlette" in loaded


# Parsed in a fresh interpreter: CPython 3.11's ast.parse can raise "SystemError: AST constructor
# recursion depth mismatch" in a process whose recursion bookkeeping earlier tests (Hypothesis
# changes the recursion limit; hostile JSON raises RecursionError) have disturbed.
_IMPORTS_SCRIPT = """
import ast, json, sys
from pathlib import Path
package = Path(sys.argv[1])
result = {}
for path in package.rglob("*.py"):
    module = ".".join(path.relative_to(package.parent).with_suffix("").parts)
    base_package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = base_package.rsplit(".", node.level - 1)[0] if node.level > 1 else base_package
                found.add(f"{base}.{node.module}" if node.module else base)
            else:
                found.add(node.module or "")
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    result[str(path)] = sorted(name for name in found if name.startswith("identity_middleware"))
print(json.dumps(result))
"""


@functools.cache
def _all_imports() -> dict[str, list[str]]:
    output = subprocess.run([sys.executable, "-c", _IMPORTS_SCRIPT, str(PACKAGE)], check=True,
                            capture_output=True, text=True).stdout
    imports: dict[str, list[str]] = json.loads(output)
    return imports


def _package_imports(path: Path) -> set[str]:
    """The ``identity_middleware`` modules ``path`` imports, as dotted names."""
    return set(_all_imports()[str(path)])


LAYERS = {  # a module of the left may import only the packages on the right (and itself)
    "core": {"core"},
    "stores": {"core", "stores"},
    "context": {"core", "unmetered"},
    "unmetered": {"core"},
    "flow": {"core", "context", "flow", "ratelimit", "stores", "config", "estimate", "tier_requests"},
    "tier_requests": set(),  # a leaf: the process's count of requests per degrade tier
    "config": {"core", "stores"},
    "pricing": {"core"},
    "usage": {"core", "context", "pricing", "unmetered"},
    "instrumentation": {"core", "context", "pricing", "usage", "instrumentation"},
}


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_imports_point_down(layer: str) -> None:
    paths = [PACKAGE / f"{layer}.py"] if (PACKAGE / f"{layer}.py").exists() else list((PACKAGE / layer).rglob("*.py"))
    assert paths
    for path in paths:
        for target in _package_imports(path):
            top = target.split(".")[1] if "." in target else ""
            assert top in LAYERS[layer], f"{path.relative_to(PACKAGE)} imports {target}"


# Module-level imports only (those inside ``if TYPE_CHECKING:`` and ``try:`` too, not those inside a
# function, which run on first use): a module importing a package imports its ``__init__``, and
# ``from package import name`` imports the submodule ``name`` when there is one.
_GRAPH_SCRIPT = """
import ast, json, sys
from pathlib import Path
package = Path(sys.argv[1])
modules = {}
for path in package.rglob("*.py"):
    parts = path.relative_to(package.parent).with_suffix("").parts
    modules[".".join(parts[:-1] if path.name == "__init__.py" else parts)] = path

def module_level(body):
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        for block in ("body", "orelse", "finalbody"):
            if isinstance(node, (ast.If, ast.Try)):
                yield from module_level(getattr(node, block, []))
        for handler in getattr(node, "handlers", []):
            yield from module_level(handler.body)

graph = {}
for module, path in modules.items():
    base = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in module_level(ast.parse(path.read_text()).body):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        target = node.module or ""
        if node.level:
            root = base.rsplit(".", node.level - 1)[0] if node.level > 1 else base
            target = f"{root}.{node.module}" if node.module else root
        submodules = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in modules]
        found.update(submodules or [target])
    graph[module] = sorted(name for name in found if name in modules and name != module)
print(json.dumps(graph))
"""


def _cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """One import cycle of ``graph``, as the modules along it, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in graph[module]:
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state and (found := visit(target)) is not None:
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)) is not None:
            return found
    return None


def test_the_module_graph_has_no_import_cycle() -> None:
    output = subprocess.run([sys.executable, "-c", _GRAPH_SCRIPT, str(PACKAGE)], check=True,
                            capture_output=True, text=True).stdout
    graph: dict[str, list[str]] = json.loads(output)
    assert len(graph) > 100  # the walk found the package
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": ["b"], "b": ["c"], "c": ["a"], "d": []}) == ["a", "b", "c", "a"]
    assert _cycle({"a": ["b"], "b": [], "c": ["a", "b"]}) is None
