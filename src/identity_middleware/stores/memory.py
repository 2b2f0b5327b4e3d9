"""The embedded store: everything in this process's memory, thread-safe, atomic under one lock."""

from __future__ import annotations

import bisect
import builtins
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

from ..core.admission import Admission, AdmissionRequest, BudgetState, Reservation, Settlement, decide
from ..core.errors import IdentityExists, IdentityNotFound
from ..core.ids import new_ulid
from ..core.models import (
    Budget,
    BudgetStatus,
    Identity,
    IdentityInput,
    IdentityPage,
    IdentityUpdate,
    Metrics,
    budget_status,
    metrics_from_totals,
)
from ..core.money import to_nanos
from ..core.periods import UTC, Period, period_bounds, period_key, period_keys, utc_day
from .base import DEFAULT_RESERVATION_TTL, METRIC_DAYS, Store, check_limit, matches

_PERIOD_ORDER = {period: index for index, period in enumerate(Period)}


@dataclass(slots=True)
class _Day:
    cost: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0
    errors: int = 0
    models: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Account:
    """Everything one identity owns besides its record."""

    budgets: dict[Period, int] = field(default_factory=dict)
    spend: dict[Period, tuple[str, int]] = field(default_factory=dict)  # period -> (period key, nanos)
    reservations: dict[str, tuple[int, datetime, tuple[Period, ...]]] = field(default_factory=dict)
    days: dict[date, _Day] = field(default_factory=dict)


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


