"""The store protocol's scoped budgets (orq's Budgets API): identity, model, provider, workspace, project,
API-key and match (CEL) budgets.

Every store has these in a sync form and an async twin (``create_budget`` / ``acreate_budget``).
The per-identity budget methods of :class:`.base.Store` (``set_budget``, ``budget_status``, ...) are a
view over the identity-scoped ones: ``set_budget("u", Budget(period="daily", amount="1"))`` creates or
updates the identity budget of ``u`` for ``daily``, and a daily identity budget created here shows in
``budget_status("u")`` when it has an amount.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..core.budgets import (
    BudgetChanges,
    BudgetNotFound,
    BudgetOrder,
    BudgetSpec,
    BudgetUsage,
    ScopedBudget,
    ScopedBudgetPage,
    canonical_budget_id,
)
from ..core.check import BudgetCheck, CheckRequest
from ..core.credits import TopUp
from ..core.money import Money, to_nanos
from ..core.ordering import micros

if TYPE_CHECKING:
    from .notifiers import Notifier, Notifiers

Notify = Callable[[builtins.list[dict[str, Any]]], None]


def _missing(store: object) -> NotImplementedError:
    return NotImplementedError(f"{type(store).__name__} keeps no scoped budgets")


class ScopedBudgets:
    """Scoped budgets in a store; not abstract, so a store written before them still loads."""

    #: ``"gpt-4o" -> "openai"``: the provider of model names without a ``provider/`` prefix.
    providers: Mapping[str, str] = {}
    #: Where the budgets' threshold and forecast alerts go (``notifiers=``): None without notifiers;
    #: ``store.alerts.drain()`` waits until those queued were delivered (or given up).
    alerts: Notifiers | None = None

    @property
    def wants_model(self) -> bool:
        """Whether admission needs the request's model (model or provider budgets may match it)."""
        return True

    @property
    def wants_headers(self) -> bool:
        """Whether admission needs the request's headers (a match expression reads ``headers``)."""
        return False

    def _store_options(self, providers: Mapping[str, str] | None, notifiers: Mapping[str, Notifier] | None,
                       notifier_secret: str | bytes | None) -> None:
        """A store's ``providers``, ``notifiers`` and ``notifier_secret``, validated once, where it is
        built (:class:`~.options.StoreOptions`): set then, never changed."""
        if providers is None and notifiers is None and notifier_secret is None:
            return
        from .options import StoreOptions  # loaded only by stores given these options

        options = StoreOptions({} if providers is None else providers, {} if notifiers is None else notifiers,
                               notifier_secret)
        self.providers = options.providers
        if options.notifiers:
            from .notifiers import Notifiers  # alerts are loaded only by apps that send them

            self.alerts = Notifiers(options.notifiers, options.notifier_secret)

    def check(self, identity: str | None = None, *, model: str | None = None, provider: str | None = None,
              project: str | None = None, api_key: str | None = None, metadata: Mapping[str, Any] | None = None,
              headers: Mapping[str, str] | None = None, estimate: Money = 0) -> BudgetCheck:
        """Would a request of ``identity`` (an external id) for ``model`` reserving ``estimate`` (USD)
        be admitted now? Which budget would refuse it, what remains of the tightest budget per
        dimension: admission's decision over the same budgets, nothing written. ``metadata``, when
        given, stands for the identity's own (match expressions read it)."""
        return self.check_request(_check_request(identity, model, provider, project, api_key, metadata, headers,
                                                 estimate))

    async def acheck(self, identity: str | None = None, *, model: str | None = None, provider: str | None = None,
                     project: str | None = None, api_key: str | None = None,
                     metadata: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None,
                     estimate: Money = 0) -> BudgetCheck:
        return await self.acheck_request(_check_request(identity, model, provider, project, api_key, metadata,
                                                        headers, estimate))

    def check_request(self, request: CheckRequest) -> BudgetCheck:
        """:meth:`check` with its arguments gathered (what a store implements)."""
        raise _missing(self)

    async def acheck_request(self, request: CheckRequest) -> BudgetCheck:
        raise _missing(self)

    def create_budget(self, spec: BudgetSpec) -> ScopedBudget:
        """Store a new budget; :class:`BudgetExists` when its (scope, target, period) has one, of
        every scope (change that one with :meth:`update_budget`). An identity budget of an unknown
        identity creates that identity bare."""
        raise _missing(self)

    async def acreate_budget(self, spec: BudgetSpec) -> ScopedBudget:
        raise _missing(self)

    def retrieve_budget(self, budget_id: str) -> ScopedBudget:
        """The budget; :class:`BudgetNotFound` otherwise. Every method taking a ``budget_id`` also
        takes an identity budget's id in the form earlier versions showed (``<ULID>.<period>``)."""
        raise _missing(self)

    async def aretrieve_budget(self, budget_id: str) -> ScopedBudget:
        raise _missing(self)

    def update_budget(self, budget_id: str, changes: BudgetChanges) -> ScopedBudget:
        raise _missing(self)

    async def aupdate_budget(self, budget_id: str, changes: BudgetChanges) -> ScopedBudget:
        raise _missing(self)

    def delete_budget(self, budget_id: str) -> None:
        raise _missing(self)

    async def adelete_budget(self, budget_id: str) -> None:
        raise _missing(self)

    def list_budgets(self, limit: int = 10, starting_after: str | None = None, ending_before: str | None = None,
                     scope_kinds: Sequence[str] | None = None, target: str | None = None,
                     is_active: bool | None = None, periods: Sequence[str] | None = None,
                     query: str | None = None, *, order: BudgetOrder | str = BudgetOrder.ID) -> ScopedBudgetPage:
        """A page of budgets in ``order`` (ascending by id unless told), each with its usage; cursors
        are budget ids (see :func:`page_of`). A scope kind no budget has is an empty page."""
        raise _missing(self)

    async def alist_budgets(self, limit: int = 10, starting_after: str | None = None,
                            ending_before: str | None = None, scope_kinds: Sequence[str] | None = None,
                            target: str | None = None, is_active: bool | None = None,
                            periods: Sequence[str] | None = None, query: str | None = None, *,
                            order: BudgetOrder | str = BudgetOrder.ID) -> ScopedBudgetPage:
        raise _missing(self)

    def budget_usage(self, budget_id: str, *, now: datetime | None = None) -> BudgetUsage:
        """Cost and tokens this period, requests in the last 60 s, and the budget's forecast."""
        raise _missing(self)

    async def abudget_usage(self, budget_id: str, *, now: datetime | None = None) -> BudgetUsage:
        raise _missing(self)

    def reset_budget_consumption(self, budget_id: str) -> None:
        """Zero this period's consumption (and reservations) of one budget."""
        raise _missing(self)

    async def areset_budget_consumption(self, budget_id: str) -> None:
        raise _missing(self)

    # -- credits (:mod:`..core.credits`) ----------------------------------------------------------------
    def top_up(self, budget_id: str, amount: Money, idempotency_key: str, *, now: datetime | None = None) -> TopUp:
        """Add ``amount`` to an identity's one-time budget once per ``idempotency_key``, atomically with
        admission; the same key again answers the same :class:`TopUp` and adds nothing. Raises
        :class:`BudgetNotFound`, :class:`InvalidBudget` (not a one-time identity budget with an amount,
        a bad amount or key) or :class:`TopUpConflict` (the key topped up another amount)."""
        raise _missing(self)

    async def atop_up(self, budget_id: str, amount: Money, idempotency_key: str, *,
                      now: datetime | None = None) -> TopUp:
        raise _missing(self)

    def top_ups(self, budget_id: str) -> builtins.list[TopUp]:
        """The budget's ledger of top-ups, oldest first (empty for a budget never topped up)."""
        raise _missing(self)

    async def atop_ups(self, budget_id: str) -> builtins.list[TopUp]:
        raise _missing(self)


