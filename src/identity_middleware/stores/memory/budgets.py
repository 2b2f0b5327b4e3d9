"""The memory store's scoped budgets: definitions, per-budget consumption, reservations, alert markers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from ...core.admission import AdmissionRequest, ModelUsage, Usage
from ...core.budgets import (
    CALENDAR,
    BudgetExists,
    BudgetNotFound,
    ScopedBudget,
    ScopeKind,
    budget_bounds,
    canonical_budget_id,
    matching_targets,
)
from ...core.credits import TopUp
from ...core.matching import MatchIndex, matching_globals
from ...core.models import Identity
from ...core.periods import Period, key_of
from ...core.scoped import ScopedState, budget_forecast, crossed, forecast_event, forecast_watched, threshold_event
from .ledger import Account

# usage.requests counts admissions in 10 s buckets, the current one and the five before it (as
# RedisStore's admission script does): a count per bucket, not an entry per admission.
BUCKET_MS = 10_000
BUCKETS = 6
_BUCKET = timedelta(milliseconds=BUCKET_MS)


def bucket_of(now: datetime) -> int:
    return int(now.timestamp() * 1000) // BUCKET_MS


bounds = budget_bounds
_IDENTITY = ScopeKind.IDENTITY  # a module global: ScopeKind.IDENTITY is a lookup on the enum class, per budget
FORECAST = "forecast"  # the forecast alert's marker in ``Scoped.fired`` (percent 0)


def uses_identity_spend(budget: ScopedBudget) -> bool:
    """An identity budget over a calendar period counts the identity's spend (recorded before it too)."""
    return budget.scope is ScopeKind.IDENTITY and budget.period.calendar is not None


