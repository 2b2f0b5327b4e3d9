"""The admin REST API (/v2/identities) over a real store: routes, shapes, status codes, pagination, auth."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC
from decimal import Decimal
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from identity_middleware import IdentityInput, StoreUnavailable, record_usage
from identity_middleware.admin import create_admin_app
from identity_middleware.asgi import IdentityMiddleware
from identity_middleware.stores import MemoryStore, Store

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STORE_KINDS = ["memory", "redis", "redis-cluster"]


@pytest.fixture(params=STORE_KINDS)
def admin_store(request: pytest.FixtureRequest) -> Store:
    if request.param == "memory":
        return MemoryStore()
    make_store: Callable[[str], Store] = request.getfixturevalue("make_store")
    return make_store(request.param)


@pytest.fixture
def client(admin_store: Store) -> Iterator[TestClient]:
    with TestClient(create_admin_app(admin_store, token=TOKEN), headers=AUTH) as test_client:
        yield test_client


def create(client: TestClient, external_id: str, **fields: Any) -> dict[str, Any]:
    """POST one identity; the record of the ``{"identity": Record}`` reply."""
    response = client.post("/v2/identities", json={"external_id": external_id, **fields})
    assert response.status_code == 201, response.text
    return identity_of(response, 201)


def identity_of(response: Any, status: int = 200) -> dict[str, Any]:
    """The record of a ``{"identity": Record}`` reply (money in ``metrics`` read as exact Decimals)."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json(parse_float=Decimal)
    assert list(body) == ["identity"]
    record: dict[str, Any] = body["identity"]
    return record


def error_of(response: Any, status: int, error_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == error_type
    assert isinstance(error["message"], str) and error["message"]
    assert response.json()["message"] == error["message"] and response.json()["code"] == status  # orq's shape
    return error


# -- create ------------------------------------------------------------------------------------------
def test_create_returns_201_and_the_full_record(client: TestClient) -> None:
    body = create(client, "user_1", display_name="Jane", email="jane@example.com",
                  logo_url="https://x.test/a.png", tags=["premium"], metadata={"plan": "pro"})
    assert list(body) == ["_id", "external_id", "workspace_id", "display_name", "email", "avatar_url", "tags",
                          "metadata", "created", "updated"]
    assert body["workspace_id"] == "default"
    assert len(body["_id"]) == 26
    assert body["external_id"] == "user_1"
    assert body["avatar_url"] == "https://x.test/a.png"
    assert body["tags"] == ["premium"] and body["metadata"] == {"plan": "pro"}
    assert body["created"].endswith("Z") and body["created"] == body["updated"]


def test_create_accepts_id_as_the_external_id(client: TestClient) -> None:
    response = client.post("/v2/identities", json={"id": "user_2"})
    assert identity_of(response, 201)["external_id"] == "user_2"


def test_create_with_a_taken_external_id_is_409(client: TestClient) -> None:
    create(client, "dup")
    error = error_of(client.post("/v2/identities", json={"external_id": "dup"}), 409, "identity_exists")
    assert error["identity"] == "dup"


@pytest.mark.parametrize(("body", "field"), [
    ({"external_id": "u", "email": "not-an-email"}, "email"),
    ({"display_name": "no id"}, "id"),
    ({"external_id": ""}, "external_id"),
    ({"external_id": "u", "tags": "premium"}, "tags"),
    ({"external_id": "u", "metadata": {f"k{i}": i for i in range(21)}}, "metadata"),
])
def test_create_with_an_invalid_identity_is_400_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    error = error_of(client.post("/v2/identities", json=body), 400, "invalid_identity")
    assert error["field"] == field


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b""])
def test_create_with_a_body_that_is_not_a_json_object_is_400(client: TestClient, content: bytes) -> None:
    response = client.post("/v2/identities", content=content, headers={"content-type": "application/json"})
    error_of(response, 400, "invalid_request")


