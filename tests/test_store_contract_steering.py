"""The store contract for steering (issue 26), on every store configuration, sync and async: the
budgets' figures an admission reports, the smaller estimate it falls back to, session spend."""

from __future__ import annotations

from decimal import Decimal

import test_store_contract as contract
from identity_middleware.core.admission import AdmissionRequest
from identity_middleware.core.budgets import BudgetSpec
from identity_middleware.core.models import Budget, IdentityInput
from identity_middleware.core.periods import Period
from test_store_contract import Api, admit, unleased

# The contract's fixtures: every store configuration, sync and async.
store_kind, clock, stores, store, api = (contract.store_kind, contract.clock, contract.stores, contract.store,
                                        contract.api)

DOLLAR = 1_000_000_000


def _budgets(api: Api, spent: str) -> None:
    api.create(IdentityInput(id="a"))
    api.set_budget("a", Budget(period=Period.DAILY, amount=Decimal("1")))
    api.set_budget("a", Budget(period=Period.MONTHLY, amount=Decimal("10")))
    if Decimal(spent):
        api.record("a", cost=Decimal(spent))


@unleased
def test_an_admission_reports_each_budgets_spend_and_reservations_when_asked(api: Api) -> None:
    _budgets(api, "0.5")
    held = admit(api, "a", estimate=DOLLAR // 10)
    assert held.consumed == ()  # not asked: nothing parsed
    found = {each.key: each for each in admit(api, "a", consumed=True).consumed}
    assert {key: (each.used, each.amount) for key, each in found.items()} == {
        "daily": (600_000_000, DOLLAR), "monthly": (600_000_000, 10 * DOLLAR)}
    assert found["daily"].resets_at is not None and found["daily"].period_start is not None
    assert found["daily"].resets_at < found["monthly"].resets_at  # type: ignore[operator]


def test_an_identity_without_budgets_reports_none(api: Api) -> None:
    assert admit(api, "a", consumed=True).consumed == ()


def test_an_estimate_that_does_not_fit_falls_back_to_the_first_smaller_one_that_does(api: Api) -> None:
    _budgets(api, "0.95")
    admission = admit(api, "a", estimate=DOLLAR // 10, fallbacks=(80_000_000, 40_000_000, 10_000_000),
                      consumed=True)
    assert admission.allowed and admission.fallback == 2
    assert admission.reservation is not None and admission.reservation.amount == 40_000_000
    fits = admit(api, "a", estimate=DOLLAR // 100, fallbacks=(1_000,), consumed=True)
    assert fits.allowed and fits.fallback == 0 and fits.reservation.amount == DOLLAR // 100


@unleased
def test_the_fallback_estimate_is_what_is_held(api: Api) -> None:
    _budgets(api, "0.5")
    assert admit(api, "a", estimate=DOLLAR, fallbacks=(DOLLAR // 4,), consumed=True).fallback == 1
    assert api.budget_status("a")[0].reserved == Decimal("0.25")


def test_when_no_fallback_fits_the_request_is_refused_and_counted(api: Api) -> None:
    _budgets(api, "0.99")
    admission = admit(api, "a", estimate=DOLLAR // 10, fallbacks=(50_000_000, 20_000_000), consumed=True)
    assert not admission.allowed and admission.blocked is not None
    assert admission.blocked.period is Period.DAILY
    assert api.metrics("a").total_errors == 1


def test_a_spent_budget_refuses_whatever_the_fallbacks(api: Api) -> None:
    _budgets(api, "1")
    assert not admit(api, "a", estimate=1, fallbacks=(0,), consumed=True).allowed


def test_global_budgets_are_reported_by_id_and_checked_at_the_estimate_admitted(api: Api) -> None:
    budget = api.create_budget(BudgetSpec(scope="workspace", period="monthly", amount="1"))
    api.create(IdentityInput(id="a"))
    api.record("a", cost=Decimal("0.25"))
    api.flush()
    found = admit(api, "a", consumed=True).consumed
    assert [(each.key, each.used, each.amount) for each in found] == [(budget.id, DOLLAR // 4, DOLLAR)]
    # The fallback is chosen by the identity's own budgets (none here): the global one refuses the estimate.
    assert not admit(api, "a", estimate=DOLLAR, fallbacks=(DOLLAR // 10,), consumed=True).allowed


def test_session_spend_adds_up_per_identity_and_session(api: Api) -> None:
    assert api.session_cost("a", "s1") == 0
    assert api.add_session_cost("a", "s1", 285_000, 60) == 285_000
    assert api.add_session_cost("a", "s1", 15_000, 60) == 300_000
    assert api.session_cost("a", "s1") == 300_000
    assert api.session_cost("a", "s2") == 0 and api.session_cost("b", "s1") == 0


def test_a_plain_request_is_unchanged_by_the_new_fields(api: Api) -> None:
    _budgets(api, "0")
    admission = api.admit(AdmissionRequest("a", estimate=DOLLAR // 10))
    assert admission.allowed and admission.fallback == 0 and admission.consumed == ()


def test_fallbacks_apply_without_the_figures(api: Api) -> None:
    _budgets(api, "0.95")
    admission = admit(api, "a", estimate=DOLLAR // 10, fallbacks=(10,))
    assert admission.allowed and admission.fallback == 1 and admission.consumed == ()


def test_a_request_asking_for_the_figures_is_admitted_by_the_store_even_under_a_lease(api: Api) -> None:
    _budgets(api, "0.5")
    admit(api, "a", estimate=1_000)  # under leasing: takes a lease, then admits from it
    found = {each.key: each for each in admit(api, "a", consumed=True).consumed}
    assert set(found) == {"daily", "monthly"} and found["daily"].used >= 500_000_000
