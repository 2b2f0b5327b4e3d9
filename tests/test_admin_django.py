"""The admin REST API served by Django through include("identity_middleware.admin.django")."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import django
import pytest
from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import AsyncClient, Client, override_settings
from django.urls import include, path

from identity_middleware.admin.django import admin_api, close_stores

if not settings.configured:
    settings.configure(SECRET_KEY="admin-tests", ALLOWED_HOSTS=["testserver"], INSTALLED_APPS=[],
                       MIDDLEWARE=[], DATABASES={}, USE_TZ=True, ROOT_URLCONF=__name__)
if not apps.ready:
    django.setup()

TOKEN = "django-admin-token"


class _URLConf:
    urlpatterns = [path("admin-api/", include("identity_middleware.admin.django"))]


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    import redis

    url = str(request.getfixturevalue("redis_url")).rsplit("/", 1)[0] + "/6"
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return url


def _settings(store_url: str, **config: Any) -> override_settings:
    return override_settings(ROOT_URLCONF=_URLConf, MIDDLEWARE=[], ALLOWED_HOSTS=["testserver"],
                             IDENTITY_MIDDLEWARE={"STORE_URL": store_url, **config})


@pytest.fixture
def client(store_url: str) -> Iterator[Client]:
    close_stores()
    with _settings(store_url, ADMIN_TOKEN=TOKEN):
        yield Client(headers={"Authorization": f"Bearer {TOKEN}"})
    close_stores()


def post(client: Client, url: str, body: Any) -> Any:
    return client.post(url, data=json.dumps(body), content_type="application/json")


def test_create_retrieve_and_list_through_django(client: Client) -> None:
    response = post(client, "/admin-api/v2/identities", {"external_id": "dj_1", "display_name": "Dj",
                                                         "budgets": [{"period": "daily", "amount": "2"}]})
    assert response.status_code == 201
    created = response.json()["identity"]
    assert created["external_id"] == "dj_1" and created["budgets"][0]["amount"] == "2.00"
    assert created["workspace_id"] == "default"
    assert client.get(f"/admin-api/v2/identities/{created['_id']}").json()["identity"]["external_id"] == "dj_1"
    listed = client.get("/admin-api/v2/identities", {"search": "DJ", "include_metrics": "true"}).json()
    assert listed["object"] == "list" and listed["has_more"] is False
    assert [item["external_id"] for item in listed["data"]] == ["dj_1"]
    assert listed["data"][0]["metrics"]["total_requests"] == 0


def test_the_same_store_serves_every_request(client: Client) -> None:
    post(client, "/admin-api/v2/identities", {"external_id": "dj_s"})
    assert admin_api().store.retrieve("dj_s").external_id == "dj_s"


def test_patch_and_delete_through_django(client: Client) -> None:
    post(client, "/admin-api/v2/identities", {"external_id": "dj_p", "email": "a@example.com"})
    patched = client.patch("/admin-api/v2/identities/dj_p", data=json.dumps({"display_name": "P"}),
                           content_type="application/json")
    assert patched.status_code == 200
    assert patched.json()["identity"]["display_name"] == "P" and patched.json()["identity"]["email"] == "a@example.com"
    deleted = client.delete("/admin-api/v2/identities/dj_p")
    assert deleted.status_code == 200 and deleted.json() == {}
    assert client.get("/admin-api/v2/identities/dj_p").status_code == 404


def test_a_percent_encoded_slash_is_part_of_the_id_through_django(client: Client) -> None:
    """Django routes on the decoded path; a WSGI server's REQUEST_URI (or ASGI's raw_path) keeps %2F."""
    post(client, "/admin-api/v2/identities", {"external_id": "victim"})
    client.put("/admin-api/v2/identities/victim/budgets/daily", data=json.dumps({"amount": "1"}),
               content_type="application/json")
    post(client, "/admin-api/v2/identities", {"external_id": "victim/budgets/daily"})
    raw = "/admin-api/v2/identities/victim%2Fbudgets%2Fdaily"
    shown = client.get("/admin-api/v2/identities/victim/budgets/daily", REQUEST_URI=raw)
    assert shown.json()["identity"]["external_id"] == "victim/budgets/daily"
    assert client.delete("/admin-api/v2/identities/victim/budgets/daily", REQUEST_URI=raw).status_code in (200, 204)
    assert client.get("/admin-api/v2/identities/victim/budgets/daily").json()["period"] == "daily"  # kept
    deep = "/admin-api/v2/identities/a%2Fb%2Fc%2Fd%2Fe"
    assert client.get("/admin-api/v2/identities/a/b/c/d/e", REQUEST_URI=deep).status_code == 404
    post(client, "/admin-api/v2/identities", {"external_id": "a/b/c/d/e"})
    found = client.get("/admin-api/v2/identities/a/b/c/d/e", REQUEST_URI=deep).json()
    assert found["identity"]["external_id"] == "a/b/c/d/e"


def test_budgets_through_django(client: Client) -> None:
    post(client, "/admin-api/v2/identities", {"external_id": "dj_b"})
    response = client.put("/admin-api/v2/identities/dj_b/budgets/weekly", data=json.dumps({"amount": "5"}),
                          content_type="application/json")
    assert response.status_code == 200 and response.json()["amount"] == "5.00"
    assert client.get("/admin-api/v2/identities/dj_b/budgets/weekly").json()["remaining"] == "5.00"
    assert client.post("/admin-api/v2/identities/dj_b/budgets/weekly/reset").status_code == 200
    assert client.get("/admin-api/v2/identities/dj_b/budgets").json()["data"][0]["period"] == "weekly"
    bad = client.put("/admin-api/v2/identities/dj_b/budgets/hourly", data=json.dumps({"amount": "5"}),
                     content_type="application/json")
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "period"


def test_errors_keep_the_pinned_shape_through_django(client: Client) -> None:
    post(client, "/admin-api/v2/identities", {"external_id": "dj_e"})
    duplicate = post(client, "/admin-api/v2/identities", {"external_id": "dj_e"})
    assert duplicate.status_code == 409 and duplicate.json()["error"]["type"] == "identity_exists"
    invalid = post(client, "/admin-api/v2/identities", {"external_id": "x", "email": "nope"})
    assert invalid.status_code == 400 and invalid.json()["error"] == {
        "type": "invalid_identity", "message": "email is not a valid address", "field": "email"}
    malformed = client.post("/admin-api/v2/identities", data="{", content_type="application/json")
    assert malformed.status_code == 400 and malformed.json()["error"]["type"] == "invalid_request"
    assert client.get("/admin-api/v2/identities", {"limit": "500"}).status_code == 400
    unknown = client.get("/admin-api/v9/else")
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found"
    wrong = client.put("/admin-api/v2/identities", data="{}", content_type="application/json")
    assert wrong.status_code == 405 and wrong["Allow"] == "GET, POST"


def test_the_openapi_document_is_served_through_django(client: Client) -> None:
    document = client.get("/admin-api/openapi.json").json()
    assert document["openapi"] == "3.1.0" and "/v2/identities/{identity_id}" in document["paths"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}])
def test_a_missing_or_wrong_token_is_401_through_django(store_url: str, headers: dict[str, str]) -> None:
    close_stores()
    with _settings(store_url, ADMIN_TOKEN=TOKEN):
        response = Client(headers=headers).get("/admin-api/v2/identities")
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "unauthorized"
        assert response["WWW-Authenticate"].startswith("Bearer")
    close_stores()


def test_admin_token_none_disables_auth_on_purpose(store_url: str) -> None:
    close_stores()
    with _settings(store_url, ADMIN_TOKEN=None):
        assert Client().get("/admin-api/v2/identities").status_code == 200
    close_stores()


def test_a_missing_admin_token_setting_refuses_to_serve() -> None:
    close_stores()
    with _settings("memory://"), pytest.raises(ImproperlyConfigured, match="ADMIN_TOKEN"):
        Client().get("/admin-api/v2/identities")


@pytest.mark.anyio
async def test_the_views_run_on_djangos_async_stack(store_url: str) -> None:
    close_stores()
    with _settings(store_url, ADMIN_TOKEN=TOKEN):
        client, auth = AsyncClient(), {"Authorization": f"Bearer {TOKEN}"}
        created = await client.post("/admin-api/v2/identities", data=json.dumps({"external_id": "dj_async"}),
                                    content_type="application/json", headers=auth)
        assert created.status_code == 201
        fetched = await client.get("/admin-api/v2/identities/dj_async", headers=auth)
        assert fetched.json()["identity"]["_id"] == created.json()["identity"]["_id"]
    close_stores()


def test_the_django_admin_api_sees_the_traffic_of_the_django_middleware_on_the_memory_store() -> None:
    from identity_middleware.django.conf import get_store as middleware_store

    with override_settings(IDENTITY_MIDDLEWARE={"STORE_URL": "memory://", "ADMIN_TOKEN": None}):
        assert admin_api().store is middleware_store()