def test_create_with_budgets_sets_them_in_one_call(client: TestClient) -> None:
    body = create(client, "budgeted", budgets=[{"period": "monthly", "amount": "10"},
                                               {"period": "daily", "amount": 0.2}])
    assert [(b["period"], b["amount"], b["spent"]) for b in body["budgets"]] == [
        ("daily", "0.20", "0.00"), ("monthly", "10.00", "0.00")]
    listed = client.get("/v2/identities/budgeted/budgets").json()
    assert [b["period"] for b in listed["data"]] == ["daily", "monthly"]


@pytest.mark.parametrize(("budgets", "field"), [
    ([{"period": "hourly", "amount": "1"}], "budgets[0].period"),
    ([{"period": "daily", "amount": "0"}], "budgets[0].amount"),
    ([{"period": "daily"}], "budgets[0].amount"),
    ([{"period": "daily", "amount": "1"}, {"period": "daily", "amount": "2"}], "budgets"),
    ({"period": "daily", "amount": "1"}, "budgets"),
])
def test_create_with_an_invalid_budget_is_400_and_creates_nothing(
    client: TestClient, budgets: Any, field: str
) -> None:
    response = client.post("/v2/identities", json={"external_id": "nobudget", "budgets": budgets})
    assert error_of(response, 400, "invalid_request")["field"] == field
    error_of(client.get("/v2/identities/nobudget"), 404, "not_found")


# -- retrieve / update / delete ----------------------------------------------------------------------
def test_retrieve_by_ulid_or_external_id(client: TestClient) -> None:
    created = create(client, "user_r", display_name="R")
    assert identity_of(client.get(f"/v2/identities/{created['_id']}")) == created
    assert identity_of(client.get("/v2/identities/user_r")) == created


def test_retrieve_an_unknown_identity_is_404(client: TestClient) -> None:
    error = error_of(client.get("/v2/identities/nobody"), 404, "not_found")
    assert error["identity"] == "nobody"


def test_retrieve_can_include_metrics_and_budgets(client: TestClient, admin_store: Store) -> None:
    create(client, "user_m", budgets=[{"period": "daily", "amount": "1"}])
    admin_store.record("user_m", cost=Decimal("0.25"), input_tokens=3, output_tokens=4)
    body = identity_of(client.get("/v2/identities/user_m", params={"include_metrics": "1", "include_budgets": "true"}))
    assert body["metrics"]["total_cost"] == Decimal("0.25")
    assert body["metrics"]["total_tokens"] == 7
    assert body["budgets"][0]["spent"] == "0.25"


def test_patch_replaces_given_fields_and_keeps_the_rest(client: TestClient) -> None:
    created = create(client, "user_p", display_name="Old", email="old@example.com", tags=["a"])
    response = client.patch("/v2/identities/user_p", json={"display_name": "New", "logo_url": "https://x.test/p"})
    body = identity_of(response)
    assert body["display_name"] == "New" and body["avatar_url"] == "https://x.test/p"
    assert body["email"] == "old@example.com" and body["tags"] == ["a"]
    assert body["_id"] == created["_id"] and body["updated"] >= created["updated"]
    assert identity_of(client.get("/v2/identities/user_p")) == body


def test_patch_with_an_invalid_field_is_400_and_changes_nothing(client: TestClient) -> None:
    created = create(client, "user_pi", tags=["a"])
    error = error_of(client.patch("/v2/identities/user_pi", json={"tags": ["x"] * 11}), 400, "invalid_identity")
    assert error["field"] == "tags"
    assert identity_of(client.get("/v2/identities/user_pi")) == created


def test_patch_an_unknown_identity_is_404(client: TestClient) -> None:
    error_of(client.patch("/v2/identities/ghost", json={"display_name": "x"}), 404, "not_found")