@dataclass(slots=True)
class Scoped:
    """Every scoped budget and its consumption. Call under the store's lock."""

    defs: dict[str, ScopedBudget] = field(default_factory=dict)
    keys: dict[tuple[str, str, str], str] = field(default_factory=dict)
    usage: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # id -> (period key, nanos, tokens)
    held: dict[str, dict[str, tuple[int, datetime]]] = field(default_factory=dict)  # id -> reservations
    hits: dict[str, dict[int, int]] = field(default_factory=dict)  # id -> admissions per 10 s bucket
    fired: set[tuple[str, str, int, str]] = field(default_factory=set)  # (id, period key, percent, dimension|FORECAST)
    top_ups: dict[str, dict[str, TopUp]] = field(default_factory=dict)  # id -> idempotency key -> top-up, in order
    # Indexes, so a request looks only at its identity's budgets and the few global ones (not at
    # every identity's): external id -> budget ids, and the ids of model/provider/workspace budgets.
    by_identity: dict[str, list[str]] = field(default_factory=dict)
    global_ids: list[str] = field(default_factory=list)
    # The match budgets compiled, with their membership cache (built on first use after they change).
    index: MatchIndex | None = None
    # The bucket of the last admission: its first instant, the next bucket's, and its number
    # (per admission, two comparisons instead of datetime.timestamp()'s arithmetic on Python ints).
    span: tuple[datetime, datetime, int] | None = None

    def bucket(self, now: datetime) -> int:
        """The 10 s bucket ``now`` falls in (:func:`bucket_of`)."""
        span = self.span
        if span is not None and now.tzinfo is not None and span[0] <= now < span[1]:
            return span[2]
        bucket = bucket_of(now)
        start = datetime.fromtimestamp(bucket * BUCKET_MS // 1000, UTC)
        self.span = (start, start + _BUCKET, bucket)
        return bucket

    def add(self, budget: ScopedBudget) -> None:
        existing = self.keys.get(budget.key)
        if existing is not None and existing != budget.id:
            raise BudgetExists(existing)
        if budget.id in self.defs:
            self._unindex(self.defs[budget.id])
        if budget.scope is ScopeKind.MATCH:
            self.index = None
        self.defs[budget.id] = budget
        self.keys[budget.key] = budget.id
        if budget.scope is ScopeKind.IDENTITY:
            self.by_identity.setdefault(budget.target or "", []).append(budget.id)
        else:
            self.global_ids.append(budget.id)

    def _unindex(self, budget: ScopedBudget) -> None:
        ids = self.by_identity.get(budget.target or "", []) if budget.scope is ScopeKind.IDENTITY else self.global_ids
        if budget.id in ids:
            ids.remove(budget.id)
        if budget.scope is ScopeKind.IDENTITY and not ids:
            self.by_identity.pop(budget.target or "", None)

    def get(self, budget_id: str) -> ScopedBudget:
        budget = self.defs.get(canonical_budget_id(budget_id))  # either id form of an identity budget
        if budget is None:
            raise BudgetNotFound(budget_id)
        return budget

    def remove(self, budget_id: str) -> ScopedBudget:
        budget = self.get(budget_id)
        self._unindex(budget)
        if budget.scope is ScopeKind.MATCH:
            self.index = None
        del self.defs[budget.id]
        self.keys.pop(budget.key, None)
        for table in (self.usage, self.held, self.hits, self.top_ups):
            table.pop(budget.id, None)
        return budget

    def of_identity(self, external_id: str) -> list[ScopedBudget]:
        return [self.defs[budget_id] for budget_id in self.by_identity.get(external_id, ())]

    def reset(self, budget_id: str) -> None:
        self.usage.pop(budget_id, None)
        self.held.pop(budget_id, None)

    def requests(self, budget_id: str, now: datetime) -> int:
        """Admissions in the current 10 s bucket and the five before it."""
        hits = self.hits.get(budget_id)
        if not hits:
            return 0
        current = self.bucket(now)
        return sum(count for bucket, count in hits.items() if current - BUCKETS < bucket <= current)

    def consumed(self, budget: ScopedBudget, account: Account | None, now: datetime, tz: tzinfo,
                 key: str | None = None) -> tuple[int, int]:
        if key is None:
            key = bounds(budget, now, tz)[0]
        current = self.usage.get(budget.id)
        cost, tokens = (current[1], current[2]) if current is not None and current[0] == key else (0, 0)
        if uses_identity_spend(budget) and account is not None and budget.period.calendar is not None:
            cost = account.spent(budget.period.calendar, now, tz)
        return cost, tokens

    def reserved(self, budget: ScopedBudget, account: Account | None, now: datetime) -> int:
        if uses_identity_spend(budget) and account is not None and budget.period.calendar is not None:
            return account.reserved(budget.period.calendar, now)
        held = self.held.get(budget.id)
        if not held:
            return 0
        for rid in [rid for rid, (_, expires) in held.items() if expires <= now]:
            del held[rid]
        return sum(amount for amount, _ in held.values())

    def match_index(self) -> MatchIndex:
        """The match budgets, compiled, with their membership cache (see :mod:`...core.matching`)."""
        index = self.index
        if index is None:
            index = self.index = MatchIndex(map(self.defs.__getitem__, self.global_ids))
        return index

    def matching(self, identity: Identity, request: AdmissionRequest, providers: Mapping[str, str],
                 now: datetime) -> list[ScopedBudget]:
        defs = self.defs
        found = []
        for budget_id in self.by_identity.get(identity.external_id, ()):
            budget = defs[budget_id]
            if budget.is_active and (budget.expires_at is None or now < budget.expires_at):  # live(now), inlined
                found.append(budget)
        if self.global_ids:
            index = self.match_index()
            matched = index.matched(request, identity, providers) if index else None
            found += matching_globals(map(defs.__getitem__, self.global_ids), request, providers, now, matched)
        return found

    def states(self, budgets: Iterable[ScopedBudget], account: Account | None, now: datetime,
               tz: tzinfo, *, blocking: int | None = None) -> list[ScopedState]:
        """Each budget's state; with ``blocking=estimate``, only those that block it (the period's
        bounds, needed only to answer a 429, are then computed for those alone: admission's fast path)."""
        states = []
        for budget in budgets:
            calendar = CALENDAR.get(budget.period)
            ledger = account if calendar is not None and budget.scope is _IDENTITY else None
            if ledger is not None and calendar is not None:  # spend and reservations are the identity's
                cost, reserved = ledger.spent(calendar, now, tz), ledger.reserved(calendar, now)
                if blocking is not None and budget.token_limit is None and budget.requests_per_minute is None:
                    # An identity's money budget (the usual one): decided here, no state is built.
                    limit, used = budget.amount_nanos, cost + reserved
                    if limit is None or not (used >= limit or (blocking > 0 and used + blocking > limit)):
                        continue
                key = key_of(calendar, now, tz)
                current = self.usage.get(budget.id)
                tokens = current[2] if current is not None and current[0] == key else 0
            else:
                key = "one_time" if calendar is None else key_of(calendar, now, tz)
                current = self.usage.get(budget.id)
                cost, tokens = (current[1], current[2]) if current is not None and current[0] == key else (0, 0)
                reserved = self.reserved(budget, None, now)
            counts = (cost, reserved, tokens, self.requests(budget.id, now))
            if blocking is not None and not ScopedState(budget, *counts, None, None).blocks(blocking):
                continue
            _, start, end = bounds(budget, now, tz)
            states.append(ScopedState(budget, *counts, start, end))
        return states

    def admitted(self, budgets: Iterable[ScopedBudget], now: datetime, reservation: str | None, estimate: int,
                 expires: datetime) -> tuple[str, ...]:
        """Count the request on each budget; hold ``estimate`` on those not held by the identity's ledger."""
        held = []
        bucket = self.bucket(now)
        for budget in budgets:
            hits = self.hits.get(budget.id)
            if hits is None:
                hits = self.hits[budget.id] = {}
            count = hits.get(bucket)
            if count is not None:
                hits[bucket] = count + 1
            else:  # a new bucket: those that left the minute go
                for stale in [old for old in hits if old <= bucket - BUCKETS]:
                    del hits[stale]
                hits[bucket] = 1
            if reservation and budget.amount is not None and not uses_identity_spend(budget):
                self.held.setdefault(budget.id, {})[reservation] = (estimate, expires)
                held.append(budget.id)
        return tuple(held)

    def release(self, reservation: str, budget_ids: Iterable[str]) -> None:
        for budget_id in budget_ids:
            self.held.get(budget_id, {}).pop(reservation, None)

    def charge(self, usage: Usage, identity: str | None, account: Account | None, providers: Mapping[str, str],
               now: datetime, tz: tzinfo, keys: Mapping[Period, str], charged: Iterable[str] = ()
               ) -> list[dict[str, Any]]:
        """Add ``usage`` to every budget it matches (and to ``charged``, the project, API-key and
        match budgets its admission matched); return the threshold events this crossed, each once.
        ``keys``: :func:`period_key_map` at ``now`` in ``tz``."""
        whole = (usage.cost, usage.input_tokens + usage.output_tokens)
        defs = self.defs
        own = self.by_identity.get(identity, ()) if identity is not None else ()
        if not self.global_ids and not own:
            return []
        shares = self._global_shares(usage, whole, own, providers) if self.global_ids else dict.fromkeys(own, whole)
        for budget_id in charged:
            if budget_id in defs:  # not deleted meanwhile
                shares[budget_id] = whole
        events = []
        table = self.usage
        for budget_id, (cost, tokens) in shares.items():
            budget = defs[budget_id]
            calendar = CALENDAR.get(budget.period)
            key = "one_time" if calendar is None else keys[calendar]
            current = table.get(budget_id)
            table[budget_id] = (key, current[1] + cost, current[2] + tokens) \
                if current is not None and current[0] == key else (key, cost, tokens)
            if not budget.alerts and budget.forecast_alert is None:  # the settle path of most budgets ends here
                continue
            after = self.consumed(budget, account if budget.scope is ScopeKind.IDENTITY else None, now, tz, key)
            before = (after[0] - cost, after[1] - tokens)
            for percent, dimension in crossed(budget, before, after):
                marker = (budget_id, key, percent, dimension.value)
                if marker not in self.fired:
                    self.fired.add(marker)
                    _, start, end = bounds(budget, now, tz)
                    events.append(threshold_event(budget, percent, dimension, after, start, end, identity))
            if cost and forecast_watched(budget) and (budget_id, key, 0, FORECAST) not in self.fired:
                ledger = account if budget.scope is ScopeKind.IDENTITY else None
                recent = ledger.recent_cost(now) if ledger is not None else 0
                projected = budget_forecast(budget, after[0], recent, now, tz)
                if projected.exhausts_at is not None:
                    self.fired.add((budget_id, key, 0, FORECAST))
                    _, start, end = bounds(budget, now, tz)
                    events.append(forecast_event(budget, projected, after[0], start, end, identity))
        return events


    def _global_shares(self, usage: Usage, whole: tuple[int, int], own: Iterable[str],
                       providers: Mapping[str, str]) -> dict[str, tuple[int, int]]:
        """Each budget's share of ``usage``: the whole for the identity's and workspace budgets,
        each model's part for the model and provider budgets it matches."""
        shares: dict[str, tuple[int, int]] = dict.fromkeys(own, whole)
        globals_ = [self.defs[budget_id] for budget_id in self.global_ids]
        for budget in globals_:
            if budget.scope is ScopeKind.WORKSPACE:
                shares[budget.id] = whole
        for model, share in usage.models.items():
            targets = matching_targets(model, providers)
            for budget in globals_:
                if budget.scope in (ScopeKind.MODEL, ScopeKind.PROVIDER) and budget.target in targets[budget.scope]:
                    cost, tokens = shares.get(budget.id, (0, 0))
                    shares[budget.id] = (cost + share.cost, tokens + _tokens(share))
        return shares


def _tokens(share: ModelUsage) -> int:
    return share.input_tokens + share.output_tokens
