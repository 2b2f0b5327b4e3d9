"""The store contract, continued: forecasts and credits (issue 26), on every store configuration.

The fixtures are the contract suite's own (imported), so each test runs on Memory, Redis (redis-py,
accelerated, leased) and the Cluster, through the sync forms and the async twins.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

import test_store_contract as contract
from identity_middleware.core.admission import AdmissionRequest
from identity_middleware.core.budgets import Alert, BudgetNotFound, BudgetSpec, ForecastAlert, InvalidBudget
from identity_middleware.core.credits import TopUpConflict
from identity_middleware.core.models import Budget, IdentityInput
from test_store_contract import Api, Notifier, alerting, settle, spend

# The contract suite's fixtures: every configuration, sync and async, its clock and ``now``.
store_kind, stores, store, api, clock, now = (contract.store_kind, contract.stores, contract.store, contract.api,
                                            contract.clock, contract.now)


def _noon(now: datetime) -> datetime:
    """Today's 12:00 UTC: a day's arithmetic that does not depend on which day it is."""
    return now.replace(hour=12, minute=0, second=0, microsecond=0)


def _budgeted(api: Api, external_id: str, budget: Budget) -> None:
    api.create(IdentityInput(id=external_id))
    api.set_budget(external_id, budget)


def _spend_at(api: Api, external_id: str, cost: str, at: datetime) -> None:
    api.record(external_id, cost=Decimal(cost), now=at)


# -- forecasts ---------------------------------------------------------------------------------------
def test_an_identity_budget_is_forecast_at_the_identitys_last_day_and_a_half(api: Api, now: datetime) -> None:
    noon = _noon(now)
    api.create_budget(BudgetSpec(scope="identity", target="u", period="daily", amount="2.5"))
    _spend_at(api, "u", "1", noon - timedelta(days=1))
    _spend_at(api, "u", "2", noon)
    # $3 over the 36 hours since yesterday's 00:00 UTC: $2 a day; $0.50 left lasts 6 hours.
    (status,) = api.budget_status("u", now=noon)
    assert status.forecast is not None and status.forecast.burn_rate == Decimal(2)
    assert status.forecast.exhausts_at == noon + timedelta(hours=6)


def test_a_budget_that_lasts_until_it_resets_has_no_exhaustion(api: Api, now: datetime) -> None:
    noon = _noon(now)
    _budgeted(api, "u", Budget(period="daily", amount="5"))
    _spend_at(api, "u", "1", noon - timedelta(days=1))
    _spend_at(api, "u", "2", noon)
    (status,) = api.budget_status("u", now=noon)  # $3 left at $2 a day: past midnight, when it resets
    assert status.forecast is not None and status.forecast.burn_rate == Decimal(2)
    assert status.forecast.exhausts_at is None


def test_a_spent_budget_is_exhausted_now_and_an_idle_one_never(api: Api, now: datetime) -> None:
    noon = _noon(now)
    _budgeted(api, "spent", Budget(period="daily", amount="1"))
    _budgeted(api, "idle", Budget(period="daily", amount="1"))
    _spend_at(api, "spent", "1", noon)
    (spent,) = api.budget_status("spent", now=noon)
    assert spent.forecast is not None and spent.forecast.exhausts_at == noon
    (idle,) = api.budget_status("idle", now=noon)
    assert idle.forecast is not None and idle.forecast.burn_rate == 0 and idle.forecast.exhausts_at is None


def test_a_one_time_identity_budget_forecasts_its_balance(api: Api, now: datetime) -> None:
    noon = _noon(now)
    budget = api.create_budget(BudgetSpec(scope="identity", target="u", period="one_time", amount="10"))
    _spend_at(api, "u", "1", noon - timedelta(days=1))
    _spend_at(api, "u", "2", noon)
    usage = api.budget_usage(budget.id, now=noon)  # $7 left at $2 a day: 3.5 days
    assert usage.amount == Decimal(3) and usage.forecast is not None
    assert usage.forecast.burn_rate == Decimal(2) and usage.forecast.exhausts_at == noon + timedelta(hours=84)


def test_a_workspace_budget_is_forecast_at_its_rate_since_it_was_created(api: Api) -> None:
    budget = api.create_budget(BudgetSpec(scope="workspace", period="one_time", amount="10"))
    created = budget.created_at
    admission = api.admit(AdmissionRequest("a", now=created + timedelta(hours=1)))
    assert admission.allowed
    settle(api, admission, "1", now=created + timedelta(hours=1))
    api.flush()
    # $1 in 4 hours (from the minute it was created to the minute of the read): $6 a day
    usage = api.budget_usage(budget.id, now=created + timedelta(hours=4))
    assert usage.forecast is not None and usage.forecast.burn_rate == Decimal(6)
    assert usage.forecast.exhausts_at == created.replace(second=0, microsecond=0) + timedelta(hours=40)


def test_a_budget_without_an_amount_has_a_rate_and_no_exhaustion(api: Api, now: datetime) -> None:
    noon = _noon(now)
    budget = api.create_budget(BudgetSpec(scope="identity", target="u", period="daily", token_limit=100))
    _spend_at(api, "u", "3", noon)
    usage = api.budget_usage(budget.id, now=noon)
    assert usage.forecast is not None and usage.forecast.burn_rate == Decimal(2)
    assert usage.forecast.exhausts_at is None


def test_listed_identities_carry_their_budgets_forecasts(api: Api, now: datetime) -> None:
    _budgeted(api, "u", Budget(period="daily", amount="1"))
    _spend_at(api, "u", "1", now)
    (shown,) = api.list(include_budgets=True).data
    assert shown.budgets is not None and shown.budgets[0].forecast is not None
    assert shown.budgets[0].forecast.burn_rate > 0
    (listed,) = api.list_budgets().data
    assert listed[1].forecast is not None and listed[1].forecast.exhausts_at is not None



# -- the forecast alert ------------------------------------------------------------------------------
def _watched(api: Api, **fields: Any) -> tuple[Api, Notifier]:
    """``api`` over a store alerting notifier "ops", with a budget of ``fields`` whose forecast alert goes there."""
    api, ops = alerting(api)
    api.create_budget(BudgetSpec(forecast_alert=ForecastAlert(notifier_ids=("ops",)), **fields))
    return api, ops


def test_the_forecast_alert_fires_once_per_period_when_the_budget_runs_out_before_it_resets(
        api: Api, now: datetime) -> None:
    noon = _noon(now)
    api, ops = _watched(api, scope="identity", target="u", period="daily", amount="2.5")
    _spend_at(api, "u", "1", noon - timedelta(days=1))  # yesterday's period: $1 of $2.50, lasts the day
    assert ops.received(api) == []
    _spend_at(api, "u", "2", noon)  # $2 a day since yesterday's 00:00, $0.50 left: out at 18:00
    _spend_at(api, "u", "0.1", noon)
    (event,) = ops.received(api)
    assert event["type"] == "budget.forecast_exhaustion" and event["scope"] == {"kind": "identity", "target": "u"}
    assert (event["limit"], event["consumed"], event["burn_rate"]) == ("2.50", "2.00", "2.00")
    assert event["exhausts_at"] == (noon + timedelta(hours=6)).isoformat().replace("+00:00", "Z")
    assert event["identity"] == "u"


def test_no_forecast_alert_for_a_budget_that_lasts_until_it_resets(api: Api, now: datetime) -> None:
    noon = _noon(now)
    api, ops = _watched(api, scope="identity", target="u", period="daily", amount="5")
    _spend_at(api, "u", "1", noon - timedelta(days=1))
    _spend_at(api, "u", "2", noon)  # $3 left at $2 a day: past midnight
    assert ops.received(api) == []


def test_no_forecast_alert_unless_the_budget_asks_for_one(api: Api, now: datetime) -> None:
    api, ops = alerting(api)
    api.create_budget(BudgetSpec(scope="identity", target="u", period="one_time", amount="1",
                                 alerts=(Alert(threshold_percent=100, notifier_ids=("ops",)),)))
    _spend_at(api, "u", "0.5", now)
    assert ops.received(api) == []


def test_a_workspace_forecast_alert_fires_once_for_its_balance(api: Api) -> None:
    api, ops = _watched(api, scope="workspace", period="one_time", amount="10")
    spend(api, "a", "1")  # $1 in (at most) its first hour: $24 a day or more, out within the year
    spend(api, "b", "1")
    events = ops.received(api)
    assert [event["type"] for event in events] == ["budget.forecast_exhaustion"]
    assert events[0]["scope"] == {"kind": "workspace", "target": None} and events[0]["exhausts_at"] is not None
    assert "notifier_ids" not in events[0]


# -- credits -----------------------------------------------------------------------------------------
def _balance(api: Api, amount: str = "1") -> str:
    return api.create_budget(BudgetSpec(scope="identity", target="u", period="one_time", amount=amount)).id


@contract.unleased  # a lease admits from headroom it holds: exact headroom is its own test file's
def test_a_top_up_raises_the_limit_that_admission_enforces(api: Api) -> None:
    budget_id = _balance(api, "1")
    spend(api, "u", "1")
    assert not api.admit(AdmissionRequest("u")).allowed
    made = api.top_up(budget_id, Decimal("2.5"), "invoice-1")
    assert (made.budget_id, made.amount, made.idempotency_key, made.new_limit) == \
        (budget_id, Decimal("2.5"), "invoice-1", Decimal("3.5"))
    assert api.retrieve_budget(budget_id).amount == Decimal("3.5")
    assert api.admit(AdmissionRequest("u")).allowed
    blocked = api.admit(AdmissionRequest("u", estimate=2_500_000_001))
    assert not blocked.allowed and blocked.blocked.budget_id == budget_id
    assert blocked.blocked.amount == Decimal("3.5")


def test_a_repeated_idempotency_key_tops_up_once_and_answers_the_same(api: Api) -> None:
    budget_id = _balance(api)
    first = api.top_up(budget_id, "5", "key-1")
    again = api.top_up(budget_id, Decimal("5.000"), "key-1")
    assert again == first and api.retrieve_budget(budget_id).amount == Decimal(6)
    assert api.top_ups(budget_id) == [first]


def test_a_reused_key_with_another_amount_is_refused(api: Api) -> None:
    budget_id = _balance(api)
    first = api.top_up(budget_id, "5", "key-1")
    with pytest.raises(TopUpConflict) as refused:
        api.top_up(budget_id, "6", "key-1")
    assert refused.value.top_up == first and api.retrieve_budget(budget_id).amount == Decimal(6)


def test_the_ledger_lists_every_top_up_oldest_first_exact_to_the_nano_dollar(api: Api, now: datetime) -> None:
    budget_id = _balance(api, "0.000000001")
    api.top_up(budget_id, "0.000000001", "a", now=now)
    api.top_up(budget_id, "999999.999999999", "b", now=now + timedelta(seconds=1))
    api.top_up(budget_id, "0.1", "c", now=now + timedelta(seconds=2))
    ledger = api.top_ups(budget_id)
    assert [(entry.idempotency_key, entry.amount, entry.new_limit, entry.created) for entry in ledger] == [
        ("a", Decimal("0.000000001"), Decimal("0.000000002"), now),
        ("b", Decimal("999999.999999999"), Decimal("1000000.000000001"), now + timedelta(seconds=1)),
        ("c", Decimal("0.1"), Decimal("1000000.100000001"), now + timedelta(seconds=2))]
    assert api.retrieve_budget(budget_id).amount == Decimal("1000000.100000001")


def test_a_limit_past_two_to_the_53_nano_dollars_stays_exact(api: Api) -> None:
    budget_id = _balance(api, "9007199.254740993")  # 2^53 + 1 nano-USD: a double would round it
    made = api.top_up(budget_id, "0.000000002", "k")
    assert made.new_limit == Decimal("9007199.254740995") == api.retrieve_budget(budget_id).amount
    with pytest.raises(InvalidBudget):
        api.top_up(budget_id, "999999999", "too-much")  # the limit would pass $1,000,000,000


def test_only_an_identitys_one_time_budget_with_an_amount_takes_top_ups(api: Api) -> None:
    daily = api.create_budget(BudgetSpec(scope="identity", target="u", period="daily", amount="1"))
    workspace = api.create_budget(BudgetSpec(scope="workspace", period="one_time", amount="1"))
    tokens = api.create_budget(BudgetSpec(scope="identity", target="v", period="one_time", token_limit=5))
    for budget in (daily, workspace, tokens):
        with pytest.raises(InvalidBudget):
            api.top_up(budget.id, "1", "k")
        assert api.top_ups(budget.id) == []
    with pytest.raises(BudgetNotFound):
        api.top_up("bi_01ARZ3NDEKTSV4RRFFQ69G5FAV_one_time", "1", "k")
    balance = _balance(api)
    for amount, key in (("0", "k"), ("-1", "k"), ("1.0000000001", "k"), ("1", ""), ("1", "a\nb")):
        with pytest.raises(InvalidBudget):
            api.top_up(balance, amount, key)
    assert api.top_ups(balance) == []


def test_a_top_up_keeps_the_budgets_alerts_at_their_share_of_the_new_limit(api: Api) -> None:
    api, ops = alerting(api)
    budget_id = api.create_budget(BudgetSpec(scope="identity", target="u", period="one_time", amount="1",
                                             alerts=(Alert(threshold_percent=50, notifier_ids=("ops",)),))).id
    api.top_up(budget_id, "1", "k")  # 50 % is now $1, not $0.50
    spend(api, "u", "0.6")
    assert ops.received(api) == []
    spend(api, "u", "0.4")
    fired = ops.received(api)
    assert [event["threshold_percent"] for event in fired] == [50] and fired[0]["limit"] == "2.00"


def test_deleting_the_budget_deletes_its_ledger(api: Api) -> None:
    budget_id = _balance(api)
    api.top_up(budget_id, "1", "k")
    api.delete_budget(budget_id)
    budget_id = _balance(api)
    assert api.top_ups(budget_id) == []
    assert api.top_up(budget_id, "2", "k").new_limit == Decimal(3)


def test_concurrent_top_ups_add_once_per_key_and_exactly_in_all(store: Any) -> None:
    budget_id = store.create_budget(BudgetSpec(scope="identity", target="u", period="one_time", amount="1")).id
    keys = [f"invoice-{index % 10}" for index in range(40)]  # ten keys, each sent four times at once
    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda key: store.top_up(budget_id, "0.000000001", key), keys))
    assert len({(top_up.idempotency_key, top_up.new_limit) for top_up in made}) == 10  # a repeat answers the same
    ledger = store.top_ups(budget_id)
    assert sorted(entry.idempotency_key for entry in ledger) == sorted(set(keys))
    assert sorted(entry.new_limit for entry in ledger) == [Decimal(1) + Decimal(n) / 10**9 for n in range(1, 11)]
    assert store.retrieve_budget(budget_id).amount == Decimal("1.00000001")
