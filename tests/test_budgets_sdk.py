"""orq's official SDK drives /v2/budgets unchanged: every orq.budgets.* call, sync and async, on every store."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import anyio
import anyio.from_thread
import pytest
from orq_ai_sdk import Orq, models
from orq_ai_sdk.models import OrqError
from starlette.applications import Starlette
from starlette.routing import Mount

from browser import live_server
from conftest import MakeStore
from identity_middleware.admin import create_admin_app
from identity_middleware.core.admission import AdmissionRequest, Settlement, Usage
from identity_middleware.stores import Store
from sdk_calls import SdkCalls

TOKEN = "budgets-admin-token"


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, make_store: MakeStore) -> Store:
    return make_store(request.param)


@pytest.fixture
def server(store: Store) -> Iterator[str]:
    app = Starlette(routes=[Mount("/admin", create_admin_app(store, token=TOKEN))])
    with live_server(app) as base:
        yield f"{base}/admin"


@pytest.fixture
def orq(server: str) -> Orq:
    return Orq(api_key=TOKEN, server_url=server)


class Sdk:
    """``orq.budgets`` and ``orq.identities``, by the sync methods or (``portal`` given) their ``*_async`` twins."""

    def __init__(self, orq: Orq, portal: anyio.from_thread.BlockingPortal | None) -> None:
        self.budgets = SdkCalls(orq.budgets, portal)
        self.identities = SdkCalls(orq.identities, portal)


@pytest.fixture(params=["sync", "async"])
def sdk(request: pytest.FixtureRequest, orq: Orq) -> Iterator[Sdk]:
    if request.param == "sync":
        yield Sdk(orq, None)
        return
    with anyio.from_thread.start_blocking_portal() as portal:
        yield Sdk(orq, portal)


def spend(store: Store, external_id: str, cost: str, model: str | None = None, tokens: int = 0) -> None:
    admission = store.admit(AdmissionRequest(external_id, model=model))
    usage = Usage()
    usage.add(int(Decimal(cost) * 10**9), tokens, 0, model)
    store.settle(Settlement(admission.identity.id, usage, admission.reservation))


def test_create_get_update_delete_a_model_budget(orq: Orq, store: Store) -> None:
    created = orq.budgets.create(scope={"model": {"model_id": "openai/gpt-4o"}},
                                 limits={"period": "BUDGET_PERIOD_DAILY", "amount": 1.5, "token_limit": 1000},
                                 rate_limit={"requests_per_minute": 60},
                                 alerts=[{"threshold_percent": 80, "notifier_ids": ["ops"]}])
    budget = created.budget
    assert budget.scope is not None and budget.scope.model is not None
    assert budget.scope.model.model_id == "openai/gpt-4o"
    assert budget.limits.period == "BUDGET_PERIOD_DAILY" and budget.limits.amount == 1.5
    assert budget.limits.token_limit == 1000 and budget.is_active
    assert budget.rate_limit is not None and budget.rate_limit.requests_per_minute == 60
    assert budget.alerts is not None and budget.alerts[0].threshold_percent == 80 and budget.alerts[0].id
    spend(store, "u1", "0.25", "openai/gpt-4o", tokens=7)
    fetched = orq.budgets.get(budget_id=budget.budget_id).budget
    assert fetched.usage is not None and fetched.usage.amount == 0.25 and fetched.usage.tokens == 7
    assert fetched.usage.requests == 1
    updated = orq.budgets.update(budget_id=budget.budget_id, limits={"amount": 2}, is_active=False).budget
    assert updated.limits.amount == 2 and updated.is_active is False and updated.limits.token_limit == 1000
    reset = orq.budgets.reset_consumption(budget_id=budget.budget_id, reset_budget_consumption_request={})
    assert reset.budget is not None and reset.budget.budget_id == budget.budget_id
    fetched = orq.budgets.get(budget_id=budget.budget_id).budget
    assert fetched.usage is not None and fetched.usage.amount == 0
    orq.budgets.delete(budget_id=budget.budget_id)
    with pytest.raises(OrqError) as raised:
        orq.budgets.get(budget_id=budget.budget_id)
    assert raised.value.raw_response.status_code == 404


def test_every_scope_kind_round_trips_and_lists_with_filters(orq: Orq) -> None:
    ids = {
        "identity": orq.budgets.create(scope={"identity": {"identity_external_id": "user_1"}},
                                       limits={"period": "BUDGET_PERIOD_MONTHLY", "amount": 5}).budget.budget_id,
        "model": orq.budgets.create(scope={"model": {"model_id": "gpt-4o"}},
                                    limits={"period": "BUDGET_PERIOD_ONE_TIME", "token_limit": 50}).budget.budget_id,
        "provider": orq.budgets.create(scope={"provider": {"provider": "anthropic"}},
                                       limits={"period": "BUDGET_PERIOD_WEEKLY", "amount": 0.1}).budget.budget_id,
        "workspace": orq.budgets.create(scope={"workspace": {}},
                                        limits={"period": "BUDGET_PERIOD_YEARLY", "amount": 100}).budget.budget_id,
    }
    page = orq.budgets.list(limit=10)
    assert page is not None and sorted(b.budget_id for b in page.data) == sorted(ids.values())
    assert all(b.usage is not None for b in page.data) and page.has_more is False
    one = orq.budgets.list(scope_kind=["BUDGET_SCOPE_KIND_PROVIDER"])
    assert one is not None and [b.budget_id for b in one.data] == [ids["provider"]]
    assert one.data[0].scope is not None and one.data[0].scope.provider is not None
    assert one.data[0].scope.provider.provider == "anthropic"
    target = orq.budgets.list(scope_target_id="user_1")
    assert target is not None and [b.budget_id for b in target.data] == [ids["identity"]]
    periods = orq.budgets.list(period=["BUDGET_PERIOD_ONE_TIME", "BUDGET_PERIOD_YEARLY"])
    assert periods is not None and {b.budget_id for b in periods.data} == {ids["model"], ids["workspace"]}
    first = orq.budgets.list(limit=2)
    assert first is not None and first.has_more and len(first.data) == 2
    rest = orq.budgets.list(limit=10, starting_after=first.data[-1].budget_id)
    assert rest is not None and len(rest.data) == 2 and not rest.has_more
    back = orq.budgets.list(limit=10, ending_before=rest.data[0].budget_id)
    assert back is not None and [b.budget_id for b in back.data] == [b.budget_id for b in first.data]


def test_one_budget_per_scope_target_and_period(orq: Orq) -> None:
    orq.budgets.create(scope={"provider": {"provider": "openai"}}, limits={"period": "BUDGET_PERIOD_DAILY",
                                                                          "amount": 1})
    with pytest.raises(OrqError) as raised:
        orq.budgets.create(scope={"provider": {"provider": "openai"}}, limits={"period": "BUDGET_PERIOD_DAILY",
                                                                              "amount": 2})
    assert raised.value.raw_response.status_code == 409


def test_identity_view_sees_budgets_set_the_old_way(orq: Orq, store: Store) -> None:
    from identity_middleware import Budget

    store.admit(AdmissionRequest("u9"))
    store.set_budget("u9", Budget(period="daily", amount="0.20"))
    page = orq.budgets.list(scope_kind=["BUDGET_SCOPE_KIND_IDENTITY"], scope_target_id="u9")
    assert page is not None and len(page.data) == 1 and page.data[0].limits.amount == 0.2
    orq.budgets.update(budget_id=page.data[0].budget_id, limits={"amount": 0.5})
    assert store.budget_status("u9")[0].amount == Decimal("0.5")
    orq.budgets.delete(budget_id=page.data[0].budget_id)
    assert store.budget_status("u9") == []


def test_async_methods_work_too(orq: Orq) -> None:
    async def main() -> None:
        created = await orq.budgets.create_async(scope={"workspace": {}},
                                                 limits={"period": "BUDGET_PERIOD_MONTHLY", "amount": 3})
        budget_id = created.budget.budget_id
        assert (await orq.budgets.get_async(budget_id=budget_id)).budget.limits.amount == 3
        page = await orq.budgets.list_async()
        assert page is not None and [b.budget_id for b in page.data] == [budget_id]
        await orq.budgets.update_async(budget_id=budget_id, expires_at="2999-01-01T00:00:00Z")
        reset = await orq.budgets.reset_consumption_async(budget_id=budget_id, reset_budget_consumption_request={})
        assert reset.budget is not None
        await orq.budgets.delete_async(budget_id=budget_id)
        assert isinstance(await orq.budgets.list_async(), models.ListBudgetsResponse)

    anyio.run(main)


# -- the orq wire leftovers (issue 25): sort_by, every scope kind, one id, one uniqueness rule, alerts --
def _expected(budgets: list[models.BudgetRestResponse], sort_by: str) -> list[str]:
    """The order the docs promise: created/updated newest first, expiry soonest first (never last); ties by id."""
    def micros(moment: datetime) -> int:
        return int(moment.timestamp()) * 1_000_000 + moment.microsecond

    def key(budget: models.BudgetRestResponse) -> tuple[Any, ...]:
        if sort_by == "BUDGET_SORT_FIELD_CREATED_AT":
            return (-micros(budget.created_at), budget.budget_id)
        if sort_by == "BUDGET_SORT_FIELD_UPDATED_AT":
            return (-micros(budget.updated_at), budget.budget_id)
        expires = budget.expires_at
        return (expires is None, 0 if expires is None else micros(expires), budget.budget_id)

    return [budget.budget_id for budget in sorted(budgets, key=key)]


def _every_page(sdk: Sdk, sort_by: str, limit: int) -> list[str]:
    seen: list[str] = []
    after: str | None = None
    while True:
        page = sdk.budgets.list(limit=limit, sort_by=sort_by, starting_after=after)
        assert page is not None and len(page.data) <= limit
        seen += [budget.budget_id for budget in page.data]
        if not page.has_more:
            return seen
        after = page.data[-1].budget_id


def test_list_sorts_by_every_field_the_sdk_offers_and_pages_exactly(sdk: Sdk) -> None:
    fields = typing.get_args(models.BudgetSortField)
    assert len(fields) == 3  # the SDK's enum: every value is served below
    specs: list[dict[str, Any]] = [
        {"scope": {"identity": {"identity_external_id": "u1"}}, "limits": {"period": "BUDGET_PERIOD_MONTHLY",
                                                                          "amount": 5}},
        {"scope": {"model": {"model_id": "m1"}}, "limits": {"period": "BUDGET_PERIOD_DAILY", "amount": 1},
         "expires_at": "2999-01-01T00:00:00Z"},
        {"scope": {"provider": {"provider": "p"}}, "limits": {"period": "BUDGET_PERIOD_WEEKLY", "amount": 1},
         "expires_at": "2998-06-01T00:00:00Z"},
        {"scope": {"workspace": {}}, "limits": {"period": "BUDGET_PERIOD_YEARLY", "amount": 100}},
        {"scope": {"model": {"model_id": "m2"}}, "limits": {"period": "BUDGET_PERIOD_ONE_TIME", "token_limit": 9},
         "expires_at": "2998-01-01T00:00:00Z"},
    ]
    made = [sdk.budgets.create(**spec).budget.budget_id for spec in specs]
    sdk.budgets.update(budget_id=made[0], limits={"amount": 6})  # updated order differs from created order
    listed = sdk.budgets.list(limit=200)
    assert listed is not None and sorted(b.budget_id for b in listed.data) == sorted(made)
    for sort_by in fields:
        expected = _expected(listed.data, sort_by)
        whole = sdk.budgets.list(limit=200, sort_by=sort_by)
        assert whole is not None and [b.budget_id for b in whole.data] == expected, sort_by
        assert _every_page(sdk, sort_by, 2) == expected, sort_by  # forward, without gap or repeat
        back = sdk.budgets.list(limit=2, sort_by=sort_by, ending_before=expected[3])
        assert back is not None and [b.budget_id for b in back.data] == expected[1:3] and back.has_more
        narrow = sdk.budgets.list(limit=200, sort_by=sort_by, scope_kind=["BUDGET_SCOPE_KIND_MODEL"])
        assert narrow is not None and [b.budget_id for b in narrow.data] == [i for i in expected
                                                                            if i in (made[1], made[4])]
    expiring = sdk.budgets.list(limit=3, sort_by="BUDGET_SORT_FIELD_EXPIRES_AT")
    assert expiring is not None and [b.budget_id for b in expiring.data] == [made[4], made[2], made[1]]
    created = sdk.budgets.list(limit=200, sort_by="BUDGET_SORT_FIELD_CREATED_AT")
    assert created is not None and [b.budget_id for b in created.data] == made[::-1]  # made one after another
    updated = sdk.budgets.list(limit=1, sort_by="BUDGET_SORT_FIELD_UPDATED_AT")
    assert updated is not None and updated.data[0].budget_id == made[0]


def test_a_sorted_list_refuses_a_cursor_naming_no_budget(sdk: Sdk) -> None:
    sdk.budgets.create(scope={"workspace": {}}, limits={"period": "BUDGET_PERIOD_DAILY", "amount": 1})
    with pytest.raises(OrqError) as raised:
        sdk.budgets.list(sort_by="BUDGET_SORT_FIELD_UPDATED_AT", starting_after="bg_gone")
    assert raised.value.raw_response.status_code == 404
    unsorted = sdk.budgets.list(starting_after="bg_gone")  # by id, any id is a position
    assert unsorted is not None


@pytest.mark.parametrize("kind", typing.get_args(models.BudgetScopeKind))
def test_every_scope_kind_the_sdk_offers_filters_the_list(sdk: Sdk, kind: str) -> None:
    made = sdk.budgets.create(scope={"provider": {"provider": "openai"}},
                              limits={"period": "BUDGET_PERIOD_DAILY", "amount": 1}).budget.budget_id
    page = sdk.budgets.list(scope_kind=[kind])
    assert page is not None and page.has_more is False
    assert [b.budget_id for b in page.data] == ([made] if kind == "BUDGET_SCOPE_KIND_PROVIDER" else [])


def test_the_budget_an_identity_shows_is_the_one_the_budgets_api_serves(sdk: Sdk, store: Store) -> None:
    from identity_middleware import Budget

    made = sdk.identities.create(external_id="u7").result.identity
    store.set_budget("u7", Budget(period="daily", amount="0.5"))
    created = sdk.budgets.create(scope={"identity": {"identity_external_id": "u7"}},
                                 limits={"period": "BUDGET_PERIOD_MONTHLY", "amount": 8}).budget
    shown = sdk.identities.retrieve(id="u7", include_budget=True).identity.budget
    assert shown is not None and shown.budget_id == created.budget_id == f"bi_{made.id}_monthly"
    listed = sdk.identities.list(include_budget=True)
    assert listed is not None and listed.data[0].budget is not None
    assert listed.data[0].budget.budget_id == created.budget_id
    fetched = sdk.budgets.get(budget_id=shown.budget_id).budget
    assert fetched.budget_id == shown.budget_id and fetched.limits.amount == 8
    older = sdk.budgets.get(budget_id=f"{made.id}.monthly").budget  # the id earlier versions showed
    assert older.budget_id == created.budget_id
    sdk.budgets.update(budget_id=f"{made.id}.daily", limits={"amount": 0.75})
    assert store.budget_status("u7")[0].amount == Decimal("0.75")


def test_a_second_identity_budget_of_one_period_is_a_409_and_changes_nothing(sdk: Sdk, store: Store) -> None:
    first = sdk.budgets.create(scope={"identity": {"identity_external_id": "u8"}},
                               limits={"period": "BUDGET_PERIOD_DAILY", "amount": 1}).budget
    with pytest.raises(OrqError) as raised:
        sdk.budgets.create(scope={"identity": {"identity_external_id": "u8"}},
                           limits={"period": "BUDGET_PERIOD_DAILY", "amount": 2})
    assert raised.value.raw_response.status_code == 409
    assert raised.value.raw_response.json()["error"]["budget_id"] == first.budget_id
    assert sdk.budgets.get(budget_id=first.budget_id).budget.limits.amount == 1
    other = sdk.budgets.create(scope={"identity": {"identity_external_id": "u8"}},
                               limits={"period": "BUDGET_PERIOD_MONTHLY", "amount": 2}).budget
    assert other.budget_id != first.budget_id


def test_a_tokens_alert_is_rejected_as_orq_documents(sdk: Sdk) -> None:
    tokens = [{"threshold_percent": 80, "notifier_ids": ["ops"], "dimension": "BUDGET_ALERT_DIMENSION_TOKENS"}]
    with pytest.raises(OrqError) as raised:
        sdk.budgets.create(scope={"workspace": {}}, limits={"period": "BUDGET_PERIOD_DAILY", "token_limit": 100},
                           alerts=tokens)
    assert raised.value.raw_response.status_code == 400
    error = raised.value.raw_response.json()["error"]
    assert "TOKENS alert is rejected" in error["message"] and error["field"].startswith("alerts")
    made = sdk.budgets.create(scope={"workspace": {}}, limits={"period": "BUDGET_PERIOD_DAILY", "amount": 1,
                                                               "token_limit": 100},
                              alerts=[{"threshold_percent": 80, "notifier_ids": ["ops"],
                                       "dimension": "BUDGET_ALERT_DIMENSION_COST"}]).budget
    with pytest.raises(OrqError) as raised:
        sdk.budgets.update(budget_id=made.budget_id, alerts=tokens)
    assert raised.value.raw_response.status_code == 400
    kept = sdk.budgets.get(budget_id=made.budget_id).budget.alerts
    assert kept is not None and [alert.dimension for alert in kept] == ["BUDGET_ALERT_DIMENSION_COST"]
