"""MemoryStore's scoped budget operations (orq's Budgets API) and the per-identity view over them."""

from __future__ import annotations

import builtins
import dataclasses
import logging
import threading
from collections.abc import Sequence
from datetime import datetime, tzinfo
from typing import Any

from ...core.budgets import (
    BudgetChanges,
    BudgetExists,
    BudgetNotFound,
    BudgetOrder,
    BudgetPeriod,
    BudgetSpec,
    BudgetUsage,
    ScopedBudget,
    ScopedBudgetPage,
    ScopeKind,
    identity_budget_id,
)
from ...core.check import BudgetCheck, CheckRequest, check_matching, checked
from ...core.credits import TopUp, TopUpConflict, check_top_up, top_up_amount, top_up_key
from ...core.ids import new_ulid
from ...core.models import Budget, IdentityInput
from ...core.money import Money, from_nanos, to_nanos
from ...core.periods import UTC
from ...core.scoped import budget_forecast
from ..base import check_limit
from ..scoped import ScopedBudgets, page_of
from .budgets import Scoped, uses_identity_spend
from .ledger import Account
from .records import Records

logger = logging.getLogger("identity_middleware.budgets")


def _now() -> datetime:
    return datetime.now(UTC)


class MemoryBudgets(ScopedBudgets):
    """Scoped budgets under the memory store's lock; identity budgets mirror into the identity's ledger."""

    tz: tzinfo
    _lock: threading.RLock
    _records: Records
    _accounts: dict[str, Account]
    _scoped: Scoped

    def _insert(self, identity: IdentityInput, now: datetime) -> Any:
        raise NotImplementedError

    # -- the identity ledger's mirror ------------------------------------------------------------
    def _mirror(self, budget: ScopedBudget, *, removed: bool = False) -> None:
        """Keep the identity's ledger (which holds reservations and shows ``budget_status``) in step."""
        calendar = budget.period.calendar
        if budget.scope is not ScopeKind.IDENTITY or calendar is None or budget.target is None:
            return
        ulid = self._records.by_external.get(budget.target)
        if ulid is None:
            return
        budgets = self._accounts[ulid].budgets
        if removed or budget.amount is None:
            budgets.pop(calendar, None)
        else:
            budgets[calendar] = to_nanos(budget.amount)

    def _put_identity_budget(self, external_id: str, budget: Budget, now: datetime) -> None:
        """``set_budget``: create or update the identity's budget for that period."""
        ulid = self._records.ulid_of(external_id)
        external_id = self._records.by_ulid[ulid].external_id
        budget_id = identity_budget_id(ulid, budget.period.value)
        existing = self._scoped.defs.get(budget_id)
        if existing is None:
            stored = ScopedBudget(id=budget_id, scope=ScopeKind.IDENTITY, target=external_id,
                                  period=BudgetPeriod(budget.period.value), amount=budget.amount,
                                  created_at=now, updated_at=now)
        else:
            stored = existing.changed(BudgetChanges(amount=budget.amount), now)
        self._scoped.add(stored)
        self._mirror(stored)

    def _drop_identity_budgets(self, external_id: str) -> None:
        for budget in self._scoped.of_identity(external_id):
            self._scoped.remove(budget.id)

    def _identity_budget(self, external_id: str, period: str) -> ScopedBudget | None:
        ulid = self._records.ulid_of(external_id)
        return self._scoped.defs.get(identity_budget_id(ulid, period))

    def _emit(self, events: builtins.list[dict[str, Any]]) -> None:
        if events and self.alerts is not None:
            try:
                self.alerts(events)
            except Exception:  # a notifier never breaks a settlement
                logger.exception("budget alert delivery failed")

    # -- the Budgets API -------------------------------------------------------------------------
    def create_budget(self, spec: BudgetSpec) -> ScopedBudget:
        now = _now()
        with self._lock:
            if spec.scope is ScopeKind.IDENTITY:
                assert spec.target is not None
                ulid = self._records.by_external.get(spec.target)
                if ulid is None:
                    ulid = self._insert(IdentityInput(id=spec.target), now).id
                budget_id = identity_budget_id(ulid, spec.period)
                if budget_id in self._scoped.defs:  # one per (identity, period), as on every scope
                    raise BudgetExists(budget_id)
            else:
                budget_id = f"bg_{new_ulid()}"
            budget = ScopedBudget(**spec.model_dump(), id=budget_id, created_at=now, updated_at=now)
            self._scoped.add(budget)
            self._mirror(budget)
            return budget

    async def acreate_budget(self, spec: BudgetSpec) -> ScopedBudget:
        return self.create_budget(spec)

    def retrieve_budget(self, budget_id: str) -> ScopedBudget:
        with self._lock:
            return self._scoped.get(budget_id)

    async def aretrieve_budget(self, budget_id: str) -> ScopedBudget:
        return self.retrieve_budget(budget_id)

    def update_budget(self, budget_id: str, changes: BudgetChanges) -> ScopedBudget:
        with self._lock:
            budget = self._scoped.get(budget_id).changed(changes, _now())
            self._scoped.add(budget)
            self._mirror(budget)
            return budget

    async def aupdate_budget(self, budget_id: str, changes: BudgetChanges) -> ScopedBudget:
        return self.update_budget(budget_id, changes)

    def delete_budget(self, budget_id: str) -> None:
        with self._lock:
            self._mirror(self._scoped.remove(budget_id), removed=True)

    async def adelete_budget(self, budget_id: str) -> None:
        self.delete_budget(budget_id)

    def list_budgets(self, limit: int = 10, starting_after: str | None = None, ending_before: str | None = None,
                     scope_kinds: Sequence[str] | None = None, target: str | None = None,
                     is_active: bool | None = None, periods: Sequence[str] | None = None,
                     query: str | None = None, *, order: BudgetOrder | str = BudgetOrder.ID) -> ScopedBudgetPage:
        check_limit(limit)
        with self._lock:
            page, more = page_of(list(self._scoped.defs.values()), limit, starting_after, ending_before,
                                 scope_kinds, target, is_active, periods, query, BudgetOrder(order))
            return ScopedBudgetPage([(budget, self._usage(budget)) for budget in page], more)

    async def alist_budgets(self, limit: int = 10, starting_after: str | None = None,
                            ending_before: str | None = None, scope_kinds: Sequence[str] | None = None,
                            target: str | None = None, is_active: bool | None = None,
                            periods: Sequence[str] | None = None, query: str | None = None, *,
                            order: BudgetOrder | str = BudgetOrder.ID) -> ScopedBudgetPage:
        return self.list_budgets(limit, starting_after, ending_before, scope_kinds, target, is_active, periods, query,
                                 order=order)

    def _account_of(self, budget: ScopedBudget) -> Account | None:
        if budget.scope is not ScopeKind.IDENTITY or budget.target is None:
            return None
        ulid = self._records.by_external.get(budget.target)
        return self._accounts.get(ulid) if ulid is not None else None

    def _usage(self, budget: ScopedBudget, now: datetime | None = None) -> BudgetUsage:
        now = _now() if now is None else now
        account = self._account_of(budget)
        cost, tokens = self._scoped.consumed(budget, account, now, self.tz)
        recent = account.recent_cost(now) if account is not None else 0
        return BudgetUsage(from_nanos(cost), tokens, self._scoped.requests(budget.id, now),
                           budget_forecast(budget, cost, recent, now, self.tz))

    def budget_usage(self, budget_id: str, *, now: datetime | None = None) -> BudgetUsage:
        with self._lock:
            return self._usage(self._scoped.get(budget_id), now)

    async def abudget_usage(self, budget_id: str, *, now: datetime | None = None) -> BudgetUsage:
        return self.budget_usage(budget_id, now=now)

    def check_request(self, request: CheckRequest) -> BudgetCheck:
        now = _now()
        with self._lock:
            ulid = self._records.by_external.get(request.identity) if request.identity else None
            account = self._accounts.get(ulid) if ulid is not None else None
            budgets = [budget for budget in self._scoped.of_identity(request.identity) if budget.live(now)] \
                if ulid is not None and request.identity else []
            if ulid is not None and request.metadata is None:
                request = dataclasses.replace(request, metadata=self._records.by_ulid[ulid].metadata)
            budgets += check_matching([self._scoped.defs[budget_id] for budget_id in self._scoped.global_ids], request,
                                      self._scoped.match_index(), self.providers, now)
            return checked(self._scoped.states(budgets, account, now, self.tz), request.estimate, now)

    async def acheck_request(self, request: CheckRequest) -> BudgetCheck:
        return self.check_request(request)

    def reset_budget_consumption(self, budget_id: str) -> None:
        with self._lock:
            budget = self._scoped.get(budget_id)
            self._scoped.reset(budget.id)
            account = self._account_of(budget)
            if uses_identity_spend(budget) and account is not None and budget.period.calendar is not None:
                account.reset(budget.period.calendar)
            self._scoped.fired = {marker for marker in self._scoped.fired if marker[0] != budget.id}

    async def areset_budget_consumption(self, budget_id: str) -> None:
        self.reset_budget_consumption(budget_id)

    # -- credits ---------------------------------------------------------------------------------
    def top_up(self, budget_id: str, amount: Money, idempotency_key: str, *, now: datetime | None = None) -> TopUp:
        added, key = top_up_amount(amount), top_up_key(idempotency_key)
        moment = _now() if now is None else now
        with self._lock:
            budget = self._scoped.get(budget_id)  # either id form of an identity budget: the ledger is by its id
            ledger = self._scoped.top_ups.get(budget.id, {})
            made = ledger.get(key)
            if made is not None:
                if made.amount != added:
                    raise TopUpConflict(made)
                return made
            limit = check_top_up(budget, added)
            stored = budget.changed(BudgetChanges(amount=limit), moment)
            self._scoped.add(stored)
            self._mirror(stored)
            made = TopUp(budget_id=budget.id, amount=added, idempotency_key=key, created=moment, new_limit=limit)
            self._scoped.top_ups.setdefault(budget.id, {})[key] = made
            return made

    async def atop_up(self, budget_id: str, amount: Money, idempotency_key: str, *,
                      now: datetime | None = None) -> TopUp:
        return self.top_up(budget_id, amount, idempotency_key, now=now)

    def top_ups(self, budget_id: str) -> builtins.list[TopUp]:
        with self._lock:
            return list(self._scoped.top_ups.get(self._scoped.get(budget_id).id, {}).values())

    async def atop_ups(self, budget_id: str) -> builtins.list[TopUp]:
        return self.top_ups(budget_id)


__all__ = ["BudgetNotFound", "MemoryBudgets"]
