"""``MemoryStore``: the Store protocol over the records and the ledger, every operation under one lock."""

from __future__ import annotations

import builtins
import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any

from ...core.admission import Admission, AdmissionRequest, Consumed, Reservation, Settlement
from ...core.budgets import (
    BY_REQUEST,
    BudgetChanges,
    BudgetExists,
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
from ...core.metrics import DailyMetrics, HourlyMetrics, Metrics
from ...core.models import Budget, BudgetStatus, Identity, IdentityInput, IdentityPage, IdentityUpdate
from ...core.money import Money, from_nanos, to_nanos
from ...core.ordering import IdentityOrder, sorted_page
from ...core.periods import UTC, Period, period_key_map
from ...core.scoped import ScopedState, budget_forecast, decide_scoped
from ..base import (
    DEFAULT_RESERVATION_TTL,
    METRIC_DAYS,
    METRIC_HOURS,
    Store,
    check_days,
    check_hours,
    check_limit,
    check_span,
)
from ..refusals import MemoryRefusalLog, Refusal, check_refusal_limit, refusal_of
from ..scoped import page_of
from .budgets import Scoped, uses_identity_spend
from .ledger import Account
from .records import Records

if TYPE_CHECKING:
    from ..notifiers import Notifier

logger = logging.getLogger("identity_middleware.budgets")

_BY_MODEL = (ScopeKind.MODEL, ScopeKind.PROVIDER)
_SESSION_SWEEP = 10_000  # sessions kept before the expired ones are swept


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


class MemoryStore(Store):
    """Identities, budgets and metrics in a dict, for one process (tests, demos, single workers).

    Every operation runs under one lock and finishes in microseconds, so the async twins call the
    sync forms directly: no thread hop, no I/O. Records are immutable once stored (an update
    stores a new copy), so readers get them without copying.
    """


    def __init__(self, *, tz: tzinfo = UTC, reservation_ttl: float = DEFAULT_RESERVATION_TTL,
                 providers: Mapping[str, str] | None = None, notifiers: Mapping[str, Notifier] | None = None,
                 notifier_secret: str | bytes | None = None) -> None:
        """``providers``, ``notifiers``, ``notifier_secret``: the budgets' provider map and where
        their alerts go (:class:`~identity_middleware.stores.options.StoreOptions`)."""
        self._store_options(providers, notifiers, notifier_secret)
        self.tz = tz
        self.reservation_ttl = reservation_ttl
        self._lock = threading.RLock()
        self._records = Records()
        self._accounts: dict[str, Account] = {}  # ULID -> the identity's ledger
        self._scoped = Scoped()  # every scoped budget (identity ones mirrored into the ledgers)
        self._refusals = MemoryRefusalLog()
        self._sessions: dict[tuple[str, str], tuple[int, float]] = {}  # (external id, session) -> (nanos, expiry)

    def _insert(self, identity: IdentityInput, now: datetime) -> Identity:
        record = self._records.insert(identity, now)
        self._accounts[record.id] = Account()
        return record

    def _account(self, identity_id: str) -> Account:
        return self._accounts[self._records.ulid_of(identity_id)]

    # -- identities ------------------------------------------------------------------------------
    def create(self, identity: IdentityInput) -> Identity:
        with self._lock:
            return self._insert(identity, _now(None))

    async def acreate(self, identity: IdentityInput) -> Identity:
        return self.create(identity)

    def retrieve(self, identity_id: str) -> Identity:
        with self._lock:
            return self._records.by_ulid[self._records.ulid_of(identity_id)]

    async def aretrieve(self, identity_id: str) -> Identity:
        return self.retrieve(identity_id)

    def update(self, identity_id: str, **fields: Any) -> Identity:
        changes = IdentityUpdate.parse(fields).changes()
        with self._lock:
            return self._records.apply(self._records.ulid_of(identity_id), changes, _now(None))

    async def aupdate(self, identity_id: str, **fields: Any) -> Identity:
        return self.update(identity_id, **fields)

    def delete(self, identity_id: str) -> None:
        with self._lock:
            ulid = self._records.ulid_of(identity_id)
            self._drop_identity_budgets(self._records.by_ulid[ulid].external_id)
            self._records.remove(ulid)
            del self._accounts[ulid]

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
        *,
        all_tags: Sequence[str] | None = None,
        order: IdentityOrder | str = IdentityOrder.CREATED,
    ) -> IdentityPage:
        check_limit(limit)
        order = IdentityOrder(order)
        now = _now(None)
        with self._lock:
            if order is IdentityOrder.CREATED:
                page, has_more = self._records.page(limit, starting_after, ending_before, search, tags, all_tags)
            else:
                records, has_more = sorted_page(self._records.by_ulid.values(), order, limit, starting_after,
                                                ending_before, search, tags, all_tags)
                page = [record.id for record in records]
            data = []
            for ulid in page:
                record = self._records.by_ulid[ulid]
                extra: dict[str, Any] = {}
                if include_metrics:
                    extra["metrics"] = self._accounts[ulid].metrics(now)
                if include_budgets:
                    extra["budgets"] = self._accounts[ulid].statuses(now, self.tz)
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
        *,
        all_tags: Sequence[str] | None = None,
        order: IdentityOrder | str = IdentityOrder.CREATED,
    ) -> IdentityPage:
        return self.list(limit, starting_after, ending_before, search, tags, include_metrics, include_budgets,
                         all_tags=all_tags, order=order)

    # -- budgets ---------------------------------------------------------------------------------
    def set_budget(self, identity_id: str, budget: Budget) -> None:
        with self._lock:
            self._put_identity_budget(identity_id, budget, _now(None))

    async def aset_budget(self, identity_id: str, budget: Budget) -> None:
        self.set_budget(identity_id, budget)

    def remove_budget(self, identity_id: str, period: Period | str) -> None:
        period = Period(period)
        with self._lock:
            existing = self._identity_budget(identity_id, period.value)
            if existing is not None:
                self.delete_budget(existing.id)

    async def aremove_budget(self, identity_id: str, period: Period | str) -> None:
        self.remove_budget(identity_id, period)

    def budget_status(self, identity_id: str, *, now: datetime | None = None) -> builtins.list[BudgetStatus]:
        with self._lock:
            return self._account(identity_id).statuses(_now(now), self.tz)

    async def abudget_status(self, identity_id: str, *, now: datetime | None = None) -> builtins.list[BudgetStatus]:
        return self.budget_status(identity_id, now=now)

    def reset_budget(self, identity_id: str, period: Period | str) -> None:
        period = Period(period)
        with self._lock:
            existing = self._identity_budget(identity_id, period.value)
            self._account(identity_id).reset(period)
            if existing is not None:
                self.reset_budget_consumption(existing.id)

    async def areset_budget(self, identity_id: str, period: Period | str) -> None:
        self.reset_budget(identity_id, period)

    # -- usage -----------------------------------------------------------------------------------
    def metrics(self, identity_id: str, *, now: datetime | None = None) -> Metrics:
        with self._lock:
            return self._account(identity_id).metrics(_now(now))

    async def ametrics(self, identity_id: str, *, now: datetime | None = None) -> Metrics:
        return self.metrics(identity_id, now=now)

    def recent_metrics(self, identity_id: str, *, days: int | None = None, hours: int | None = None,
                       now: datetime | None = None) -> Metrics:
        by_hour, span = check_span(days, hours)
        with self._lock:
            account = self._account(identity_id)
            return account.recent_hours(_now(now), span) if by_hour else account.metrics(_now(now), span)

    async def arecent_metrics(self, identity_id: str, *, days: int | None = None, hours: int | None = None,
                              now: datetime | None = None) -> Metrics:
        return self.recent_metrics(identity_id, days=days, hours=hours, now=now)

    def hourly_metrics(self, identity_id: str, *, hours: int = METRIC_HOURS,
                       now: datetime | None = None) -> builtins.list[HourlyMetrics]:
        check_hours(hours)
        with self._lock:
            return self._account(identity_id).hourly(_now(now), hours)

    async def ahourly_metrics(self, identity_id: str, *, hours: int = METRIC_HOURS,
                              now: datetime | None = None) -> builtins.list[HourlyMetrics]:
        return self.hourly_metrics(identity_id, hours=hours, now=now)

    def recent_refusals(self, limit: int = 50, *, now: datetime | None = None) -> builtins.list[Refusal]:
        return self._refusals.recent(check_refusal_limit(limit), _now(now))

    async def arecent_refusals(self, limit: int = 50, *, now: datetime | None = None) -> builtins.list[Refusal]:
        return self.recent_refusals(limit, now=now)

    def daily_metrics(self, identity_id: str, *, days: int = METRIC_DAYS,
                      now: datetime | None = None) -> builtins.list[DailyMetrics]:
        check_days(days)
        with self._lock:
            return self._account(identity_id).daily(_now(now), days)

    async def adaily_metrics(self, identity_id: str, *, days: int = METRIC_DAYS,
                             now: datetime | None = None) -> builtins.list[DailyMetrics]:
        return self.daily_metrics(identity_id, days=days, now=now)

    # -- the request path ------------------------------------------------------------------------
    @property
    def wants_model(self) -> bool:
        global_ids = self._scoped.global_ids  # usually none: then no generator per request
        return bool(global_ids) and (any(self._scoped.defs[budget_id].scope in _BY_MODEL for budget_id in global_ids)
                                     or self._scoped.match_index().wants_model)

    @property
    def wants_headers(self) -> bool:
        return bool(self._scoped.global_ids) and self._scoped.match_index().wants_headers

    def admit(self, request: AdmissionRequest) -> Admission:
        now = request.now if request.now is not None else datetime.now(UTC)  # _now, inlined: per request
        with self._lock:
            ulid = self._records.by_external.get(request.external_id)
            if ulid is None:
                if request.upsert is None and not request.create_missing:
                    return Admission(None)
                record = self._insert(request.upsert or IdentityInput(id=request.external_id), now)
                ulid = record.id
                for budget in request.default_budgets:
                    self._put_identity_budget(record.external_id, budget, now)
            elif request.upsert is not None and (changes := request.upsert.changes()):
                record = self._records.apply(ulid, changes, now)
            else:
                record = self._records.by_ulid[ulid]
            if request.last_source is not None and record.last_source != request.last_source:
                record = self._records.note_source(ulid, request.last_source)
            account = self._accounts[ulid]
            if request.refused:
                account.count(now, self.tz, error=True)
                return Admission(record)
            budgets = self._scoped.matching(record, request, self.providers, now) if self._scoped.defs else []
            if not budgets:
                return Admission(record)
            charged = tuple(budget.id for budget in budgets if budget.scope in BY_REQUEST) if self._scoped.global_ids \
                else ()
            estimate, fallback = request.estimate, 0
            consumed: tuple[Consumed, ...] = ()
            if request.consumed or request.fallbacks:  # steering: every budget's figures, a smaller estimate
                states, estimate, fallback, consumed = self._steered(budgets, account, request, now)
            else:
                states = self._scoped.states(budgets, account, now, self.tz, blocking=estimate)
            block = decide_scoped(states, estimate, now) if states else None
            if block is not None:
                account.count(now, self.tz, error=True)
                self._refusals.add(refusal_of(block, record.external_id, ulid, request.estimate, now))
                return Admission(record, block)
            if estimate <= 0:  # nothing to hold: the request is only counted
                self._scoped.admitted(budgets, now, None, 0, now)
                return Admission(record, None, None, consumed, 0, charged)  # positional: per request
            expires = now + timedelta(seconds=self.reservation_ttl)
            reservation_id = uuid.uuid4().hex
            held = self._scoped.admitted(budgets, now, reservation_id, estimate, expires)
            if not (account.budgets or held):
                return Admission(record, consumed=consumed, fallback=fallback, charged=charged)
            reservation = Reservation(reservation_id, ulid, estimate, expires,
                                      tuple(p.value for p in account.budgets), held)
            if account.budgets:
                account.reserve(reservation.id, estimate, expires)
            return Admission(record, None, reservation, consumed, fallback, charged)

    def _steered(self, budgets: builtins.list[ScopedBudget], account: Account, request: AdmissionRequest,
                 now: datetime) -> tuple[builtins.list[ScopedState], int, int, tuple[Consumed, ...]]:
        """Admission for steering, as admit.lua and the global budgets' step do it on Redis: the
        estimate is the first of the request's and its fallbacks that the identity's own budgets
        admit; then every budget must admit that one. Answers the states that block it, the
        estimate, which fallback it is (0: none), and every budget's figures before this request."""
        states = self._scoped.states(budgets, account, now, self.tz)
        consumed = tuple(Consumed(state.budget.period.value if state.budget.scope is ScopeKind.IDENTITY
                                  else state.budget.id, state.spent + state.reserved, limit, state.end, state.start)
                         for state in states if (limit := state.limit) is not None)
        own = [state for state in states if state.budget.scope is ScopeKind.IDENTITY]
        estimate, fallback = request.estimate, 0
        if request.fallbacks and any(state.blocks(estimate) for state in own):
            for index, smaller in enumerate(request.fallbacks, 1):
                if not any(state.blocks(smaller) for state in own):
                    estimate, fallback = smaller, index
                    break
        return [state for state in states if state.blocks(estimate)], estimate, fallback, \
            consumed if request.consumed else ()

    async def aadmit(self, request: AdmissionRequest) -> Admission:
        return self.admit(request)

    def settle(self, settlement: Settlement) -> None:
        now = settlement.now if settlement.now is not None else datetime.now(UTC)
        usage = settlement.usage
        with self._lock:
            account = self._accounts.get(settlement.identity_id)
            if account is None:
                return  # deleted while the request ran: nothing left to charge
            if settlement.reservation is not None:
                account.reservations.pop(settlement.reservation.id, None)
                self._scoped.release(settlement.reservation.id, settlement.reservation.budgets)
            keys = period_key_map(now, self.tz)  # once, for the identity's spend and its budgets
            account.charge(now, usage, keys)
            events = self._scoped.charge(usage, self._records.by_ulid[settlement.identity_id].external_id,
                                         account, self.providers, now, self.tz, keys, settlement.charged) \
                if self._scoped.defs else None
        if events:
            self._emit(events)

    async def asettle(self, settlement: Settlement) -> None:
        self.settle(settlement)

    # -- sessions (``session=``) -------------------------------------------------------------------
    def session_cost(self, external_id: str, session: str) -> int:
        with self._lock:
            found = self._sessions.get((external_id, session))
            if found is None or found[1] <= time.monotonic():
                return 0
            return found[0]

    async def asession_cost(self, external_id: str, session: str) -> int:
        return self.session_cost(external_id, session)

    def add_session_cost(self, external_id: str, session: str, cost: int, ttl: int) -> int:
        now = time.monotonic()
        with self._lock:
            if len(self._sessions) >= _SESSION_SWEEP:  # expired ones go; the dict stays bounded by live ones
                self._sessions = {key: value for key, value in self._sessions.items() if value[1] > now}
            found = self._sessions.get((external_id, session))
            total = cost + (found[0] if found is not None and found[1] > now else 0)
            self._sessions[external_id, session] = (total, now + ttl)
            return total

    async def aadd_session_cost(self, external_id: str, session: str, cost: int, ttl: int) -> int:
        return self.add_session_cost(external_id, session, cost, ttl)

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

    # -- scoped budgets: orq's Budgets API -------------------------------------------------------------------------
    def create_budget(self, spec: BudgetSpec) -> ScopedBudget:
        now = _now(None)
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
            budget = self._scoped.get(budget_id).changed(changes, _now(None))
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
        now = _now(None) if now is None else now
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
        now = _now(None)
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
        moment = _now(None) if now is None else now
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