class MemoryStore(Store):
    """Identities, budgets and metrics in a dict, for one process (tests, demos, single workers).

    Every operation runs under one lock and finishes in microseconds, so the async twins call the
    sync forms directly: no thread hop, no I/O. Records are immutable once stored (an update
    stores a new copy), so readers get them without copying.
    """

    settles_before_await = True

    def __init__(self, *, tz: tzinfo = UTC, reservation_ttl: float = DEFAULT_RESERVATION_TTL) -> None:
        self.tz = tz
        self.reservation_ttl = reservation_ttl
        self._lock = threading.RLock()
        self._records: dict[str, Identity] = {}
        self._by_external: dict[str, str] = {}
        self._order: builtins.list[str] = []  # ULIDs, ascending
        self._accounts: dict[str, _Account] = {}

    # -- helpers (call with the lock held) -------------------------------------------------------
    def _ulid_of(self, identity_id: str) -> str:
        ulid = self._by_external.get(identity_id)
        if ulid is None and identity_id in self._records:
            ulid = identity_id
        if ulid is None:
            raise IdentityNotFound(identity_id)
        return ulid

    def _insert(self, identity: IdentityInput, now: datetime) -> Identity:
        if identity.id in self._by_external:
            raise IdentityExists(identity.id)
        record = Identity(id=new_ulid(), external_id=identity.id, created=now, updated=now,
                          **{name: value for name, value in identity.changes().items() if value is not None})
        self._records[record.id] = record
        self._by_external[record.external_id] = record.id
        if not self._order or record.id > self._order[-1]:
            self._order.append(record.id)
        else:
            bisect.insort(self._order, record.id)
        self._accounts[record.id] = _Account()
        return record

    def _apply(self, ulid: str, changes: dict[str, Any], now: datetime) -> Identity:
        record = self._records[ulid]
        changes = {name: value for name, value in changes.items() if getattr(record, name) != value}
        if name_nulls := [name for name in ("tags", "metadata") if name in changes and changes[name] is None]:
            for name in name_nulls:
                changes[name] = [] if name == "tags" else {}
        if not changes:
            return record
        record = record.model_copy(update={**changes, "updated": now})
        self._records[ulid] = record
        return record

    def _spent(self, account: _Account, period: Period, now: datetime) -> int:
        key = period_key(period, now, self.tz)
        current = account.spend.get(period)
        return current[1] if current is not None and current[0] == key else 0

    def _reserved(self, account: _Account, period: Period, now: datetime) -> int:
        if not account.reservations:
            return 0
        expired = [rid for rid, (_, expires, _) in account.reservations.items() if expires <= now]
        for rid in expired:
            del account.reservations[rid]
        return sum(amount for amount, _, periods in account.reservations.values() if period in periods)

    def _blocking(self, account: _Account, now: datetime, estimate: int) -> builtins.list[BudgetState]:
        """The budgets that refuse ``estimate`` now; states are built only for those (hot path)."""
        blocking = []
        for period, amount in account.budgets.items():
            spent = self._spent(account, period, now)
            reserved = self._reserved(account, period, now)
            used = spent + reserved
            if used >= amount or (estimate > 0 and used + estimate > amount):
                start, end = period_bounds(period, now, self.tz)
                blocking.append(BudgetState(period, amount, spent, reserved, start, end))
        return blocking

    def _states(self, account: _Account, now: datetime) -> builtins.list[BudgetState]:
        states = []
        for period in sorted(account.budgets, key=_PERIOD_ORDER.__getitem__):
            start, end = period_bounds(period, now, self.tz)
            states.append(BudgetState(period, account.budgets[period], self._spent(account, period, now),
                                      self._reserved(account, period, now), start, end))
        return states

    def _count(self, account: _Account, now: datetime, *, cost: int = 0, input_tokens: int = 0,
               output_tokens: int = 0, error: bool = False, models: dict[str, int] | None = None) -> None:
        day = utc_day(now)
        bucket = account.days.get(day)
        if bucket is None:
            oldest = day - timedelta(days=METRIC_DAYS - 1)
            for stale in [d for d in account.days if d < oldest]:
                del account.days[stale]
            bucket = account.days[day] = _Day()
        bucket.requests += 1
        bucket.errors += error
        bucket.cost += cost
        bucket.input_tokens += input_tokens
        bucket.output_tokens += output_tokens
        for model, count in (models or {}).items():
            bucket.models[model] = bucket.models.get(model, 0) + count
        if cost:
            for period, key in period_keys(now, self.tz):
                current = account.spend.get(period)
                base = current[1] if current is not None and current[0] == key else 0
                account.spend[period] = (key, base + cost)

    def _metrics(self, ulid: str, now: datetime) -> Metrics:
        oldest = utc_day(now) - timedelta(days=METRIC_DAYS - 1)
        days = [d for when, d in self._accounts[ulid].days.items() if oldest <= when <= utc_day(now)]
        return metrics_from_totals(sum(d.cost for d in days), sum(d.input_tokens for d in days),
                                   sum(d.output_tokens for d in days), sum(d.requests for d in days),
                                   sum(d.errors for d in days))

    def _statuses(self, ulid: str, now: datetime) -> builtins.list[BudgetStatus]:
        return [budget_status(s.period, s.amount, s.spent, s.reserved, s.period_start, s.resets_at)
                for s in self._states(self._accounts[ulid], now)]

    # -- identities ------------------------------------------------------------------------------
    def create(self, identity: IdentityInput) -> Identity:
        with self._lock:
            return self._insert(identity, _now(None))

    async def acreate(self, identity: IdentityInput) -> Identity:
        return self.create(identity)

    def retrieve(self, identity_id: str) -> Identity:
        with self._lock:
            return self._records[self._ulid_of(identity_id)]

    async def aretrieve(self, identity_id: str) -> Identity:
        return self.retrieve(identity_id)

    def update(self, identity_id: str, **fields: Any) -> Identity:
        changes = IdentityUpdate.parse(fields).changes()
        with self._lock:
            return self._apply(self._ulid_of(identity_id), changes, _now(None))

    async def aupdate(self, identity_id: str, **fields: Any) -> Identity:
        return self.update(identity_id, **fields)

    def delete(self, identity_id: str) -> None:
        with self._lock:
            ulid = self._ulid_of(identity_id)
            record = self._records.pop(ulid)
            del self._by_external[record.external_id]
            del self._accounts[ulid]
            self._order.pop(bisect.bisect_left(self._order, ulid))

    async def adelete(self, identity_id: str) -> None:
        self.delete(identity_id)

    def list(
        self,
        limit: int = 10,
        starting_after: str | None = None,
        ending_before: str | None = None,
        search: str | None = None,
        tags: Sequence[str] | None = None,
        include_metrics: bool = False,
        include_budgets: bool = False,
    ) -> IdentityPage:
        check_limit(limit)
        now = _now(None)
        with self._lock:
            lo = bisect.bisect_right(self._order, starting_after) if starting_after else 0
            hi = bisect.bisect_left(self._order, ending_before) if ending_before else len(self._order)
            window = self._order[lo:hi]
            if ending_before and not starting_after:
                window = window[::-1]  # walk back from the cursor, then put the page in order
            page: builtins.list[str] = []
            has_more = False
            for ulid in window:
                if matches(self._records[ulid], search, tags):
                    if len(page) == limit:
                        has_more = True
                        break
                    page.append(ulid)
            if ending_before and not starting_after:
                page.reverse()
            data = []
            for ulid in page:
                record = self._records[ulid]
                extra: dict[str, Any] = {}
                if include_metrics:
                    extra["metrics"] = self._metrics(ulid, now)
                if include_budgets:
                    extra["budgets"] = self._statuses(ulid, now)
                data.append(record.model_copy(update=extra) if extra else record)
            return IdentityPage(data=data, has_more=has_more)

    async def alist(
        self,
        limit: int = 10,
        starting_after: str | None = None,
        ending_before: str | None = None,
        search: str | None = None,
        tags: Sequence[str] | None = None,
        include_metrics: bool = False,
        include_budgets: bool = False,
    ) -> IdentityPage:
        return self.list(limit, starting_after, ending_before, search, tags, include_metrics, include_budgets)

    # -- budgets ---------------------------------------------------------------------------------
    def set_budget(self, identity_id: str, budget: Budget) -> None:
        with self._lock:
            self._accounts[self._ulid_of(identity_id)].budgets[budget.period] = to_nanos(budget.amount)

    async def aset_budget(self, identity_id: str, budget: Budget) -> None:
        self.set_budget(identity_id, budget)

    def remove_budget(self, identity_id: str, period: Period | str) -> None:
        period = Period(period)
        with self._lock:
            self._accounts[self._ulid_of(identity_id)].budgets.pop(period, None)

    async def aremove_budget(self, identity_id: str, period: Period | str) -> None:
        self.remove_budget(identity_id, period)

    def budget_status(self, identity_id: str, *, now: datetime | None = None) -> builtins.list[BudgetStatus]:
        with self._lock:
            return self._statuses(self._ulid_of(identity_id), _now(now))

    async def abudget_status(self, identity_id: str, *, now: datetime | None = None) -> builtins.list[BudgetStatus]:
        return self.budget_status(identity_id, now=now)

    def reset_budget(self, identity_id: str, period: Period | str) -> None:
        period = Period(period)
        with self._lock:
            account = self._accounts[self._ulid_of(identity_id)]
            account.spend.pop(period, None)
            for rid in [rid for rid, (_, _, periods) in account.reservations.items() if period in periods]:
                amount, expires, periods = account.reservations[rid]
                rest = tuple(p for p in periods if p is not period)
                if rest:
                    account.reservations[rid] = (amount, expires, rest)
                else:
                    del account.reservations[rid]

    async def areset_budget(self, identity_id: str, period: Period | str) -> None:
        self.reset_budget(identity_id, period)

    # -- usage -----------------------------------------------------------------------------------
    def metrics(self, identity_id: str, *, now: datetime | None = None) -> Metrics:
        with self._lock:
            return self._metrics(self._ulid_of(identity_id), _now(now))

    async def ametrics(self, identity_id: str, *, now: datetime | None = None) -> Metrics:
        return self.metrics(identity_id, now=now)

    # -- the request path ------------------------------------------------------------------------
    def admit(self, request: AdmissionRequest) -> Admission:
        now = _now(request.now)
        with self._lock:
            ulid = self._by_external.get(request.external_id)
            if ulid is None:
                if request.upsert is None and not request.create_missing:
                    return Admission(None)
                record = self._insert(request.upsert or IdentityInput(id=request.external_id), now)
                ulid = record.id
                for budget in request.default_budgets:
                    self._accounts[ulid].budgets[budget.period] = to_nanos(budget.amount)
            elif request.upsert is not None:
                record = self._apply(ulid, request.upsert.changes(), now)
            else:
                record = self._records[ulid]
            account = self._accounts[ulid]
            if request.refused:
                self._count(account, now, error=True)
                return Admission(record)
            blocking = self._blocking(account, now, request.estimate) if account.budgets else None
            block = decide(blocking, request.estimate, now) if blocking else None
            if block is not None:
                self._count(account, now, error=True)
                return Admission(record, block)
            if request.estimate <= 0 or not account.budgets:
                return Admission(record)
            expires = now + timedelta(seconds=self.reservation_ttl)
            reservation = Reservation(uuid.uuid4().hex, ulid, request.estimate, expires,
                                      tuple(p.value for p in account.budgets))
            account.reservations[reservation.id] = (request.estimate, expires, tuple(account.budgets))
            return Admission(record, None, reservation)

    async def aadmit(self, request: AdmissionRequest) -> Admission:
        return self.admit(request)

    def settle(self, settlement: Settlement) -> None:
        now = _now(settlement.now)
        usage = settlement.usage
        with self._lock:
            account = self._accounts.get(settlement.identity_id)
            if account is None:
                return  # deleted while the request ran: nothing left to charge
            if settlement.reservation is not None:
                account.reservations.pop(settlement.reservation.id, None)
            self._count(account, now, cost=usage.cost, input_tokens=usage.input_tokens,
                        output_tokens=usage.output_tokens, error=usage.error, models=usage.models)

    async def asettle(self, settlement: Settlement) -> None:
        self.settle(settlement)
