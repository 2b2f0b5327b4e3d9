"""Plans for budgets and usage reads: set, remove, reset, status, and the 30-day metrics."""

from __future__ import annotations

from datetime import datetime

from ....core.budgets import BudgetChanges, ScopedBudget, ScopeKind, identity_budget_id
from ....core.models import Budget, BudgetStatus, DailyMetrics, Metrics
from ....core.periods import Period, utc_day
from ..steps import Call, Plan
from . import codec
from .scoped import ScopedPlans


class BudgetPlans(ScopedPlans):
    def set_budget(self, identity_id: str, budget: Budget) -> Plan[None]:
        """The identity budget of that period, created or given this amount (a view over scoped budgets)."""
        identity, tag = yield from self.fetch(identity_id)
        now = codec.now_or(None)
        fields = codec.as_map((yield Call("hgetall", (self.keys.budgets(tag),))))
        existing = self.identity_budgets(identity, fields).get(budget.period.value)
        if existing is not None:
            stored = existing.changed(BudgetChanges(amount=budget.amount), now)
        else:
            stored = ScopedBudget(id=identity_budget_id(identity.id, budget.period.value), scope=ScopeKind.IDENTITY,
                                  target=identity.external_id, period=budget.period.value, amount=budget.amount,
                                  created_at=now, updated_at=now)
        yield from self.put_identity_budget(tag, stored)

    def remove_budget(self, identity_id: str, period: Period | str) -> Plan[None]:
        period = Period(period)
        _, tag = yield from self.fetch(identity_id)
        yield from self.drop_identity_budget(tag, period.value, codec.now_or(None))

    def reset_budget(self, identity_id: str, period: Period | str) -> Plan[None]:
        period = Period(period)
        _, tag = yield from self.fetch(identity_id)
        # One DEL of keys in one slot: the period's spend, reservations and usage go together.
        yield Call("delete", tuple(self.identity_counters(tag, period.value, codec.now_or(None))))

    def budget_status(self, identity_id: str, now: datetime | None) -> Plan[list[BudgetStatus]]:
        moment = codec.now_or(now)
        _, tag = yield from self.fetch(identity_id)
        return codec.statuses((yield self._state_eval(tag, moment)), moment, self.tz)

    def metrics(self, identity_id: str, now: datetime | None) -> Plan[Metrics]:
        moment = codec.now_or(now)
        _, tag = yield from self.fetch(identity_id)
        return codec.metrics((yield self._metrics_eval(tag, moment)))

    def daily_metrics(self, identity_id: str, days: int, now: datetime | None) -> Plan[list[DailyMetrics]]:
        moment = codec.now_or(now)
        _, tag = yield from self.fetch(identity_id)
        return codec.daily((yield self._metrics_eval(tag, moment, days)), utc_day(moment))
