"""RedisStore's budget operations (orq's Budgets API, an identity's own budgets), each a plan of :mod:`.plans`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from ...core.budgets import BudgetChanges, BudgetSpec, BudgetUsage, ScopedBudget, ScopedBudgetPage
from ...core.models import Budget, BudgetStatus
from ...core.periods import Period
from ..scoped import Notify, ScopedBudgets
from .plans import Plans
from .steps import Plan

T = TypeVar("T")


class RedisBudgets(ScopedBudgets):
    """The Budgets API over the store's plans; reads that could see buffered usage flush first."""

    _plans: Plans

    def _run(self, plan: Plan[T], *, flush_first: bool = False, runner: Any = None) -> T:
        raise NotImplementedError

    async def _arun(self, plan: Plan[T], *, flush_first: bool = False, deadline: float | None = None) -> T:
        raise NotImplementedError

    @property
    def wants_model(self) -> bool:
        return self._plans.wants_model()

    def configure_budgets(self, *, providers: Mapping[str, str] | None = None, notify: Notify | None = None) -> None:
        super().configure_budgets(providers=providers, notify=notify)
        self._plans.providers = dict(self.providers)
        self._plans.notify = self.notify

    def create_budget(self, spec: BudgetSpec) -> ScopedBudget:
        return self._run(self._plans.create_budget(spec))

    async def acreate_budget(self, spec: BudgetSpec) -> ScopedBudget:
        return await self._arun(self._plans.create_budget(spec))

    def retrieve_budget(self, budget_id: str) -> ScopedBudget:
        return self._run(self._plans.retrieve_budget(budget_id))

    async def aretrieve_budget(self, budget_id: str) -> ScopedBudget:
        return await self._arun(self._plans.retrieve_budget(budget_id))

    def update_budget(self, budget_id: str, changes: BudgetChanges) -> ScopedBudget:
        return self._run(self._plans.update_budget(budget_id, changes))

    async def aupdate_budget(self, budget_id: str, changes: BudgetChanges) -> ScopedBudget:
        return await self._arun(self._plans.update_budget(budget_id, changes))

    def delete_budget(self, budget_id: str) -> None:
        self._run(self._plans.delete_budget(budget_id))

    async def adelete_budget(self, budget_id: str) -> None:
        await self._arun(self._plans.delete_budget(budget_id))

    def list_budgets(self, limit: int = 10, starting_after: str | None = None, ending_before: str | None = None,
                     scope_kinds: Sequence[str] | None = None, target: str | None = None,
                     is_active: bool | None = None, periods: Sequence[str] | None = None,
                     query: str | None = None) -> ScopedBudgetPage:
        plan = self._plans.list_budgets(limit, starting_after, ending_before, scope_kinds, target, is_active,
                                        periods, query)
        return self._run(plan, flush_first=True)

    async def alist_budgets(self, limit: int = 10, starting_after: str | None = None,
                            ending_before: str | None = None, scope_kinds: Sequence[str] | None = None,
                            target: str | None = None, is_active: bool | None = None,
                            periods: Sequence[str] | None = None, query: str | None = None) -> ScopedBudgetPage:
        plan = self._plans.list_budgets(limit, starting_after, ending_before, scope_kinds, target, is_active,
                                        periods, query)
        return await self._arun(plan, flush_first=True)

    def budget_usage(self, budget_id: str) -> BudgetUsage:
        return self._run(self._plans.budget_usage(budget_id), flush_first=True)

    async def abudget_usage(self, budget_id: str) -> BudgetUsage:
        return await self._arun(self._plans.budget_usage(budget_id), flush_first=True)

    def reset_budget_consumption(self, budget_id: str) -> None:
        self._run(self._plans.reset_budget_consumption(budget_id), flush_first=True)

    async def areset_budget_consumption(self, budget_id: str) -> None:
        await self._arun(self._plans.reset_budget_consumption(budget_id), flush_first=True)

    # -- an identity's own budgets (the identity routes) --------------------------------------------
    def set_budget(self, identity_id: str, budget: Budget) -> None:
        self._run(self._plans.set_budget(identity_id, budget))

    async def aset_budget(self, identity_id: str, budget: Budget) -> None:
        await self._arun(self._plans.set_budget(identity_id, budget))

    def remove_budget(self, identity_id: str, period: Period | str) -> None:
        self._run(self._plans.remove_budget(identity_id, period))

    async def aremove_budget(self, identity_id: str, period: Period | str) -> None:
        await self._arun(self._plans.remove_budget(identity_id, period))

    def budget_status(self, identity_id: str, *, now: datetime | None = None) -> list[BudgetStatus]:
        return self._run(self._plans.budget_status(identity_id, now), flush_first=True)

    async def abudget_status(self, identity_id: str, *, now: datetime | None = None) -> list[BudgetStatus]:
        return await self._arun(self._plans.budget_status(identity_id, now), flush_first=True)

    def reset_budget(self, identity_id: str, period: Period | str) -> None:
        self._run(self._plans.reset_budget(identity_id, period), flush_first=True)

    async def areset_budget(self, identity_id: str, period: Period | str) -> None:
        await self._arun(self._plans.reset_budget(identity_id, period), flush_first=True)