def test_delete_removes_the_identity_its_budgets_and_counters(client: TestClient, admin_store: Store) -> None:
    create(client, "user_d", budgets=[{"period": "daily", "amount": "5"}])
    admin_store.record("user_d", cost=Decimal("1.5"), input_tokens=10)
    response = client.delete("/v2/identities/user_d")
    assert response.status_code == 200 and response.json() == {}  # orq's DeleteIdentityResponse
    error_of(client.get("/v2/identities/user_d"), 404, "not_found")
    error_of(client.delete("/v2/identities/user_d"), 404, "not_found")
    create(client, "user_d")
    again = identity_of(client.get("/v2/identities/user_d",
                                   params={"include_metrics": "true", "include_budgets": "true"}))
    assert again["budgets"] == []
    assert again["metrics"]["total_requests"] == 0 and again["metrics"]["total_cost"] == 0


# -- list ----------------------------------------------------------------------------------------------
def test_list_defaults_to_ten_ascending_with_has_more(client: TestClient) -> None:
    ids = [create(client, f"l{i:02}")["_id"] for i in range(12)]
    body = client.get("/v2/identities").json()
    assert body["object"] == "list" and body["has_more"] is True
    assert [item["_id"] for item in body["data"]] == ids[:10]
    rest = client.get("/v2/identities", params={"starting_after": ids[9]}).json()
    assert [item["_id"] for item in rest["data"]] == ids[10:] and rest["has_more"] is False


@pytest.mark.parametrize("params", [
    {"limit": "0"}, {"limit": "201"}, {"limit": "ten"}, {"include_metrics": "yes"}, {"include_budgets": "2"},
    {"starting_after": "user_1"}, {"ending_before": "not-a-ulid"},
])
def test_list_with_an_invalid_parameter_is_400_naming_it(client: TestClient, params: dict[str, str]) -> None:
    error = error_of(client.get("/v2/identities", params=params), 400, "invalid_request")
    assert error["field"] == next(iter(params))


def test_list_accepts_the_largest_page(client: TestClient) -> None:
    create(client, "only")
    body = client.get("/v2/identities", params={"limit": "200"}).json()
    assert [item["external_id"] for item in body["data"]] == ["only"] and body["has_more"] is False


def test_pagination_walks_250_identities_both_ways_without_gap_or_repeat(
    client: TestClient, admin_store: Store
) -> None:
    ids = [admin_store.create(IdentityInput(id=f"p{i:03}")).id for i in range(250)]
    forward: list[str] = []
    params: dict[str, str] = {"limit": "17"}
    while True:
        page = client.get("/v2/identities", params=params).json()
        forward += [item["_id"] for item in page["data"]]
        if not page["has_more"]:
            break
        params = {"limit": "17", "starting_after": forward[-1]}
    assert forward == ids

    backward: list[str] = []
    cursor = client.get("/v2/identities", params={"limit": "1", "starting_after": ids[-2]}).json()["data"][0]["_id"]
    backward = [cursor]
    while True:
        page = client.get("/v2/identities", params={"limit": "23", "ending_before": backward[0]}).json()
        data = [item["_id"] for item in page["data"]]
        assert data == sorted(data)
        backward = data + backward
        if not page["has_more"]:
            break
    assert backward == ids


def test_search_is_a_case_insensitive_substring_of_id_name_or_email(client: TestClient) -> None:
    create(client, "alpha-ONE")
    create(client, "beta", display_name="The One")
    create(client, "gamma", email="someone@example.com")
    create(client, "delta", display_name="nobody")
    body = client.get("/v2/identities", params={"search": "one"}).json()
    assert [item["external_id"] for item in body["data"]] == ["alpha-ONE", "beta", "gamma"]


def test_tags_filter_keeps_identities_with_any_of_them(client: TestClient) -> None:
    create(client, "t1", tags=["a"])
    create(client, "t2", tags=["b", "c"])
    create(client, "t3", tags=["c"])
    create(client, "t4")
    body = client.get("/v2/identities", params={"tags": "a,b"}).json()
    assert [item["external_id"] for item in body["data"]] == ["t1", "t2"]
    assert [i["external_id"] for i in client.get("/v2/identities?tags=c").json()["data"]] == ["t2", "t3"]


