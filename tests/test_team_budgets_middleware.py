"""Project, API-key and team budgets through the real shells: Starlette (ASGI), Flask (WSGI) and
Django, sync and async; ``project_from``/``api_key_from`` as a header name or a callable."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask, jsonify
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import django_project

django_project.setup()

from django.test import AsyncClient, Client, override_settings  # noqa: E402

from django_project.settings import SITE  # noqa: E402
from identity_middleware import IdentityMiddleware, IdentityWSGIMiddleware, record_usage  # noqa: E402
from identity_middleware.config import Config, InvalidOption  # noqa: E402
from identity_middleware.core.budgets import BudgetSpec  # noqa: E402
from identity_middleware.core.models import IdentityInput  # noqa: E402
from identity_middleware.stores import Store  # noqa: E402

CENT = "0.01"


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, make_store: Callable[..., Store]) -> Store:
    return make_store(str(request.param))


def asgi_app(store: Store, **options: Any) -> Starlette:
    async def chat(request: Request) -> JSONResponse:
        record_usage(CENT)
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/chat", chat, methods=["POST"])])
    app.add_middleware(IdentityMiddleware, store=store, **options)
    return app


def key_of(scope: dict[str, Any]) -> str | None:
    """An app's API key lookup: the bearer token's key id (here, the part before the first dot)."""
    for name, value in scope["headers"]:
        if name == b"authorization" and value.startswith(b"Bearer "):
            return value[7:].decode().partition(".")[0]
    return None


def test_asgi_project_from_a_header_and_api_key_from_a_callable(store: Store) -> None:
    project = store.create_budget(BudgetSpec(scope="project", target="apollo", period="daily", amount="0.02"))
    key = store.create_budget(BudgetSpec(scope="api_key", target="key_9", period="daily", amount="0.01"))
    client = TestClient(asgi_app(store, project_from="X-Project-Id", api_key_from=key_of))
    apollo = {"X-Identity-Id": "ann", "X-Project-Id": "apollo"}
    assert client.post("/chat", headers=apollo).status_code == 200
    assert client.post("/chat", headers=apollo).status_code == 200
    refused = client.post("/chat", headers=apollo)
    assert refused.status_code == 429
    assert refused.json()["error"]["budget_id"] == project.id and refused.json()["error"]["scope"] == "project"
    assert client.post("/chat", headers={"X-Identity-Id": "ann", "X-Project-Id": "gemini"}).status_code == 200
    with_key = {"X-Identity-Id": "ben", "Authorization": "Bearer key_9.secret"}
    assert client.post("/chat", headers=with_key).status_code == 200
    refused = client.post("/chat", headers=with_key)
    assert refused.status_code == 429 and refused.json()["error"]["budget_id"] == key.id
    store.flush()
    assert store.budget_usage(project.id).amount == Decimal("0.02")
    assert store.budget_usage(key.id).amount == Decimal("0.01")


def test_asgi_team_budget_from_the_body_identitys_metadata_and_a_header_expression(store: Store) -> None:
    team = store.create_budget(BudgetSpec(scope="match", match='metadata.team == "ml"', period="daily",
                                          amount="0.02"))
    free = store.create_budget(BudgetSpec(scope="match", match='headers["x-tier"] == "free"', period="daily",
                                          amount="0.01"))
    client = TestClient(asgi_app(store))
    for name in ("ann", "ben"):
        body = {"identity": {"id": name, "metadata": {"team": "ml"}}}
        assert client.post("/chat", json=body).status_code == 200
    refused = client.post("/chat", json={"identity": {"id": "cat", "metadata": {"team": "ml"}}})
    assert refused.status_code == 429 and refused.json()["error"]["budget_id"] == team.id
    assert client.post("/chat", json={"identity": {"id": "dan", "metadata": {"team": "infra"}}}).status_code == 200
    assert client.post("/chat", headers={"X-Identity-Id": "eve", "X-Tier": "free"}).status_code == 200
    refused = client.post("/chat", headers={"X-Identity-Id": "fay", "X-Tier": "free"})
    assert refused.status_code == 429 and refused.json()["error"]["budget_id"] == free.id
    assert client.post("/chat", headers={"X-Identity-Id": "fay", "X-Tier": "paid"}).status_code == 200


def test_wsgi_project_from_a_header(store: Store) -> None:
    budget = store.create_budget(BudgetSpec(scope="project", target="apollo", period="daily", amount="0.01"))
    flask = Flask(__name__)

    @flask.post("/chat")
    def chat() -> Any:
        record_usage(CENT)
        return jsonify(ok=True)

    flask.wsgi_app = IdentityWSGIMiddleware(flask.wsgi_app, store=store, project_from="X-Project-Id")  # type: ignore[method-assign]
    client = flask.test_client()
    headers = {"X-Identity-Id": "ann", "X-Project-Id": "apollo"}
    with client.post("/chat", headers=headers) as response:  # settled when closed, as a server does
        assert response.status_code == 200
    refused = client.post("/chat", headers=headers)
    assert refused.status_code == 429 and refused.get_json()["error"]["budget_id"] == budget.id
    assert client.post("/chat", headers={"X-Identity-Id": "ann"}).status_code == 200


@pytest.fixture
def django_site(store: Store) -> Iterator[Callable[..., None]]:
    applied: list[override_settings] = []

    def configure(**options: Any) -> None:
        override = override_settings(**{**SITE, "IDENTITY_MIDDLEWARE": {"STORE": store, **options}})
        override.enable()
        applied.append(override)

    yield configure
    for override in reversed(applied):
        override.disable()


@pytest.mark.anyio
async def test_django_project_from_settings_sync_and_async(store: Store, django_site: Callable[..., None]) -> None:
    budget = store.create_budget(BudgetSpec(scope="project", target="apollo", period="daily", amount="0.01"))
    django_site(PROJECT_FROM=lambda request: request.headers.get("X-Project-Id"))
    headers = {"X-Identity-Id": "ann", "X-Project-Id": "apollo"}
    assert Client().get("/whoami?cost=0.01", headers=headers).status_code == 200
    refused = await AsyncClient().get("/awhoami", headers=headers)
    assert refused.status_code == 429 and json.loads(refused.content)["error"]["budget_id"] == budget.id
    assert Client().get("/whoami", headers={"X-Identity-Id": "ann", "X-Project-Id": "gemini"}).status_code == 200


def test_django_team_budget_on_the_stored_identitys_metadata(store: Store, django_site: Callable[..., None]) -> None:
    store.create(IdentityInput(id="ann", metadata={"team": "ml"}))
    store.create_budget(BudgetSpec(scope="match", match='metadata.team == "ml"', period="daily", amount="0.01"))
    django_site()
    assert Client().get("/whoami?cost=0.01", headers={"X-Identity-Id": "ann"}).status_code == 200
    assert Client().get("/whoami", headers={"X-Identity-Id": "ann"}).status_code == 429
    assert Client().get("/whoami", headers={"X-Identity-Id": "bob"}).status_code == 200


@pytest.mark.parametrize("value", ["", "X Project", "X-Project:", 7, ["X-Project"]])
def test_an_invalid_source_is_refused_where_the_app_is_built(value: object) -> None:
    with pytest.raises(InvalidOption, match="project_from"):
        Config.of(project_from=value)
    with pytest.raises(InvalidOption, match="api_key_from"):
        Config.of(api_key_from=value)
