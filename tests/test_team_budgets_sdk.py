"""orq's official SDK over HTTP for match (CEL), project and API-key budgets, sync and async, on
Memory and Redis; and ``POST /v2/budgets/check`` (orq dropped it from the SDK: plain HTTP)."""

from __future__ import annotations

from decimal import Decimal

import anyio
import httpx
import pytest
from orq_ai_sdk import Orq
from orq_ai_sdk.models import OrqError

import test_budgets_sdk
from identity_middleware.core.admission import AdmissionRequest, Settlement, Usage
from identity_middleware.core.models import IdentityInput
from identity_middleware.stores import Store

TOKEN = test_budgets_sdk.TOKEN
TEAM_ML = 'metadata.team == "ml"'

# The Budgets SDK suite's fixtures (Memory and Redis behind a live uvicorn, the SDK pointed at it).
store, server, orq = test_budgets_sdk.store, test_budgets_sdk.server, test_budgets_sdk.orq


def spend(store: Store, external_id: str, cost: str, **facts: object) -> None:
    admission = store.admit(AdmissionRequest(external_id, **facts))  # type: ignore[arg-type]
    assert admission.allowed
    usage = Usage()
    usage.add(int(Decimal(cost) * 10**9), 0, 0, None)
    store.settle(Settlement(admission.identity.id, usage, admission.reservation, None, admission.charged))
    store.flush()


def test_a_match_budget_is_created_read_updated_listed_and_deleted(orq: Orq, store: Store) -> None:
    created = orq.budgets.create(match={"cel": TEAM_ML}, limits={"period": "BUDGET_PERIOD_MONTHLY", "amount": 0.5})
    budget = created.budget
    assert budget.scope is None and budget.match is not None and budget.match.cel == TEAM_ML
    store.create(IdentityInput(id="ann", metadata={"team": "ml"}))
    spend(store, "ann", "0.2")
    fetched = orq.budgets.get(budget_id=budget.budget_id).budget
    assert fetched.match is not None and fetched.match.cel == TEAM_ML
    assert fetched.usage is not None and fetched.usage.amount == 0.2
    updated = orq.budgets.update(budget_id=budget.budget_id, match={"cel": 'metadata.team == "infra"'},
                                 limits={"amount": 1}).budget
    assert updated.match is not None and updated.match.cel == 'metadata.team == "infra"' and updated.limits.amount == 1
    page = orq.budgets.list()
    assert page is not None and [item.budget_id for item in page.data] == [budget.budget_id]
    found = orq.budgets.list(query="infra")
    assert found is not None and len(found.data) == 1
    orq.budgets.delete(budget_id=budget.budget_id)
    with pytest.raises(OrqError) as raised:
        orq.budgets.get(budget_id=budget.budget_id)
    assert raised.value.raw_response.status_code == 404


def test_project_and_api_key_budgets_round_trip_and_filter(orq: Orq, store: Store) -> None:
    project = orq.budgets.create(scope={"project": {"project_id": "apollo"}},
                                 limits={"period": "BUDGET_PERIOD_DAILY", "amount": 2}).budget
    key = orq.budgets.create(scope={"api_key": {"api_key_id": "key_1"}},
                             limits={"period": "BUDGET_PERIOD_DAILY", "token_limit": 500}).budget
    assert project.scope is not None and project.scope.project is not None
    assert project.scope.project.project_id == "apollo"
    assert key.scope is not None and key.scope.api_key is not None and key.scope.api_key.api_key_id == "key_1"
    assert project.match is not None and project.match.cel == 'project == "apollo"'
    spend(store, "u", "0.5", project="apollo", api_key="key_1")
    page = orq.budgets.list(scope_kind=["BUDGET_SCOPE_KIND_PROJECT"])
    assert page is not None and [item.budget_id for item in page.data] == [project.budget_id]
    assert page.data[0].usage is not None and page.data[0].usage.amount == 0.5
    page = orq.budgets.list(scope_kind=["BUDGET_SCOPE_KIND_API_KEY"], scope_target_id="key_1")
    assert page is not None and [item.budget_id for item in page.data] == [key.budget_id]
    with pytest.raises(OrqError) as raised:  # one budget per target and period
        orq.budgets.create(scope={"project": {"project_id": "apollo"}},
                           limits={"period": "BUDGET_PERIOD_DAILY", "amount": 3})
    assert raised.value.raw_response.status_code == 409


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"match": {"cel": "metadata.team =="}, "limits": {"amount": 1}}, "match.cel", "does not parse"),
    ({"match": {"cel": 'team == "ml"'}, "limits": {"amount": 1}}, "match.cel", "'team'"),
    ({"match": {"cel": TEAM_ML}, "scope": {"workspace": {}}, "limits": {"amount": 1}}, "match", "not both"),
])
def test_a_bad_expression_is_a_400_naming_the_problem(orq: Orq, body: dict[str, object], field: str,
                                                      words: str) -> None:
    with pytest.raises(OrqError) as raised:
        orq.budgets.create(**body)  # type: ignore[arg-type]
    assert raised.value.raw_response.status_code == 400
    error = raised.value.raw_response.json()["error"]
    assert error["field"] == field and words in error["message"], error


