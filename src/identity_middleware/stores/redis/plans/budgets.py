"""Plans of budgets and usage reads: orq's Budgets API (every scope) and an identity's own budgets.

An identity budget's definition is the field ``def:<period>`` of the identity's budgets hash, beside
the ``<period>`` field the admission script enforces (``<nanos>`` or ``<nanos>:<expiry ms>``, present
only while the budget is active and has an amount), so one script still admits against all of an
identity's budgets atomically. A model, provider or workspace budget's definition is in the
registry (:mod:`.registry`), its counters under its own hash tag.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from ....core.budgets import (
    BudgetChanges,
    BudgetExists,
    BudgetNotFound,
    BudgetOrder,
    BudgetSpec,
    BudgetUsage,
    ScopedBudget,
    ScopedBudgetPage,
    ScopeKind,
    identity_budget_id,
    parse_identity_budget_id,
)
from ....core.errors import IdentityExists, IdentityNotFound
from ....core.ids import new_ulid
from ....core.metrics import HourlyMetrics, UsageOver
from ....core.models import Budget, BudgetStatus, DailyMetrics, Identity, Metrics
from ....core.money import from_nanos
from ....core.periods import Period, period_key, utc_day
from ....core.scoped import budget_forecast
from ...base import METRIC_DAYS, check_limit
from ...scoped import page_of
from ..keys import ONE_TIME, identity_tag
from ..steps import Batch, Call, Eval, Plan
from . import codec
from .records import Records
from .registry import Registry

_PERIOD_NAMES = {period.value for period in Period}


class BudgetPlans:
    """Budgets of every scope and the usage reads, over the records and the registry of global budgets."""

    def __init__(self, records: Records, registry: Registry) -> None:
        self.records = records
        self.registry = registry
        self.keys = records.keys
        self.tz = records.tz

    # -- the Budgets API ----------------------------------------------------------------------------

    def create_budget(self, spec: BudgetSpec) -> Plan[ScopedBudget]:
        now = codec.now_or(None)
        if spec.scope is ScopeKind.IDENTITY:
            assert spec.target is not None
            identity, tag = yield from self._identity(spec.target)
            budget = ScopedBudget(**spec.model_dump(), id=identity_budget_id(identity.id, spec.period),
                                  created_at=now, updated_at=now)
            fields = codec.as_map((yield Call("hgetall", (self.keys.budgets(tag),))))
            if spec.period.value in self.identity_budgets(identity, fields):
                raise BudgetExists(budget.id)
            if not (yield Call("hsetnx", (self.keys.budgets(tag), f"def:{spec.period.value}", budget.to_record()))):
                raise BudgetExists(budget.id)
            yield from self.put_identity_budget(tag, budget)
            return budget
        budget = ScopedBudget(**spec.model_dump(), id=f"bg_{new_ulid()}", created_at=now, updated_at=now)
        index = json.dumps(spec.key)
        if not (yield Call("hsetnx", (self.keys.budget_index, index, budget.id))):
            other = yield Call("hget", (self.keys.budget_index, index))
            if other is not None and (yield Call("hexists", (self.keys.budget_defs, other))):
                raise BudgetExists(other)
            yield Call("hset", (self.keys.budget_index, index, budget.id))  # an entry a crash left behind
        yield Call("hset", (self.keys.budget_defs, budget.id, budget.to_record()))
        self.registry.forget()
        return budget

    def retrieve_budget(self, budget_id: str) -> Plan[ScopedBudget]:
        return (yield from self.locate(budget_id))[0]

    def update_budget(self, budget_id: str, changes: BudgetChanges) -> Plan[ScopedBudget]:
        budget, tag = yield from self.locate(budget_id)
        budget = budget.changed(changes, codec.now_or(None))
        yield from self.save(budget, tag)
        return budget

    def delete_budget(self, budget_id: str) -> Plan[None]:
        budget, tag = yield from self.locate(budget_id)
        yield from self.remove(budget, tag)

    def list_budgets(self, limit: int, starting_after: str | None, ending_before: str | None,
                     scope_kinds: Sequence[str] | None, target: str | None, is_active: bool | None,
                     periods: Sequence[str] | None, query: str | None,
                     order: BudgetOrder = BudgetOrder.ID) -> Plan[ScopedBudgetPage]:
        check_limit(limit)
        with_identities = not scope_kinds or ScopeKind.IDENTITY.value in scope_kinds
        budgets = yield from self.all_budgets(target, with_identities)
        page, more = page_of(budgets, limit, starting_after, ending_before, scope_kinds, target, is_active,
                             periods, query, order)
        usages = yield from self._usages(page, codec.now_or(None))
        return ScopedBudgetPage(list(zip(page, usages, strict=True)), more)

    def budget_usage(self, budget_id: str, now: datetime | None = None) -> Plan[BudgetUsage]:
        budget, _ = yield from self.locate(budget_id)
        return (yield from self._usages([budget], codec.now_or(now)))[0]

    def reset_budget_consumption(self, budget_id: str) -> Plan[None]:
        budget, tag = yield from self.locate(budget_id)
        now = codec.now_or(None)
        if tag is None:
            yield self.registry.scoped_eval(budget, "reset", now, [])
        else:
            yield Call("delete", tuple(self.identity_counters(tag, budget.period.value, now)))

    # -- an identity's own budgets, and its usage -----------------------------------------------------

    def set_budget(self, identity_id: str, budget: Budget) -> Plan[None]:
        """The identity budget of that period, created or given this amount (a view over scoped budgets)."""
        identity, tag = yield from self.records.fetch(identity_id)
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
        _, tag = yield from self.records.fetch(identity_id)
        yield from self.drop_identity_budget(tag, period.value, codec.now_or(None))

    def reset_budget(self, identity_id: str, period: Period | str) -> Plan[None]:
        period = Period(period)
        _, tag = yield from self.records.fetch(identity_id)
        # One DEL of keys in one slot: the period's spend, reservations and usage go together.
        yield Call("delete", tuple(self.identity_counters(tag, period.value, codec.now_or(None))))

    def budget_status(self, identity_id: str, now: datetime | None) -> Plan[list[BudgetStatus]]:
        moment = codec.now_or(now)
        _, tag = yield from self.records.fetch(identity_id)
        state, recent = yield Batch([self.records.state_eval(tag, moment), self.records.recent_eval(tag, moment)])
        return codec.statuses(state, moment, self.tz, codec.recent_cost(recent))

    def metrics(self, identity_id: str, now: datetime | None, days: int = METRIC_DAYS) -> Plan[Metrics]:
        moment = codec.now_or(now)
        _, tag = yield from self.records.fetch(identity_id)
        return codec.metrics((yield self.records.metrics_eval(tag, moment, days)))

    def daily_metrics(self, identity_id: str, days: int, now: datetime | None) -> Plan[list[DailyMetrics]]:
        moment = codec.now_or(now)
        _, tag = yield from self.records.fetch(identity_id)
        return codec.daily((yield self.records.metrics_eval(tag, moment, days)), utc_day(moment))

    def recent_hours(self, identity_id: str, now: datetime | None, hours: int) -> Plan[Metrics]:
        moment = codec.now_or(now)
        _, tag = yield from self.records.fetch(identity_id)
        return codec.metrics((yield self.records.hourly_eval(tag, moment, hours)))

    def usage_over(self, identity_id: str, by_hour: bool, span: int, now: datetime | None) -> Plan[UsageOver]:
        """The buckets and their sums from one read of the same hashes."""
        moment = codec.now_or(now)
        _, tag = yield from self.records.fetch(identity_id)
        if by_hour:
            reply = yield self.records.hourly_eval(tag, moment, span)
            return UsageOver(codec.hourly(reply, moment), codec.metrics(reply))
        reply = yield self.records.metrics_eval(tag, moment, span)
        return UsageOver(codec.daily(reply, utc_day(moment)), codec.metrics(reply))

    def hourly_metrics(self, identity_id: str, hours: int, now: datetime | None) -> Plan[list[HourlyMetrics]]:
        moment = codec.now_or(now)
        _, tag = yield from self.records.fetch(identity_id)
        return codec.hourly((yield self.records.hourly_eval(tag, moment, hours)), moment)

    # -- shared steps -------------------------------------------------------------------------------

    def identity_budgets(self, identity: Identity, fields: dict[str, str]) -> dict[str, ScopedBudget]:
        """An identity's budgets by period name; a bare ``<period>`` field (a budget set before
        scoped budgets, or a default budget) reads as an identity budget with just that amount."""
        found = {}
        for name, value in fields.items():
            if name.startswith("def:"):
                budget = ScopedBudget.from_record(value)
                found[budget.period.value] = budget
        for name, value in fields.items():
            if name in _PERIOD_NAMES and name not in found:
                found[name] = ScopedBudget(
                    id=identity_budget_id(identity.id, name), scope=ScopeKind.IDENTITY, target=identity.external_id,
                    period=name, amount=from_nanos(int(value.split(":")[0])), created_at=identity.created,
                    updated_at=identity.created)
        return found

    def put_identity_budget(self, tag: str, budget: ScopedBudget) -> Plan[None]:
        field = codec.enforced_field(budget)
        key = self.keys.budgets(tag)
        period = budget.period.value
        fields = {f"def:{period}": budget.to_record(), f"l:{period}": codec.limits_field(budget)}
        steps: list[Call | Eval] = [Call("hset", (key, None, None, fields))]
        if budget.period.calendar is not None:
            steps.append(Call("hset", (key, budget.period.value, field)) if field is not None
                         else Call("hdel", (key, budget.period.value)))
        yield Batch(steps)

    def _identity(self, external_id: str) -> Plan[tuple[Identity, str]]:
        try:
            return (yield from self.records.fetch(external_id))
        except IdentityNotFound:
            reply = yield self.records.write("create", external_id, {}, codec.now_or(None))
            if reply[0] == 2:
                raise IdentityExists(external_id) from None
            tag = identity_tag(external_id)
            return (yield from self.records.indexed(reply, tag)), tag

    def locate(self, budget_id: str) -> Plan[tuple[ScopedBudget, str | None]]:
        """The budget and, for an identity budget, its identity's hash tag."""
        parsed = parse_identity_budget_id(budget_id)
        if parsed is None:
            text = yield Call("hget", (self.keys.budget_defs, budget_id))
            if text is None:
                raise BudgetNotFound(budget_id)
            return ScopedBudget.from_record(text), None
        ulid, period = parsed
        tags = yield from self.records.tags_of([ulid])
        if ulid not in tags:
            raise BudgetNotFound(budget_id)
        tag = tags[ulid]
        record, fields = yield Batch([Call("hgetall", (self.keys.record(tag),)),
                                      Call("hgetall", (self.keys.budgets(tag),))])
        record = codec.as_map(record)
        if record.get("u") != ulid:
            raise BudgetNotFound(budget_id)
        budget = self.identity_budgets(codec.identity(record), codec.as_map(fields)).get(period.value)
        if budget is None:
            raise BudgetNotFound(budget_id)
        return budget, tag

    def save(self, budget: ScopedBudget, tag: str | None) -> Plan[None]:
        if tag is not None:
            yield from self.put_identity_budget(tag, budget)
        else:
            yield Call("hset", (self.keys.budget_defs, budget.id, budget.to_record()))
            self.registry.forget()

    def identity_counters(self, tag: str, period: str, now: datetime) -> list[str]:
        """What an identity budget has consumed this period: the identity's spend (a calendar
        period), its reservations, and its own usage hash (tokens, one-time cost, alert markers)."""
        if period == ONE_TIME:
            return [self.keys.usage(tag, ONE_TIME), self.keys.reservations(tag, ONE_TIME)]
        key = period_key(Period(period), now, self.tz)
        return [self.keys.spend(tag, key), self.keys.reservations(tag, period), self.keys.usage(tag, key)]

    def drop_identity_budget(self, tag: str, period: str, now: datetime) -> Plan[None]:
        """Remove an identity budget and the usage only it kept (its tokens, a one-time budget's cost
        and top-ups); the identity's spend stays (the metrics and other budgets count it)."""
        counters = self.identity_counters(tag, period, now)
        own = [*counters, self.keys.top_ups(tag)] if period == ONE_TIME else counters[2:]
        # A DEL per key: redis-py's Cluster pipeline refuses a DEL of several keys, even in one slot.
        yield Batch([Call("hdel", (self.keys.budgets(tag), f"def:{period}", f"l:{period}", period)),
                     *(Call("delete", (key,)) for key in own)])

    def remove(self, budget: ScopedBudget, tag: str | None) -> Plan[None]:
        if tag is not None:
            yield from self.drop_identity_budget(tag, budget.period.value, codec.now_or(None))
            return
        yield Batch([Call("hdel", (self.keys.budget_defs, budget.id)),
                     Call("hdel", (self.keys.budget_index, json.dumps(budget.key)))])
        self.registry.forget()

    def all_budgets(self, identity_target: str | None, with_identities: bool) -> Plan[list[ScopedBudget]]:
        """Every budget (identity ones of ``identity_target`` only, when given)."""
        budgets = list((yield from self.registry.global_defs(fresh=True)).values())
        if not with_identities:
            return budgets
        if identity_target is not None:
            try:
                identity, tag = yield from self.records.fetch(identity_target)
            except IdentityNotFound:
                return budgets
            fields = codec.as_map((yield Call("hgetall", (self.keys.budgets(tag),))))
            return budgets + list(self.identity_budgets(identity, fields).values())
        members = yield Call("zrange", (self.keys.identities, 0, -1))
        tags = [member.partition(":")[2] for member in members]
        steps: list[Call | Eval] = []
        for tag in tags:
            steps += [Call("hgetall", (self.keys.record(tag),)), Call("hgetall", (self.keys.budgets(tag),))]
        replies = iter((yield Batch(steps))) if steps else iter(())
        for record, fields in zip(replies, replies, strict=True):
            record, fields = codec.as_map(record), codec.as_map(fields)
            if fields and record.get("u"):
                budgets += self.identity_budgets(codec.identity(record), fields).values()
        return budgets

    def _usage_step(self, budget: ScopedBudget, now: datetime) -> Eval | None:
        if budget.scope is ScopeKind.IDENTITY:
            return None
        return self.registry.scoped_eval(budget, "state", now, [codec.ms(now)])

    def _usages(self, budgets: Sequence[ScopedBudget], now: datetime) -> Plan[list[BudgetUsage]]:
        """Each budget's usage and forecast: an identity budget's state and its identity's recent
        spend (two script calls), a global budget's state (one)."""
        steps: list[Call | Eval] = []
        for budget in budgets:
            step: Call | Eval | None = self._usage_step(budget, now)
            if step is None:
                tags = yield from self.records.tags_of([budget.id[3:].partition("_")[0]])
                tag = next(iter(tags.values()), None)
                if tag is None:
                    steps += [Call("exists", ("-",)), Call("exists", ("-",))]
                else:
                    steps += [self.records.state_eval(tag, now), self.records.recent_eval(tag, now)]
            else:
                steps.append(step)
        replies = iter((yield Batch(steps))) if steps else iter(())
        usages = []
        for budget in budgets:
            reply = next(replies)
            if budget.scope is ScopeKind.IDENTITY:
                recent = next(replies)
                rows = [row for row in codec.rows(reply if isinstance(reply, list) else [])
                        if row.period == budget.period.value]
                spent, tokens, requests = (rows[0].spent, rows[0].tokens, rows[0].requests) if rows else (0, 0, 0)
                recent_cost = codec.recent_cost(recent) if isinstance(recent, list) else 0
            else:
                spent, tokens, requests, recent_cost = int(reply[0]), int(reply[2]), int(reply[3]), 0
            usages.append(BudgetUsage(from_nanos(spent), tokens, requests,
                                      budget_forecast(budget, spent, recent_cost, now, self.tz)))
        return usages
