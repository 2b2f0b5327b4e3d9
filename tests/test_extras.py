"""An import that needs an extra which is not installed says which extra to install; the core needs none.

Each case runs in a fresh interpreter in which the package is absent (``sys.modules[name] = None``
makes importing it fail as on a machine without it)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run_without(packages: tuple[str, ...], code: str) -> subprocess.CompletedProcess[str]:
    absent = "; ".join(f"sys.modules[{name!r}] = None" for name in packages)
    return subprocess.run([sys.executable, "-c", f"import sys; {absent}\n{code}"], capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.parametrize(("missing", "code", "what"), [
    ("redis", "from identity_middleware.stores import RedisStore", "RedisStore"),
    ("redis", "from identity_middleware.stores import store_from_url; store_from_url('redis://localhost:1/0')",
     "RedisStore"),
    ("redis", "import identity_middleware.stores.redis", "RedisStore"),
    ("django", "from identity_middleware.django import IdentityMiddleware", "identity_middleware.django"),
    ("django", "import identity_middleware.admin.django", "identity_middleware.admin.django"),
])
def test_a_missing_extra_is_named_with_its_pip_line(missing: str, code: str, what: str) -> None:
    result = run_without((missing,), code)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"ModuleNotFoundError: {what} needs {missing!r}, which is not installed: "
        f"pip install 'identity-middleware[{missing}]'")


def test_the_core_and_its_shells_import_without_any_extra() -> None:
    code = ("from identity_middleware import IdentityMiddleware, IdentityWSGIMiddleware, budgeted, instrument\n"
            "from identity_middleware.stores import MemoryStore, store_from_url\n"
            "from identity_middleware.admin import create_admin_app\n"
            "create_admin_app(store_from_url('memory://'), token=None)")
    result = run_without(("redis", "hiredis", "django", "flask", "prometheus_client", "opentelemetry", "openai",
                          "anthropic", "genai_prices"), code)
    assert result.returncode == 0, result.stderr


def test_a_module_missing_for_another_reason_is_raised_as_it_is() -> None:
    result = run_without(("identity_middleware.stores.redis.store",),
                         "from identity_middleware.stores import RedisStore")
    assert result.returncode == 1
    assert "pip install" not in result.stderr  # not an extra's package: no extra would help