def _sort_key(budget: ScopedBudget, order: BudgetOrder) -> tuple[object, ...]:
    if order is BudgetOrder.CREATED_AT:
        return (-micros(budget.created_at), budget.id)
    if order is BudgetOrder.UPDATED_AT:
        return (-micros(budget.updated_at), budget.id)
    if order is BudgetOrder.EXPIRES_AT:
        expires = budget.expires_at
        return (expires is None, 0 if expires is None else micros(expires), budget.id)
    return (budget.id,)


def _check_request(identity: str | None, model: str | None, provider: str | None, project: str | None,
                   api_key: str | None, metadata: Mapping[str, Any] | None, headers: Mapping[str, str] | None,
                   estimate: Money) -> CheckRequest:
    amount = to_nanos(estimate)
    if amount < 0:
        raise ValueError("estimate must not be negative")
    return CheckRequest(identity or None, model or None, provider or None, project or None, api_key or None,
                        metadata, headers, amount)


def page_of(budgets: builtins.list[ScopedBudget], limit: int, starting_after: str | None,
            ending_before: str | None, scope_kinds: Sequence[str] | None, target: str | None,
            is_active: bool | None, periods: Sequence[str] | None,
            query: str | None, order: BudgetOrder = BudgetOrder.ID) -> tuple[builtins.list[ScopedBudget], bool]:
    """The filters, order and cursor paging of ``list_budgets`` over every budget (unfiltered).

    Cursors are budget ids. In the default order (by id) any id is a position; in another order a
    cursor must name a budget that exists (filtered out or not), else :class:`BudgetNotFound`.
    """
    kinds = set(scope_kinds or ())
    wanted = set(periods or ())
    needle = query.casefold() if query else None

    def keep(budget: ScopedBudget) -> bool:
        if kinds and budget.scope.value not in kinds:
            return False
        if target is not None and (budget.target or "") != target:
            return False
        if is_active is not None and budget.is_active is not is_active:
            return False
        if wanted and budget.period.value not in wanted:
            return False
        text = f"{budget.id} {budget.scope.value} {budget.target or budget.match or ''}"
        return needle is None or needle in text.casefold()

    by_id = {budget.id: budget for budget in budgets}

    def bound(cursor: str | None) -> tuple[object, ...] | None:
        if cursor is None:
            return None
        if order is BudgetOrder.ID:
            return (canonical_budget_id(cursor),)
        budget = by_id.get(canonical_budget_id(cursor))
        if budget is None:
            raise BudgetNotFound(cursor)
        return _sort_key(budget, order)

    low, high = bound(starting_after), bound(ending_before)
    matching = sorted((budget for budget in budgets
                       if (low is None or _sort_key(budget, order) > low)
                       and (high is None or _sort_key(budget, order) < high) and keep(budget)),
                      key=lambda budget: _sort_key(budget, order))
    if ending_before is not None and starting_after is None:
        return matching[-limit:], len(matching) > limit
    return matching[:limit], len(matching) > limit
