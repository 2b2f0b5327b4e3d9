"""Credits and forecasts over real HTTP (issue 26): the admin app through its test client, orq's SDK
against a live server, and the command line through its entry point; on Memory, Redis and the Cluster."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from orq_ai_sdk import Orq
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from browser import live_server
from identity_middleware import cli
from identity_middleware.admin import create_admin_app
from identity_middleware.core.budgets import BudgetSpec, ForecastAlert
from identity_middleware.core.models import Budget
from identity_middleware.stores import MemoryStore, Store

TOKEN = "credits-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
def store(request: pytest.FixtureRequest) -> Store:
    if request.param == "memory":
        return MemoryStore()
    make_store: Callable[[str], Store] = request.getfixturevalue("make_store")
    return make_store(request.param)


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    with TestClient(create_admin_app(store, token=TOKEN), headers=AUTH) as test_client:
        yield test_client


def _json(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json(parse_float=Decimal)


def _balance(store: Store, external_id: str = "u", amount: str = "10") -> str:
    return store.create_budget(BudgetSpec(scope="identity", target=external_id, period="one_time", amount=amount)).id


# -- the top-up routes -------------------------------------------------------------------------------
def test_a_top_up_answers_the_same_to_a_repeated_key_and_adds_once(client: TestClient, store: Store) -> None:
    budget_id = _balance(store)
    body = {"amount": 25.5, "idempotency_key": "invoice-42"}
    first = client.post(f"/v2/budgets/{budget_id}/top-up", json=body)
    again = client.post(f"/v2/budgets/{budget_id}/top-up", json=body)
    assert first.status_code == again.status_code == 200 and first.content == again.content
    made = _json(first)["top_up"]
    assert made["budget_id"] == budget_id and made["amount"] == Decimal("25.5")
    assert made["idempotency_key"] == "invoice-42" and made["new_limit"] == Decimal("35.5")
    assert made["created"].endswith("Z")
    assert _json(client.get(f"/v2/budgets/{budget_id}"))["budget"]["limits"]["amount"] == Decimal("35.5")


def test_a_reused_key_with_another_amount_is_422(client: TestClient, store: Store) -> None:
    budget_id = _balance(store)
    client.post(f"/v2/budgets/{budget_id}/top-up", json={"amount": 1, "idempotency_key": "k"})
    refused = _json(client.post(f"/v2/budgets/{budget_id}/top-up", json={"amount": 2, "idempotency_key": "k"}), 422)
    assert refused["code"] == 422 and refused["error"]["type"] == "idempotency_key_reused"
    assert refused["error"]["field"] == "idempotency_key"
    assert _json(client.get(f"/v2/budgets/{budget_id}"))["budget"]["limits"]["amount"] == Decimal(11)


def test_the_ledger_lists_top_ups_exact_to_the_nano_dollar(client: TestClient, store: Store) -> None:
    budget_id = _balance(store, amount="0.1")
    client.post(f"/v2/budgets/{budget_id}/top-up", json={"amount": "0.000000001", "idempotency_key": "a"})
    client.post(f"/v2/budgets/{budget_id}/top-up", json={"amount": 0.2, "idempotency_key": "b"})
    ledger = _json(client.get(f"/v2/budgets/{budget_id}/top-ups"))
    assert ledger["object"] == "list" and ledger["has_more"] is False
    assert [(entry["idempotency_key"], entry["amount"], entry["new_limit"]) for entry in ledger["data"]] == [
        ("a", Decimal("0.000000001"), Decimal("0.100000001")), ("b", Decimal("0.2"), Decimal("0.300000001"))]
    assert b'"new_limit":0.300000001' in client.get(f"/v2/budgets/{budget_id}/top-ups").content


@pytest.mark.parametrize(("body", "field"), [
    ({"amount": 0, "idempotency_key": "k"}, "amount"),
    ({"amount": -1, "idempotency_key": "k"}, "amount"),
    ({"amount": "1e3", "idempotency_key": "k"}, "amount"),
    ({"amount": True, "idempotency_key": "k"}, "amount"),
    ({"amount": 1}, "idempotency_key"),
    ({"amount": 1, "idempotency_key": ""}, "idempotency_key"),
    ({"amount": 1, "idempotency_key": 7}, "idempotency_key"),
    ({"amount": 1, "idempotency_key": "k", "currency": "EUR"}, "currency"),
])
def test_an_invalid_top_up_is_400_naming_the_field(client: TestClient, store: Store, body: dict[str, Any],
                                                   field: str) -> None:
    budget_id = _balance(store)
    refused = _json(client.post(f"/v2/budgets/{budget_id}/top-up", json=body), 400)
    assert refused["error"]["type"] == "invalid_request" and refused["error"]["field"] == field
    assert _json(client.get(f"/v2/budgets/{budget_id}/top-ups"))["data"] == []


def test_a_budget_that_takes_no_top_ups_is_400_and_an_unknown_one_404(client: TestClient, store: Store) -> None:
    daily = store.create_budget(BudgetSpec(scope="identity", target="u", period="daily", amount="1")).id
    refused = _json(client.post(f"/v2/budgets/{daily}/top-up", json={"amount": 1, "idempotency_key": "k"}), 400)
    assert refused["error"]["field"] == "budget_id" and "one-time" in refused["error"]["message"]
    missing = client.post("/v2/budgets/bg_nothing/top-up", json={"amount": 1, "idempotency_key": "k"})
    assert _json(missing, 404)["error"]["type"] == "not_found"
    assert _json(client.get("/v2/budgets/bg_nothing/top-ups"), 404)["error"]["type"] == "not_found"


def test_the_top_up_routes_need_the_token(store: Store) -> None:
    budget_id = _balance(store)
    with TestClient(create_admin_app(store, token=TOKEN)) as anonymous:
        assert anonymous.post(f"/v2/budgets/{budget_id}/top-up", json={"amount": 1, "idempotency_key": "k"}
                              ).status_code == 401
        assert anonymous.get(f"/v2/budgets/{budget_id}/top-ups").status_code == 401
    assert store.top_ups(budget_id) == []


# -- forecasts on the wire -----------------------------------------------------------------------------
def test_budget_replies_carry_the_forecast_extension(client: TestClient, store: Store) -> None:
    budget_id = _balance(store, amount="10")
    store.record("u", cost=Decimal(1))
    fetched = _json(client.get(f"/v2/budgets/{budget_id}"))["budget"]
    assert fetched["forecast"]["burn_rate"] > 0 and fetched["forecast"]["exhausts_at"].endswith("Z")
    listed = _json(client.get("/v2/budgets"))["data"][0]
    assert listed["budgetId"] == budget_id and listed["forecast"]["exhausts_at"] is not None
    store.set_budget("u", Budget(period="daily", amount="100"))
    record = _json(client.get("/v2/identities/u", params={"include_budget": "true", "include_budgets": "true"}))
    status = record["identity"]["budgets"][0]
    assert status["forecast"]["exhausts_at"] is None and Decimal(status["forecast"]["burn_rate"]) > 0
    assert record["identity"]["budget"]["forecast"]["burn_rate"] > 0


def test_the_overview_lists_a_budget_forecast_to_run_out(client: TestClient, store: Store) -> None:
    budget_id = _balance(store, amount="10")  # 10 % spent: not at risk by its share, but spent in ~1-2 weeks
    store.record("u", cost=Decimal(1))
    risks = _json(client.get("/v2/analytics/overview", params={"range": "24h"}))["budgets_at_risk"]
    assert [(risk["budget_id"], risk["state"]) for risk in risks] == [(budget_id, "forecast")]
    assert risks[0]["exhausts_at"].endswith("Z")


# -- orq's SDK parses every reply that carries the extension ------------------------------------------
@pytest.fixture
def orq(store: Store) -> Iterator[Orq]:
    app = Starlette(routes=[Mount("/admin", create_admin_app(store, token=TOKEN))])
    with live_server(app) as base:
        yield Orq(api_key=TOKEN, server_url=f"{base}/admin")


def test_orqs_sdk_parses_budgets_and_identities_carrying_forecasts(orq: Orq, store: Store) -> None:
    budget_id = store.create_budget(BudgetSpec(scope="identity", target="u", period="one_time", amount="10",
                                               forecast_alert=ForecastAlert(notifier_ids=("ops",)))).id
    store.set_budget("u", Budget(period="monthly", amount="5"))
    store.record("u", cost=Decimal(1))
    fetched = orq.budgets.get(budget_id=budget_id).budget  # its reply carries "forecast" and "forecastAlert"
    assert fetched.budget_id == budget_id and fetched.usage is not None and fetched.usage.amount == 1
    assert fetched.limits.amount == 10
    listed = orq.budgets.list(limit=10)
    assert listed is not None and {budget.budget_id for budget in listed.data} >= {budget_id}
    identity = orq.identities.retrieve(id="u", include_budget=True, include_metrics=True).identity
    assert identity.external_id == "u" and identity.budget is not None and identity.budget.limits.amount == 5
    page = orq.identities.list(include_budget=True)
    assert page.data[0].budget is not None


# -- the command line ---------------------------------------------------------------------------------
@pytest.fixture
def shared_memory(monkeypatch: pytest.MonkeyPatch) -> MemoryStore:
    shared = MemoryStore()
    monkeypatch.setattr(cli, "store_from_url", lambda url: shared)
    return shared


def test_the_cli_tops_up_once_per_key_and_lists_the_ledger(shared_memory: MemoryStore,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    budget_id = _balance(shared_memory, amount="5")
    argv = ["--store-url", "memory://", "budgets", "top-up", budget_id, "20", "--idempotency-key", "inv-1"]
    assert cli.main(argv) == 0
    assert cli.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == out[1] == f"budget {budget_id}: topped up 20.00 USD under key 'inv-1', limit now 25.00 USD"
    assert cli.main(["--store-url", "memory://", "budgets", "top-up", budget_id, "21", "--idempotency-key",
                     "inv-1"]) == 1
    assert "topped up 20.00 already" in capsys.readouterr().err
    assert cli.main(["--store-url", "memory://", "budgets", "top-ups", budget_id, "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert (entry["amount"], entry["new_limit"], entry["idempotency_key"]) == ("20.00", "25.00", "inv-1")
    assert cli.main(["--store-url", "memory://", "budgets", "top-up", budget_id, "0", "--idempotency-key", "x"]) == 2


def test_the_console_script_tops_up_a_redis_budget(redis_url: str) -> None:
    import redis

    from identity_middleware.stores import RedisStore

    url = redis_url.rsplit("/", 1)[0] + "/7"  # a database of its own, under the default key prefix
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    store = RedisStore.from_url(url)
    try:
        budget_id = _balance(store, amount="1")
        command = [sys.executable, "-m", "identity_middleware", "--store-url", url, "budgets", "top-up", budget_id,
                   "0.000000001", "--idempotency-key", "k", "--json"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["new_limit"] == "1.000000001"
        assert store.retrieve_budget(budget_id).amount == Decimal("1.000000001")
    finally:
        store.close()


def test_a_forecast_alert_is_set_changed_and_cleared_over_the_budgets_api(client: TestClient) -> None:
    created = _json(client.post("/v2/budgets", json={
        "scope": {"workspace": {}}, "limits": {"period": "BUDGET_PERIOD_MONTHLY", "amount": 5},
        "forecast_alert": {"notifier_ids": ["ops"]}}))["budget"]
    assert created["forecastAlert"] == {"notifierIds": ["ops"]}
    path = f"/v2/budgets/{created['budgetId']}"
    changed = _json(client.patch(path, json={"forecastAlert": {"notifierIds": ["ops", "billing"]}}))["budget"]
    assert changed["forecastAlert"] == {"notifierIds": ["ops", "billing"]}
    cleared = _json(client.patch(path, json={"clear_forecast_alert": True}))["budget"]
    assert "forecastAlert" not in cleared
    refused = _json(client.patch(path, json={"forecast_alert": {"notifier_ids": "ops"}}), 400)
    assert refused["error"]["field"] == "forecast_alert.notifier_ids"
