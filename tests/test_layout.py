"""The package's shape: shells load lazily, imports point down, modules stay small."""

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


@pytest.mark.parametrize("code", [
    "import identity_middleware",
    "from identity_middleware import IdentityWSGIMiddleware, record_usage, current_identity, Config",
    "from identity_middleware.stores import MemoryStore, RedisStore",
])
def test_the_core_surface_does_not_import_starlette_anyio_or_limits(code: str) -> None:
    loaded = _imports_in_fresh_interpreter(code)
    assert not {"starlette", "anyio", "limits"} & loaded


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
    "flow": {"core", "context", "flow", "ratelimit", "stores", "config", "estimate"},
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