def test_the_scope_of_a_scoped_budget_cannot_become_an_expression(orq: Orq) -> None:
    budget = orq.budgets.create(scope={"workspace": {}}, limits={"period": "BUDGET_PERIOD_DAILY", "amount": 1}).budget
    with pytest.raises(OrqError) as raised:
        orq.budgets.update(budget_id=budget.budget_id, match={"cel": TEAM_ML})
    assert raised.value.raw_response.status_code == 400


def test_the_async_methods_manage_match_budgets_too(orq: Orq) -> None:
    async def main() -> None:
        created = await orq.budgets.create_async(match={"cel": TEAM_ML},
                                                 limits={"period": "BUDGET_PERIOD_WEEKLY", "amount": 3})
        budget_id = created.budget.budget_id
        fetched = (await orq.budgets.get_async(budget_id=budget_id)).budget
        assert fetched.match is not None and fetched.match.cel == TEAM_ML
        await orq.budgets.update_async(budget_id=budget_id, match={"cel": 'provider == "openai"'})
        page = await orq.budgets.list_async()
        assert page is not None and page.data[0].match is not None and page.data[0].match.cel == 'provider == "openai"'
        project = await orq.budgets.create_async(scope={"project": {"project_id": "p"}},
                                                 limits={"period": "BUDGET_PERIOD_DAILY", "amount": 1})
        assert project.budget.scope is not None and project.budget.scope.project is not None
        await orq.budgets.delete_async(budget_id=budget_id)
        await orq.budgets.delete_async(budget_id=project.budget.budget_id)
        remaining = await orq.budgets.list_async()
        assert remaining is not None and remaining.data == []

    anyio.run(main)


def test_the_check_answers_in_orqs_shape_sync_and_async(orq: Orq, server: str, store: Store) -> None:
    orq.budgets.create(match={"cel": TEAM_ML}, limits={"period": "BUDGET_PERIOD_DAILY", "amount": 0.5})
    store.create(IdentityInput(id="ann", metadata={"team": "ml"}))
    spend(store, "ann", "0.4")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server, headers=headers) as client:
        allowed = client.post("/v2/budgets/check", json={"identity_external_id": "ann", "estimate": 0.1}).json()
        refused = client.post("/v2/budgets/check", json={"identity_external_id": "ann", "estimate": 0.2}).json()
        other = client.post("/v2/budgets/check", json={"metadata": {"team": "infra"}, "estimate": 0.2}).json()
        bad = client.post("/v2/budgets/check", json={"metadata": "ml"})
    assert allowed == {"allowed": True, "rejection": None, "cost": {"limit": 0.5, "consumed": 0.4, "remaining": 0.1},
                       "tokens": None, "requests": None}
    assert refused["allowed"] is False and refused["cost"]["remaining"] == 0.1
    rejection = refused["rejection"]
    assert rejection["scope_kind"] == "BUDGET_SCOPE_KIND_MATCH" and rejection["scope_target_id"] == TEAM_ML
    assert rejection["dimension"] == "cost" and rejection["code"] == "budget_exceeded" and rejection["message"]
    assert other == {"allowed": True, "rejection": None, "cost": None, "tokens": None, "requests": None}
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "metadata"

    async def main() -> dict[str, object]:
        async with httpx.AsyncClient(base_url=server, headers=headers) as client:
            reply = await client.post("/v2/budgets/check", json={"identity_external_id": "ann", "estimate": 0.2})
            return dict(reply.json())

    assert anyio.run(main) == refused
    fetched = orq.budgets.list()
    assert fetched is not None and fetched.data[0].usage is not None and fetched.data[0].usage.requests == 1
