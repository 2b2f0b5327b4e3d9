"""The middleware's options are typed: the documented usage passes ``mypy --strict``, a misspelt option fails it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

DOCUMENTED = '''
from __future__ import annotations

from fastapi import FastAPI
from flask import Flask
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.authentication import AuthCredentials, AuthenticationBackend, BaseUser, SimpleUser
from starlette.requests import HTTPConnection

from identity_middleware import IdentityMiddleware, IdentityWSGIMiddleware, budgeted, current_identity
from identity_middleware import Session, Tier, current_tier
from identity_middleware.stores import MemoryStore, RedisOptions, RedisStore


class MyAuth(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        return AuthCredentials(["authenticated"]), SimpleUser("jane")


store = MemoryStore()

# FastAPI: the README's quick start
app = FastAPI()
app.add_middleware(IdentityMiddleware, store=MemoryStore(), default_budgets={"daily": "1.00"})
app.add_middleware(IdentityMiddleware, store=store, sources=("auth",), require_identity=True)
app.add_middleware(IdentityMiddleware, store=store, may_act_for=lambda principal, claimed: principal == "ops")
# The budgets' provider map and alerts are the store's options
alerting = MemoryStore(providers={"gpt-4o": "openai"},
                       notifiers={"ops": "https://hooks.example.com/budget", "log": print}, notifier_secret="secret")
shared = RedisStore.from_url("redis://localhost:6379/0", providers={"gpt-4o": "openai"},
                             notifiers={"ops": "https://hooks.example.com/budget"}, notifier_secret=b"secret")
tuned = RedisStore("redis://localhost:6379/0", RedisOptions(prefix="app"), providers={"gpt-4o": "openai"})
app.add_middleware(IdentityMiddleware, store=alerting)
app.add_middleware(AuthenticationMiddleware, backend=MyAuth())


# Steering
app.add_middleware(IdentityMiddleware, store=store, budget_headers=True, max_cost="1.00",
                   degrade=[Tier(at="0.80", models={"gpt-4o": "gpt-4o-mini"}, max_tokens=256)],
                   session=Session("2.00", header="X-Session-Id"))
app.add_middleware(IdentityMiddleware, store=store, degrade={"monthly": [Tier(at="0.9")]})


@app.post("/agent")
@budgeted(max_cost="0.50")
async def agent() -> dict[str, object]:
    tier = current_tier()
    return {"tier": tier.name if tier is not None else None}


@app.post("/v1/chat/completions")
@budgeted(estimate="0.02")
async def chat(body: dict[str, object]) -> dict[str, object]:
    identity = current_identity()
    return {"for": identity.external_id if identity is not None else None}


# Starlette
site = Starlette(middleware=[
    Middleware(IdentityMiddleware, store=store, rate_limit="100/minute", estimates={"/v1": "auto"}),
])

# Flask (Flask types wsgi_app as a method: its own documented ProxyFix wrapping needs the same ignore)
flask_app = Flask(__name__)
flask_app.wsgi_app = IdentityWSGIMiddleware(  # type: ignore[method-assign]
    flask_app.wsgi_app, store=store, default_budgets={"monthly": "10.00"}, estimates={"/chat": "0.02"})

# Django settings
INSTALLED_APPS = ["django.contrib.auth", "identity_middleware.django"]
MIDDLEWARE = [
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "identity_middleware.django.IdentityMiddleware",
]
IDENTITY_MIDDLEWARE = {"STORE_URL": "redis://localhost:6379/0", "DEFAULT_BUDGETS": {"daily": "0.20"}}
'''

MISSPELT = '''
from __future__ import annotations

from fastapi import FastAPI
from identity_middleware import IdentityMiddleware, IdentityWSGIMiddleware

app = FastAPI()
app.add_middleware(IdentityMiddleware, requre_identity=True)
app.add_middleware(IdentityMiddleware, on_store_error="opne")
IdentityWSGIMiddleware(lambda environ, start: [], default_budget={"daily": "1"})
app.add_middleware(IdentityMiddleware, providers={"gpt-4o": "openai"})
IdentityWSGIMiddleware(lambda environ, start: [], notifiers={"ops": "https://hooks.example.com/budget"})
'''


def _mypy(tmp_path: Path, source: str) -> list[str]:
    """mypy --strict (the project's configuration, plugins included) on ``source``: its error lines."""
    path = tmp_path / "usage.py"
    path.write_text(source)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "--strict",
         "--cache-dir", str(ROOT / ".mypy_cache"), str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    return [line for line in result.stdout.splitlines() if line.startswith(str(path)) and ": error:" in line]


@pytest.mark.slow
def test_the_documented_usage_passes_mypy_strict(tmp_path: Path) -> None:
    assert _mypy(tmp_path, DOCUMENTED) == []


@pytest.mark.slow
def test_a_misspelt_or_mistyped_option_is_a_mypy_error(tmp_path: Path) -> None:
    errors = _mypy(tmp_path, MISSPELT)
    assert len(errors) == 5, errors
    assert 'requre_identity' in errors[0] and 'on_store_error' in errors[1] and 'default_budget' in errors[2]
    # the store's options, given to a middleware: no longer its options
    assert '"providers"' in errors[3] and '"notifiers"' in errors[4]
