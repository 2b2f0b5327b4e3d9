"""Any budget amount the admin API accepts is read back, exactly, on every store: the smallest unit
($0.000000001) and the largest ($1e9) included, through the REST API and orq's SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from orq_ai_sdk import Orq
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from browser import live_server
from conftest import MakeStore
from identity_middleware.admin import create_admin_app
from identity_middleware.core.budgets import ScopedBudget
from identity_middleware.core.money import MAX_AMOUNT
from identity_middleware.stores import Store

# JSON numbers as a client writes them, each a whole number of nano-dollars within the limit.
EDGE_AMOUNTS = ["1e-9", "1E-9", "0.000000001", "1e-7", "0.0000001", "1.5e-8", "0.1", "12.50", "1e2", "1E+8",
                "100000000", "999999999.999999999", "1000000000", "1000000000.000000000"]


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, make_store: MakeStore) -> Store:
    return make_store(request.param)


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    with TestClient(create_admin_app(store, token=None)) as test_client:
        yield test_client


def create_model_budget(client: TestClient, model: str, amount: str) -> Any:
    """POST /v2/budgets with ``amount`` written into the JSON as the client typed it."""
    body = (f'{{"scope": {{"model": {{"model_id": {json.dumps(model)}}}}}, '
            f'"limits": {{"period": "BUDGET_PERIOD_DAILY", "amount": {amount}}}}}')
    return client.post("/v2/budgets", content=body, headers={"content-type": "application/json"})


def amount_of(reply: dict[str, Any]) -> Decimal:
    return Decimal(reply["limits"]["amount"])


def read(response: Any) -> Any:
    """The reply's JSON with its numbers exact (as Decimal), not floats."""
    return response.json(parse_float=Decimal)


@pytest.mark.parametrize("amount", EDGE_AMOUNTS)
def test_an_accepted_amount_reads_back_exactly_and_the_workspace_stays_listable(client: TestClient,
                                                                                amount: str) -> None:
    created = create_model_budget(client, "m", amount)
    assert created.status_code in (200, 201), created.text
    budget_id = created.json()["budget"]["budgetId"]
    fetched = client.get(f"/v2/budgets/{budget_id}")
    assert fetched.status_code == 200, fetched.text
    assert amount_of(read(fetched)["budget"]) == Decimal(amount)
    listed = client.get("/v2/budgets")
    assert listed.status_code == 200, listed.text
    assert [amount_of(budget) for budget in read(listed)["data"]] == [Decimal(amount)]
    another = create_model_budget(client, "another-model", "1")  # later writes work too
    assert another.status_code in (200, 201), another.text
    updated = client.patch(f"/v2/budgets/{budget_id}", json={"is_active": False})
    assert updated.status_code == 200 and amount_of(read(updated)["budget"]) == Decimal(amount)


@pytest.mark.parametrize("amount", ["0.000000001", "0.0000001", "1000000000"])
def test_an_identity_budget_of_any_accepted_amount_reads_back(client: TestClient, amount: str) -> None:
    assert client.post("/v2/identities", json={"external_id": "tiny"}).status_code == 201
    put = client.put("/v2/identities/tiny/budgets/daily", json={"amount": amount})
    assert put.status_code == 200, put.text
    statuses = client.get("/v2/identities/tiny/budgets")
    assert statuses.status_code == 200, statuses.text
    assert [Decimal(status["amount"]) for status in statuses.json()["data"]] == [Decimal(amount)]
    assert client.get("/v2/budgets").status_code == 200


nano_amounts = st.decimals(min_value=Decimal("0.000000001"), max_value=MAX_AMOUNT, places=9, allow_nan=False,
                           allow_infinity=False)
spellings = st.sampled_from(["{:f}", "{:e}", "{:E}", "{}"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(amount=nano_amounts, spelling=spellings)
def test_every_accepted_amount_reads_back(client: TestClient, amount: Decimal, spelling: str) -> None:
    text = spelling.format(amount)
    created = create_model_budget(client, f"m-{text}", text)
    assert created.status_code in (200, 201, 400), created.text  # 400: a spelling past nine places
    if created.status_code == 400:
        return
    budget_id = created.json()["budget"]["budgetId"]
    fetched = client.get(f"/v2/budgets/{budget_id}")
    assert fetched.status_code == 200 and amount_of(read(fetched)["budget"]) == amount
    assert client.delete(f"/v2/budgets/{budget_id}").status_code == 200


def test_a_record_written_with_an_exponent_by_an_older_version_reads_back() -> None:
    # Before plain notation, a stored amount was str(Decimal): "1E-9" for the smallest unit.
    record = json.dumps({"scope": "model", "target": "m", "period": "daily", "amount": "1E-9", "id": "bg_1",
                         "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"})
    budget = ScopedBudget.from_record(record)
    assert budget.amount == Decimal("0.000000001")
    assert ScopedBudget.from_record(budget.to_record()) == budget
    assert '"amount":"0.000000001"' in budget.to_record()


def test_orq_sdk_creates_and_lists_the_smallest_budget(store: Store) -> None:
    app = Starlette(routes=[Mount("/admin", create_admin_app(store, token="t"))])
    with live_server(app) as base:
        orq = Orq(api_key="t", server_url=f"{base}/admin")
        created = orq.budgets.create(scope={"model": {"model_id": "m"}},
                                     limits={"period": "BUDGET_PERIOD_DAILY", "amount": 1e-9}).budget
        assert created.limits.amount == 1e-9
        listed = orq.budgets.list()
        assert [budget.limits.amount for budget in listed.data] == [1e-9]