def test_list_includes_metrics_and_budgets_only_when_asked(client: TestClient, admin_store: Store) -> None:
    create(client, "i1", budgets=[{"period": "weekly", "amount": "3"}])
    admin_store.record("i1", cost="0.1", input_tokens=1, output_tokens=2, error=True)
    plain = client.get("/v2/identities").json()["data"][0]
    assert "metrics" not in plain and "budgets" not in plain
    full = client.get("/v2/identities", params={"include_metrics": "true", "include_budgets": "1"}).json(
        parse_float=Decimal)["data"][0]
    assert full["metrics"] == {"total_cost": Decimal("0.10"), "total_tokens": 3, "total_requests": 1, "error_rate": 1.0,
                               "input_tokens": 1, "output_tokens": 2, "total_errors": 1, "unpriced_requests": 0,
                               "models": []}
    assert full["budgets"][0]["period"] == "weekly" and full["budgets"][0]["spent"] == "0.10"


def test_metrics_models_lists_each_model_with_an_exact_cost(client: TestClient, admin_store: Store) -> None:
    create(client, "m1")
    admin_store.record("m1", cost="0.000125", input_tokens=10, output_tokens=20, model="gpt-4o-mini")
    admin_store.record("m1", cost="0.3", input_tokens=1, output_tokens=2, model="claude-sonnet-4-5")
    listed = client.get("/v2/identities", params={"include_metrics": "true"}).json(parse_float=Decimal)
    for reply in (identity_of(client.get("/v2/identities/m1", params={"include_metrics": "true"})), listed["data"][0]):
        assert reply["metrics"]["models"] == [
            {"model": "claude-sonnet-4-5", "cost": Decimal("0.30"), "input_tokens": 1, "output_tokens": 2,
             "requests": 1},
            {"model": "gpt-4o-mini", "cost": Decimal("0.000125"), "input_tokens": 10, "output_tokens": 20,
             "requests": 1},
        ]
        assert reply["metrics"]["total_cost"] == Decimal("0.300125")


# -- budgets -------------------------------------------------------------------------------------------
def test_put_budget_sets_it_and_returns_its_status(client: TestClient) -> None:
    create(client, "b1")
    response = client.put("/v2/identities/b1/budgets/daily", json={"amount": "0.20"})
    assert response.status_code == 200
    status = response.json()
    assert status["period"] == "daily" and status["amount"] == "0.20"
    assert status["spent"] == "0.00" and status["remaining"] == "0.20" and status["percent"] == 0.0
    assert status["period_start"] < status["resets_at"]
    replaced = client.put("/v2/identities/b1/budgets/daily", json={"amount": 1}).json()
    assert replaced["amount"] == "1.00"


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v2/identities/b2/budgets/daily", {"amount": "0"}, "amount"),
    ("/v2/identities/b2/budgets/daily", {"amount": "-1"}, "amount"),
    ("/v2/identities/b2/budgets/daily", {"amount": "ten"}, "amount"),
    ("/v2/identities/b2/budgets/daily", {}, "amount"),
    ("/v2/identities/b2/budgets/daily", {"amount": True}, "amount"),
    ("/v2/identities/b2/budgets/hourly", {"amount": "1"}, "period"),
    ("/v2/identities/b2/budgets/daily", {"amount": "1", "period": "weekly"}, "period"),
])
def test_put_an_invalid_budget_is_400(client: TestClient, path: str, body: dict[str, Any], field: str) -> None:
    create(client, "b2")
    assert error_of(client.put(path, json=body), 400, "invalid_request")["field"] == field
    assert client.get("/v2/identities/b2/budgets").json()["data"] == []


def test_put_a_budget_on_an_unknown_identity_is_404(client: TestClient) -> None:
    error_of(client.put("/v2/identities/ghost/budgets/daily", json={"amount": "1"}), 404, "not_found")


def test_get_budget_shows_live_spend(client: TestClient, admin_store: Store) -> None:
    create(client, "b3", budgets=[{"period": "monthly", "amount": "2"}])
    admin_store.record("b3", cost=Decimal("0.5"))
    status = client.get("/v2/identities/b3/budgets/monthly").json()
    assert (status["spent"], status["remaining"], status["percent"]) == ("0.50", "1.50", 25.0)


