"""The store protocol: every operation in a sync form and an async twin named the Django way."""

from __future__ import annotations

import abc
import builtins
from collections.abc import Sequence
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import Any

from ..core.admission import Admission, AdmissionRequest, Settlement, Usage
from ..core.metrics import HourlyMetrics, UsageOver
from ..core.models import Budget, BudgetStatus, DailyMetrics, Identity, IdentityInput, IdentityPage, Metrics
from ..core.money import Money, to_nanos
from ..core.ordering import IdentityOrder
from ..core.periods import UTC, Period
from .refusals import Refusal
from .scoped import ScopedBudgets

DEFAULT_RESERVATION_TTL = 300.0
MAX_PAGE_SIZE = 200
METRIC_DAYS = 30
METRIC_HOURS = 24


def usage_of(
    cost: Money | None, input_tokens: int, output_tokens: int, model: str | None, error: bool
) -> Usage:
    """One request's :class:`Usage` from the arguments of ``store.record``."""
    nanos = 0 if cost is None else to_nanos(cost)
    if nanos < 0 or input_tokens < 0 or output_tokens < 0:
        raise ValueError("cost and token counts must not be negative")
    usage = Usage(error=error)
    usage.add(nanos, input_tokens, output_tokens, model)
    return usage


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be 1 to {MAX_PAGE_SIZE}")
    return limit


def check_days(days: int) -> int:
    if not 1 <= days <= METRIC_DAYS:
        raise ValueError(f"days must be 1 to {METRIC_DAYS}")
    return days


def check_hours(hours: int) -> int:
    if not 1 <= hours <= METRIC_HOURS:
        raise ValueError(f"hours must be 1 to {METRIC_HOURS}")
    return hours


def check_span(days: int | None, hours: int | None) -> tuple[bool, int]:
    """``recent_metrics``'s range: ``(True, hours)`` or ``(False, days)``; exactly one must be given."""
    if days is not None and hours is None:
        return False, check_days(days)
    if hours is not None and days is None:
        return True, check_hours(hours)
    raise ValueError("give days or hours, one of them")


