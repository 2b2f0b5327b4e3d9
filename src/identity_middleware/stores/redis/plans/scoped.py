"""Plans for scoped budgets on Redis: identity budgets in the identity's slot, the others each in their own.

An identity budget's definition is the field ``def:<period>`` of the identity's budgets hash, beside
the ``<period>`` field the admission script enforces (``<nanos>`` or ``<nanos>:<expiry ms>``, present
only while the budget is active and has an amount), so one script still admits against all of an
identity's budgets atomically. A model, provider or workspace budget's definition is in the registry
(``P:{budgets}:defs``, cached here for :data:`REFRESH` seconds) and its counters live under its own
hash tag (``P:{<budget id>}:...``): checked and reserved atomically per budget by ``scoped.lua``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from ....core.budgets import (
    BudgetExists,
    BudgetNotFound,
    BudgetSpec,
    Dimension,
    ScopedBudget,
    ScopeKind,
    budget_bounds,
    identity_budget_id,
    parse_identity_budget_id,
)
from ....core.errors import IdentityExists, IdentityNotFound
from ....core.ids import new_ulid
from ....core.models import Identity
from ....core.money import from_nanos, to_nanos
from ....core.periods import Period, period_key
from ..keys import ONE_TIME, identity_tag
from ..scripts import SCOPED
from ..steps import Batch, Call, Eval, Plan
from . import codec
from .base import PlanBase

REFRESH = 1.0  # seconds a process trusts its copy of the model/provider/workspace budgets
BUCKET_MS = 10_000  # usage.requests and requests_per_minute count admissions in 10 s buckets
_PERIOD_NAMES = {period.value for period in Period}

Notify = Callable[[list[dict[str, Any]]], None]


def alert_thresholds(budget: ScopedBudget) -> list[tuple[int, str, int]]:
    """Each alert as (percent, ``c`` or ``t``, threshold): the threshold is ``ceil(percent * limit /
    100)`` in nano-USD or tokens, computed here in integers, so that the scripts compare integers
    below 2^53 only (exact in Lua's doubles). Alerts on a dimension without a limit are left out."""
    amount = None if budget.amount is None else to_nanos(budget.amount)
    found: dict[tuple[int, str, int], None] = {}
    for alert in budget.alerts:
        limit = amount if alert.dimension is Dimension.COST else budget.token_limit
        if limit:
            found[alert.threshold_percent, alert.dimension.value[0], -(-alert.threshold_percent * limit // 100)] = None
    return list(found)


def limits_field(budget: ScopedBudget) -> str:
    """The ``l:<period>`` field lib.lua enforces and counts by: ``"<live>:<expiry ms>:<amount nanos>:
    <token limit>:<requests per minute>:<alerts>"``, each alert ``<percent><c|t><threshold>``."""
    alerts = ",".join(f"{percent}{dim}{threshold}" for percent, dim, threshold in alert_thresholds(budget))
    parts = [int(budget.is_active), "" if budget.expires_at is None else codec.ms(budget.expires_at),
             "" if budget.amount is None else to_nanos(budget.amount), budget.token_limit or "",
             budget.requests_per_minute or "", alerts]
    return ":".join(str(part) for part in parts)


def enforced_field(budget: ScopedBudget) -> str | None:
    """The value of the ``<period>`` field the admission script enforces, or None (not enforced)."""
    if budget.period.calendar is None or budget.amount is None or not budget.is_active:
        return None
    nanos = to_nanos(budget.amount)
    return str(nanos) if budget.expires_at is None else f"{nanos}:{codec.ms(budget.expires_at)}"


class ScopedPlans(PlanBase):
    #: Whether the request path consults the registry of model, provider and workspace budgets
    #: (RedisStore's ``global_budgets``); off, admission and settlement never read it.
    global_budgets = False
    _defs_cache: tuple[float, dict[str, ScopedBudget]] | None = None

    # -- the registry ----------------------------------------------------------------------------
    def fresh_defs(self) -> dict[str, ScopedBudget] | None:
        """The cached registry while it is fresh, else None."""
        cached = self._defs_cache
        if cached is not None and time.monotonic() - cached[0] < REFRESH:
            return cached[1]
        return None

    def may_have_globals(self) -> bool:
        """Whether model, provider or workspace budgets may apply (unknown until the registry is read)."""
        if not self.global_budgets:
            return False
        cached = self._defs_cache
        return cached is None or bool(cached[1])

    def wants_model(self) -> bool:
        """Whether model or provider budgets may match a request (unknown until the registry is read)."""
        if not self.global_budgets:
            return False
        cached = self._defs_cache
        return cached is None or any(b.scope in (ScopeKind.MODEL, ScopeKind.PROVIDER) for b in cached[1].values())

    def defs_call(self) -> Call:
        return Call("hgetall", (self.keys.budget_defs,))

    def keep_defs(self, reply: object) -> dict[str, ScopedBudget]:
        defs = {budget_id: ScopedBudget.from_record(text) for budget_id, text in codec.as_map(reply).items()}
        self._defs_cache = (time.monotonic(), defs)
        return defs

    def global_defs(self, *, fresh: bool = False) -> Plan[dict[str, ScopedBudget]]:
        cached = None if fresh else self.fresh_defs()
        if cached is not None:
            return cached
        return self.keep_defs((yield self.defs_call()))

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
        field = enforced_field(budget)
        key = self.keys.budgets(tag)
        fields = {f"def:{budget.period.value}": budget.to_record(), f"l:{budget.period.value}": limits_field(budget)}
        steps: list[Call | Eval] = [Call("hset", (key, None, None, fields))]
        if budget.period.calendar is not None:
            steps.append(Call("hset", (key, budget.period.value, field)) if field is not None
                         else Call("hdel", (key, budget.period.value)))
        yield Batch(steps)

    def _identity(self, external_id: str) -> Plan[tuple[Identity, str]]:
        try:
            return (yield from self.fetch(external_id))
        except IdentityNotFound:
            reply = yield self._write("create", external_id, {}, codec.now_or(None))
            if reply[0] == 2:
                raise IdentityExists(external_id) from None
            tag = identity_tag(external_id)
            return (yield from self._indexed(reply, tag)), tag

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
        self._defs_cache = None
        return budget

    def locate(self, budget_id: str) -> Plan[tuple[ScopedBudget, str | None]]:
        """The budget and, for an identity budget, its identity's hash tag."""
        parsed = parse_identity_budget_id(budget_id)
        if parsed is None:
            text = yield Call("hget", (self.keys.budget_defs, budget_id))
            if text is None:
                raise BudgetNotFound(budget_id)
            return ScopedBudget.from_record(text), None
        ulid, period = parsed
        tags = yield from self.tags_of([ulid])
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
            self._defs_cache = None

    def identity_counters(self, tag: str, period: str, now: datetime) -> list[str]:
        """What an identity budget has consumed this period: the identity's spend (a calendar
        period), its reservations, and its own usage hash (tokens, one-time cost, alert markers)."""
        if period == ONE_TIME:
            return [self.keys.usage(tag, ONE_TIME), self.keys.reservations(tag, ONE_TIME)]
        key = period_key(Period(period), now, self.tz)
        return [self.keys.spend(tag, key), self.keys.reservations(tag, period), self.keys.usage(tag, key)]

    def drop_identity_budget(self, tag: str, period: str, now: datetime) -> Plan[None]:
        """Remove an identity budget and the usage only it kept (its tokens, a one-time budget's cost);
        the identity's spend stays (the metrics and other budgets count it)."""
        counters = self.identity_counters(tag, period, now)
        own = counters if period == ONE_TIME else counters[2:]
        yield Batch([Call("hdel", (self.keys.budgets(tag), f"def:{period}", f"l:{period}", period)),
                     Call("delete", tuple(own))])

    def remove(self, budget: ScopedBudget, tag: str | None) -> Plan[None]:
        if tag is not None:
            yield from self.drop_identity_budget(tag, budget.period.value, codec.now_or(None))
            return
        yield Batch([Call("hdel", (self.keys.budget_defs, budget.id)),
                     Call("hdel", (self.keys.budget_index, json.dumps(budget.key)))])
        self._defs_cache = None

    def all_budgets(self, identity_target: str | None, with_identities: bool) -> Plan[list[ScopedBudget]]:
        """Every budget (identity ones of ``identity_target`` only, when given)."""
        budgets = list((yield from self.global_defs(fresh=True)).values())
        if not with_identities:
            return budgets
        if identity_target is not None:
            try:
                identity, tag = yield from self.fetch(identity_target)
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

    # -- one global budget's script ----------------------------------------------------------------
    def scoped_eval(self, budget: ScopedBudget, mode: str, now: datetime, args: Iterable[str | int],
                    fourth: str | None = None) -> Eval:
        key, _, _ = budget_bounds(budget, now, self.tz)
        keys = [self.keys.scoped(budget.id, f"u:{key}"), self.keys.scoped(budget.id, "r"),
                self.keys.scoped(budget.id, f"a:{key}")]
        if fourth is not None:
            keys.append(fourth)
        else:
            bucket = codec.ms(now) // BUCKET_MS
            keys += [self.keys.scoped(budget.id, f"q:{bucket - back}") for back in range(6)]
        return Eval(SCOPED, keys, [mode, *args])

    def identity_state(self, tag: str, now: datetime) -> Eval:
        return self._state_eval(tag, now)