def test_get_a_budget_that_is_not_set_is_404(client: TestClient) -> None:
    create(client, "b4")
    error = error_of(client.get("/v2/identities/b4/budgets/daily"), 404, "not_found")
    assert error["period"] == "daily"
    error_of(client.get("/v2/identities/ghost/budgets/daily"), 404, "not_found")
    error_of(client.get("/v2/identities/ghost/budgets"), 404, "not_found")


def test_delete_budget_removes_it(client: TestClient) -> None:
    create(client, "b5", budgets=[{"period": "daily", "amount": "1"}, {"period": "yearly", "amount": "100"}])
    response = client.delete("/v2/identities/b5/budgets/daily")
    assert response.status_code == 204
    assert [b["period"] for b in client.get("/v2/identities/b5/budgets").json()["data"]] == ["yearly"]
    error_of(client.delete("/v2/identities/b5/budgets/daily"), 404, "not_found")


def test_reset_zeroes_the_current_period_spend(client: TestClient, admin_store: Store) -> None:
    create(client, "b6", budgets=[{"period": "daily", "amount": "1"}, {"period": "monthly", "amount": "9"}])
    admin_store.record("b6", cost="0.75")
    response = client.post("/v2/identities/b6/budgets/daily/reset")
    assert response.status_code == 200
    assert response.json()["spent"] == "0.00" and response.json()["remaining"] == "1.00"
    assert client.get("/v2/identities/b6/budgets/monthly").json()["spent"] == "0.75"
    error_of(client.post("/v2/identities/b6/budgets/weekly/reset"), 404, "not_found")


def _floats(value: Any, path: str = "") -> list[str]:
    if isinstance(value, float):
        return [path]
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in _floats(item, f"{path}.{key}")]
    if isinstance(value, list):
        return [p for index, item in enumerate(value) for p in _floats(item, f"{path}[{index}]")]
    return []


def test_money_is_exact_numbers_in_orq_shapes_and_decimal_strings_in_ours(
        client: TestClient, admin_store: Store) -> None:
    create(client, "money", budgets=[{"period": "daily", "amount": 0.1}])
    admin_store.record("money", cost=Decimal("0.0000001"))
    response = client.get("/v2/identities", params={"include_metrics": "1", "include_budgets": "1"})
    body = response.json()
    floats = _floats(body)
    # orq's metrics are JSON numbers (the SDK types them so), written from the exact value; our own
    # shapes (budgets) keep money as strings; otherwise only ratios have a fraction.
    assert all(path.endswith((".percent", ".error_rate", ".total_cost")) for path in floats), floats
    assert '"total_cost":0.0000001,' in response.text  # the exact decimal, not a float's repr (1e-07)
    assert body["data"][0]["budgets"][0]["amount"] == "0.10"


# -- auth, routing, failures ---------------------------------------------------------------------------
def test_token_is_keyword_only_and_required() -> None:
    with pytest.raises(TypeError):
        create_admin_app(MemoryStore())  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        create_admin_app(MemoryStore(), TOKEN)  # type: ignore[call-arg]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                                     {"Authorization": f"Basic {TOKEN}"}])
def test_a_missing_or_wrong_token_is_401(admin_store: Store, headers: dict[str, str]) -> None:
    with TestClient(create_admin_app(admin_store, token=TOKEN)) as anonymous:
        for method, path in [("GET", "/v2/identities"), ("POST", "/v2/identities"),
                             ("GET", "/v2/identities/x/budgets/daily"), ("GET", "/openapi.json")]:
            response = anonymous.request(method, path, headers=headers, json={"external_id": "sneaky"})
            error_of(response, 401, "unauthorized")
            assert response.headers["www-authenticate"].startswith("Bearer")
    with pytest.raises(LookupError):
        admin_store.retrieve("sneaky")