class Store(ScopedBudgets, abc.ABC):
    """What the middleware, the admin API and users' code ask of a store.

    Identities are addressed by ``_id`` (ULID) or ``external_id`` (external id matched first).
    Every method has an async twin with the same parameters (``create`` / ``acreate``) so sync
    servers never start an event loop and async ones never block theirs. One store object serves
    any number of threads and event loops over its life.
    """

    tz: tzinfo = UTC
    reservation_ttl: float = DEFAULT_RESERVATION_TTL

    # -- identities ------------------------------------------------------------------------------
    @abc.abstractmethod
    def create(self, identity: IdentityInput) -> Identity:
        """Create a record; :class:`IdentityExists` if the external id is taken."""

    @abc.abstractmethod
    async def acreate(self, identity: IdentityInput) -> Identity: ...

    @abc.abstractmethod
    def retrieve(self, identity_id: str) -> Identity:
        """The record by external id, else by ULID; :class:`IdentityNotFound` otherwise."""

    @abc.abstractmethod
    async def aretrieve(self, identity_id: str) -> Identity: ...

    @abc.abstractmethod
    def update(self, identity_id: str, **fields: Any) -> Identity:
        """Replace the given profile fields (``display_name``, ``email``, ``avatar_url``/``logo_url``,
        ``tags``, ``metadata``); others stay."""

    @abc.abstractmethod
    async def aupdate(self, identity_id: str, **fields: Any) -> Identity: ...

    @abc.abstractmethod
    def delete(self, identity_id: str) -> None:
        """Remove the record, its budgets, counters and metrics."""

    @abc.abstractmethod
    async def adelete(self, identity_id: str) -> None: ...

    @abc.abstractmethod
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
        """A page ascending by ``_id`` (or in another ``order``); cursors are ``_id`` values.

        ``tags`` keeps identities with any of them, ``all_tags`` those with all of them. An ``order``
        other than ``created`` reads every identity to sort them (a cursor must name one that exists,
        else :class:`IdentityNotFound`); the default order reads only the page."""

    @abc.abstractmethod
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
    ) -> IdentityPage: ...

    # -- budgets ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def set_budget(self, identity_id: str, budget: Budget) -> None: ...

    @abc.abstractmethod
    async def aset_budget(self, identity_id: str, budget: Budget) -> None: ...

    @abc.abstractmethod
    def remove_budget(self, identity_id: str, period: Period | str) -> None: ...

    @abc.abstractmethod
    async def aremove_budget(self, identity_id: str, period: Period | str) -> None: ...

    @abc.abstractmethod
    def budget_status(self, identity_id: str, *, now: datetime | None = None) -> builtins.list[BudgetStatus]:
        """Live status of every budget, daily first."""

    @abc.abstractmethod
    async def abudget_status(
        self, identity_id: str, *, now: datetime | None = None
    ) -> builtins.list[BudgetStatus]: ...

    @abc.abstractmethod
    def reset_budget(self, identity_id: str, period: Period | str) -> None:
        """Zero the current period's spend (and its reservations) of one budget."""

    @abc.abstractmethod
    async def areset_budget(self, identity_id: str, period: Period | str) -> None: ...

    # -- usage -----------------------------------------------------------------------------------
    def record(
        self,
        identity_id: str,
        cost: Money | None = Decimal(0),
        input_tokens: int = 0,
        output_tokens: int = 0,
        model: str | None = None,
        error: bool = False,
        *,
        now: datetime | None = None,
    ) -> None:
        """One request's usage: a request (and an error), its cost on every period, the day's metrics;
        written when this returns (a batching store flushes it)."""
        usage = usage_of(cost, input_tokens, output_tokens, model, error)
        identity = self.retrieve(identity_id)
        self.settle(Settlement(identity.id, usage, None, now))
        self.flush()

    async def arecord(
        self,
        identity_id: str,
        cost: Money | None = Decimal(0),
        input_tokens: int = 0,
        output_tokens: int = 0,
        model: str | None = None,
        error: bool = False,
        *,
        now: datetime | None = None,
    ) -> None:
        usage = usage_of(cost, input_tokens, output_tokens, model, error)
        identity = await self.aretrieve(identity_id)
        await self.asettle(Settlement(identity.id, usage, None, now))
        await self.aflush()

    @abc.abstractmethod
    def metrics(self, identity_id: str, *, now: datetime | None = None) -> Metrics:
        """Totals over the last 30 UTC days."""

    @abc.abstractmethod
    async def ametrics(self, identity_id: str, *, now: datetime | None = None) -> Metrics: ...

    # Not abstract: the console reads it where a store has it (else its 30-day metrics).
    def recent_metrics(self, identity_id: str, *, days: int | None = None, hours: int | None = None,
                       now: datetime | None = None) -> Metrics:
        """Totals over the last ``days`` UTC days (1..30) or the last ``hours`` UTC hours (1..24):
        one of the two; per model too."""
        raise NotImplementedError(f"{type(self).__name__} sums no range of days")

    async def arecent_metrics(self, identity_id: str, *, days: int | None = None, hours: int | None = None,
                              now: datetime | None = None) -> Metrics:
        raise NotImplementedError(f"{type(self).__name__} sums no range of days")

    # Not abstract, so a store written before it still loads; both stores here override the pair.
    def daily_metrics(
        self, identity_id: str, *, days: int = METRIC_DAYS, now: datetime | None = None
    ) -> builtins.list[DailyMetrics]:
        """The last ``days`` UTC days (1..30) up to ``now``, oldest first, days without usage as zeros."""
        raise NotImplementedError(f"{type(self).__name__} keeps no daily metrics")

    async def adaily_metrics(
        self, identity_id: str, *, days: int = METRIC_DAYS, now: datetime | None = None
    ) -> builtins.list[DailyMetrics]:
        raise NotImplementedError(f"{type(self).__name__} keeps no daily metrics")

    # Not abstract either: a store without hourly buckets serves the dashboard's 24 hours by day.
    def hourly_metrics(
        self, identity_id: str, *, hours: int = METRIC_HOURS, now: datetime | None = None
    ) -> builtins.list[HourlyMetrics]:
        """The last ``hours`` UTC hours (1..24) up to ``now``, oldest first, hours without usage as zeros."""
        raise NotImplementedError(f"{type(self).__name__} keeps no hourly metrics")

    async def ahourly_metrics(
        self, identity_id: str, *, hours: int = METRIC_HOURS, now: datetime | None = None
    ) -> builtins.list[HourlyMetrics]:
        raise NotImplementedError(f"{type(self).__name__} keeps no hourly metrics")

    # Not abstract: composed of the reads above; a store that can read the buckets and their sums at
    # once overrides the pair (RedisStore: one script call instead of two).
    def usage_over(self, identity_id: str, *, days: int | None = None, hours: int | None = None,
                   now: datetime | None = None) -> UsageOver:
        """The last ``days`` UTC days or ``hours`` UTC hours (one of the two): each bucket, oldest
        first (:meth:`daily_metrics` / :meth:`hourly_metrics`), and their sums (:meth:`recent_metrics`)."""
        by_hour, span = check_span(days, hours)
        now = now or datetime.now(UTC)
        points: Sequence[DailyMetrics | HourlyMetrics] = (
            self.hourly_metrics(identity_id, hours=span, now=now) if by_hour
            else self.daily_metrics(identity_id, days=span, now=now))
        return UsageOver(points, self.recent_metrics(identity_id, days=days, hours=hours, now=now))

    async def ausage_over(self, identity_id: str, *, days: int | None = None, hours: int | None = None,
                          now: datetime | None = None) -> UsageOver:
        by_hour, span = check_span(days, hours)
        now = now or datetime.now(UTC)
        points: Sequence[DailyMetrics | HourlyMetrics] = (
            await self.ahourly_metrics(identity_id, hours=span, now=now) if by_hour
            else await self.adaily_metrics(identity_id, days=span, now=now))
        return UsageOver(points, await self.arecent_metrics(identity_id, days=days, hours=hours, now=now))

    def recent_refusals(self, limit: int = 50, *, now: datetime | None = None) -> builtins.list[Refusal]:
        """The newest budget refusals (429s), newest first: a log bounded in size and age
        (:mod:`identity_middleware.stores.refusals`)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no refusal log")

    async def arecent_refusals(self, limit: int = 50, *, now: datetime | None = None) -> builtins.list[Refusal]:
        raise NotImplementedError(f"{type(self).__name__} keeps no refusal log")

    # -- the request path ------------------------------------------------------------------------
    @abc.abstractmethod
    def admit(self, request: AdmissionRequest) -> Admission:
        """Upsert/create the identity, check every budget and take the reservation, atomically."""

    @abc.abstractmethod
    async def aadmit(self, request: AdmissionRequest) -> Admission: ...

    @abc.abstractmethod
    def settle(self, settlement: Settlement) -> None:
        """Commit one request's usage exactly once and release its reservation."""

    @abc.abstractmethod
    async def asettle(self, settlement: Settlement) -> None:
        """Takes ``settlement`` before its first ``await`` (in memory, or into a write buffer), so
        that a request cancelled while this runs (a client that went away) cannot lose its usage."""

    # -- sessions (``session=``): a spend counter per identity and session value ---------------------
    def session_cost(self, external_id: str, session: str) -> int:
        """The session's spend so far, nano-USD (0 when unknown or expired)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no session spend")

    async def asession_cost(self, external_id: str, session: str) -> int:
        raise NotImplementedError(f"{type(self).__name__} keeps no session spend")

    def add_session_cost(self, external_id: str, session: str, cost: int, ttl: int) -> int:
        """Add ``cost`` (nano-USD) to the session's spend, atomically, and keep it ``ttl`` seconds
        from now; the new total."""
        raise NotImplementedError(f"{type(self).__name__} keeps no session spend")

    async def aadd_session_cost(self, external_id: str, session: str, cost: int, ttl: int) -> int:
        raise NotImplementedError(f"{type(self).__name__} keeps no session spend")

    # -- life ------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Write out anything held back (batched commits). Nothing to do by default."""

    async def aflush(self) -> None:
        """Async twin of :meth:`flush`."""

    def known_identity(self, external_id: str) -> Identity | None:
        """The identity as this process last saw it, with no round trip (``None`` if it has not, or
        does not keep them): what an outage's local allowance meters a request with."""
        return None

    @property
    def partly_down(self) -> bool:
        """Whether the store, or a part of it, is known to be down even as a call answers (a Redis
        Cluster master failing over while the others serve): the middleware ends an outage (its
        "available again" line, the local allowance) only once it is not. Never, by default."""
        return False

    def check_ready(self) -> None:
        """At startup: raise :class:`~identity_middleware.core.errors.StoreMisconfigured` if the
        store cannot work as configured, :class:`StoreUnavailable` (in words) if it cannot be
        reached now. Nothing to check by default (in memory)."""

    async def acheck_ready(self) -> None:
        """Async twin of :meth:`check_ready`."""

    def close(self) -> None:
        """Flush and release connections."""
        self.flush()

    async def aclose(self) -> None:
        await self.aflush()

    @property
    def rate_limit_storage_uri(self) -> str:
        """The ``limits`` storage URI that keeps rate limits next to this store's data."""
        return "memory://"