def test_token_none_disables_auth(admin_store: Store) -> None:
    with TestClient(create_admin_app(admin_store, token=None)) as anonymous:
        assert anonymous.post("/v2/identities", json={"external_id": "open"}).status_code == 201


def test_an_unknown_route_is_a_json_404(client: TestClient) -> None:
    error_of(client.get("/v3/nothing"), 404, "not_found")


def test_a_wrong_method_is_a_json_405_with_allow(client: TestClient) -> None:
    response = client.put("/v2/identities", json={})
    error_of(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, POST"
    for method, path, allowed in [("OPTIONS", "/v2/identities", "GET, POST"),
                                  ("TRACE", "/v2/identities/x", "GET, PATCH, DELETE")]:
        answered = client.request(method, path)
        error_of(answered, 405, "method_not_allowed")
        assert answered.headers["allow"] == allowed


def test_a_body_over_one_mebibyte_is_413(client: TestClient) -> None:
    big = {"external_id": "big", "metadata": {"blob": "x" * 1_100_000}}
    error_of(client.post("/v2/identities", json=big), 413, "payload_too_large")


class _DownStore(MemoryStore):
    async def alist(self, *args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("redis is down")

    async def aretrieve(self, identity_id: str) -> Any:
        raise ConnectionRefusedError("connection refused")


def test_an_unavailable_store_is_503() -> None:
    with TestClient(create_admin_app(_DownStore(), token=None)) as down:
        error_of(down.get("/v2/identities"), 503, "store_unavailable")
        error_of(down.get("/v2/identities/x"), 503, "store_unavailable")


def test_mounts_under_fastapi(admin_store: Store) -> None:
    from fastapi import FastAPI

    app = FastAPI()
    app.mount("/admin", create_admin_app(admin_store, token=TOKEN))
    with TestClient(app, headers=AUTH) as mounted:
        assert mounted.post("/admin/v2/identities", json={"external_id": "m1"}).status_code == 201
        assert identity_of(mounted.get("/admin/v2/identities/m1"))["external_id"] == "m1"
        assert mounted.get("/admin/openapi.json").json()["openapi"] == "3.1.0"


# -- metrics from real traffic -------------------------------------------------------------------------
def _tracked_app(store: Store) -> Starlette:
    async def chat(request: Request) -> JSONResponse:
        record_usage(cost="0.0125", input_tokens=100, output_tokens=20, model="gpt-4o-mini")
        return JSONResponse({"ok": True})

    async def broken(request: Request) -> JSONResponse:
        record_usage(cost="0.001", input_tokens=5, output_tokens=0, model="gpt-4o-mini")
        return JSONResponse({"ok": False}, status_code=502)

    app = Starlette(routes=[Route("/chat", chat, methods=["POST"]), Route("/broken", broken, methods=["POST"])])
    app.add_middleware(IdentityMiddleware, store=store)
    return app


def test_metrics_match_what_the_middleware_recorded(client: TestClient, admin_store: Store) -> None:
    with TestClient(_tracked_app(admin_store)) as app:
        for _ in range(3):
            assert app.post("/chat", json={"identity": {"id": "traffic", "display_name": "T"}}).status_code == 200
        assert app.post("/broken", headers={"X-Identity-Id": "traffic"}).status_code == 502
        assert app.post("/chat", headers={"X-Identity-Id": "other"}).status_code == 200
    body = client.get("/v2/identities", params={"include_metrics": "true", "search": "traffic"}).json(
        parse_float=Decimal)
    [record] = body["data"]
    assert record["display_name"] == "T"
    assert record["metrics"]["total_cost"] == Decimal("0.0385")
    assert record["metrics"]["total_tokens"] == 365
    assert record["metrics"]["total_requests"] == 4
    assert record["metrics"]["error_rate"] == 0.25
    other = identity_of(client.get("/v2/identities/other", params={"include_metrics": "1"}))
    assert other["metrics"]["total_requests"] == 1 and other["metrics"]["total_cost"] == Decimal("0.0125")


# -- one identity per {id} ---------------------------------------------------------------------------
def test_an_external_id_shaped_like_another_ulid_never_reaches_that_identity(
        client: TestClient, admin_store: Store) -> None:
    mallory = create(client, "mallory")
    create(client, mallory["_id"], display_name="decoy")  # an external id equal to mallory's ULID
    assert client.put("/v2/identities/mallory/budgets/daily", json={"amount": "0.01"}).status_code == 200
    assert [s.period.value for s in admin_store.budget_status("mallory")] == ["daily"]
    assert admin_store.budget_status(mallory["_id"]) == []  # the decoy (external id first) has none
    admin_store.record("mallory", cost="0.02")
    shown = identity_of(client.get("/v2/identities/mallory",
                                   params={"include_budgets": "true", "include_metrics": "true"}))
    assert shown["metrics"]["total_cost"] == Decimal("0.02") and len(shown["budgets"]) == 1
    assert Decimal(client.post("/v2/identities/mallory/budgets/daily/reset").json()["spent"]) == 0
    assert client.delete("/v2/identities/mallory/budgets/daily").status_code in (200, 204)
    assert admin_store.budget_status("mallory") == []


def test_a_percent_encoded_slash_is_part_of_the_id(client: TestClient, admin_store: Store) -> None:
    create(client, "victim2")
    client.put("/v2/identities/victim2/budgets/daily", json={"amount": "1"})
    create(client, "victim2/budgets/daily")
    assert identity_of(client.get("/v2/identities/victim2%2Fbudgets%2Fdaily"))["external_id"] == "victim2/budgets/daily"
    assert client.delete("/v2/identities/victim2%2Fbudgets%2Fdaily").status_code in (200, 204)
    with pytest.raises(LookupError):
        admin_store.retrieve("victim2/budgets/daily")
    assert [s.period.value for s in admin_store.budget_status("victim2")] == ["daily"]  # untouched
    create(client, "a/b")
    assert client.put("/v2/identities/a%2Fb/budgets/weekly", json={"amount": "2"}).status_code == 200
    assert [s.period.value for s in admin_store.budget_status("a/b")] == ["weekly"]


def test_a_percent_encoded_slash_works_under_a_mount(admin_store: Store) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    app = Starlette(routes=[Mount("/admin", app=create_admin_app(admin_store, token=TOKEN))])
    with TestClient(app, headers=AUTH) as client:
        assert client.post("/admin/v2/identities", json={"external_id": "x/y"}).status_code == 201
        assert identity_of(client.get("/admin/v2/identities/x%2Fy"))["external_id"] == "x/y"


def test_the_singular_budget_on_a_tie_is_the_longer_period() -> None:
    # On a month's last day the daily and the monthly budget reset at the same instant (and on
    # Dec 31 the yearly too): the one named must not depend on the day it is asked.
    from datetime import datetime

    from identity_middleware.admin.wire import identity_budget
    from identity_middleware.core.models import BudgetStatus, Identity
    from identity_middleware.core.periods import Period

    midnight = datetime(2027, 1, 1, tzinfo=UTC)
    identity = Identity(id="01HZZZZZZZZZZZZZZZZZZZZZZZ", external_id="u", created=midnight, updated=midnight)

    def status(period: Period, resets_at: datetime) -> BudgetStatus:
        return BudgetStatus(period=period, amount=Decimal(1), spent=Decimal(0), reserved=Decimal(0),
                            remaining=Decimal(1), percent=0.0, period_start=resets_at, resets_at=resets_at)

    tied = [status(Period.DAILY, midnight), status(Period.YEARLY, midnight), status(Period.MONTHLY, midnight)]
    for order in (tied, tied[::-1]):
        named = identity_budget(identity, order)
        assert named is not None and named["limits"]["period"] == "BUDGET_PERIOD_YEARLY"
    later = [status(Period.DAILY, midnight.replace(day=2)), status(Period.MONTHLY, midnight)]
    named = identity_budget(identity, later)
    assert named is not None and named["limits"]["period"] == "BUDGET_PERIOD_DAILY"  # the later reset first
