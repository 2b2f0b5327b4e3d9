"""The memory store's ledger: one identity's budgets, spend per period, reservations and daily metrics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from typing import TypeVar

from ...core.admission import BudgetState, ModelUsage, Usage
from ...core.forecast import forecast, identity_span
from ...core.metrics import HourlyMetrics, hourly_from_counters, utc_hour
from ...core.models import BudgetStatus, DailyMetrics, Metrics, budget_status, daily_from_counters, metrics_from_totals
from ...core.periods import PERIODS, Period, period_bounds, period_key_map, utc_day
from ..base import METRIC_DAYS, METRIC_HOURS

_PERIOD_ORDER = {period: index for index, period in enumerate(PERIODS)}


@dataclass(slots=True)
class Day:
    cost: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0
    errors: int = 0
    unpriced: int = 0
    models: dict[str, ModelUsage] = field(default_factory=dict)

    def add(self, usage: Usage) -> None:
        """One request and its usage."""
        self.requests += 1
        self.errors += usage.error
        self.cost += usage.cost
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.unpriced += usage.unpriced
        if usage.models:
            self._add_models(usage.models)

    def merge(self, other: Day) -> None:
        """Everything ``other`` counted."""
        self.requests += other.requests
        self.errors += other.errors
        self.cost += other.cost
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.unpriced += other.unpriced
        self._add_models(other.models)

    def _add_models(self, models: dict[str, ModelUsage]) -> None:
        own = self.models
        for model, share in models.items():
            found = own.get(model)
            if found is None:
                own[model] = ModelUsage(share.requests, share.cost, share.input_tokens, share.output_tokens)
            else:
                found.merge(share)


_DAYS_KEPT = timedelta(days=METRIC_DAYS - 1)
_HOURS_KEPT = timedelta(hours=METRIC_HOURS - 1)
_HOUR = timedelta(hours=1)
When = TypeVar("When", date, datetime)


def _bucket(buckets: dict[When, Day], when: When, kept: timedelta) -> Day:
    """The bucket of ``when``, made (and those older than ``kept`` before it dropped) when missing."""
    bucket = buckets.get(when)
    if bucket is None:
        oldest = when - kept
        for stale in [key for key in buckets if key < oldest]:
            del buckets[stale]
        bucket = buckets[when] = Day()
    return bucket


@dataclass(slots=True)
class Account:
    """Everything one identity owns besides its record, in nano-USD. Call under the store's lock."""

    budgets: dict[Period, int] = field(default_factory=dict)
    # Spend per period: the identity's running total of cost less what it was when the period
    # began (``starts``, in PERIODS order), so a charge adds its cost once, not to every period. A
    # rollover, found by the period keys charged last, or a reset moves a period's start up to the
    # total. ``period_key_map`` answers the same dict all day: one identity test per charge.
    spend_keys: Mapping[Period, str] | None = None
    total: int = 0
    starts: list[int] = field(default_factory=lambda: [0] * len(PERIODS))
    reservations: dict[str, tuple[int, datetime, tuple[Period, ...]]] = field(default_factory=dict)
    days: dict[date, Day] = field(default_factory=dict)
    hours: dict[datetime, Day] = field(default_factory=dict)  # the last METRIC_HOURS UTC hours
    # The UTC hour charged last (its start and end) and what was charged in it since it was last
    # folded into its day's and its own bucket (``days``, ``hours``): most charges fall in it, and
    # then add to that one bucket, no day or hour worked out, hashed and looked up. The readers
    # fold it first (:meth:`_fold`), and so does a charge in another hour.
    current: tuple[datetime, datetime, Day] | None = field(default=None, repr=False, compare=False)

    def spent(self, period: Period, now: datetime, tz: tzinfo) -> int:
        keys, charged = period_key_map(now, tz), self.spend_keys
        if keys is charged or (charged is not None and charged[period] == keys[period]):
            return self.total - self.starts[_PERIOD_ORDER[period]]
        return 0  # nothing charged in this period yet

    def reserved(self, period: Period, now: datetime) -> int:
        if not self.reservations:
            return 0
        expired = [rid for rid, (_, expires, _) in self.reservations.items() if expires <= now]
        for rid in expired:
            del self.reservations[rid]
        return sum(amount for amount, _, periods in self.reservations.values() if period in periods)

    def blocking(self, now: datetime, estimate: int, tz: tzinfo) -> list[BudgetState]:
        """The budgets that refuse ``estimate`` now; states are built only for those (hot path)."""
        blocking = []
        for period, amount in self.budgets.items():
            spent = self.spent(period, now, tz)
            reserved = self.reserved(period, now)
            used = spent + reserved
            if used >= amount or (estimate > 0 and used + estimate > amount):
                start, end = period_bounds(period, now, tz)
                blocking.append(BudgetState(period, amount, spent, reserved, start, end))
        return blocking

    def statuses(self, now: datetime, tz: tzinfo) -> list[BudgetStatus]:
        statuses = []
        recent, since = self.recent_cost(now), identity_span(now)
        for period in sorted(self.budgets, key=_PERIOD_ORDER.__getitem__):
            start, end = period_bounds(period, now, tz)
            amount, spent = self.budgets[period], self.spent(period, now, tz)
            statuses.append(budget_status(period, amount, spent, self.reserved(period, now), start, end,
                                          forecast(amount, spent, recent, since, now, end)))
        return statuses

    def recent_cost(self, now: datetime) -> int:
        """The identity's spend of the previous UTC day and today so far (what forecasts rate it by)."""
        self._fold()
        today = utc_day(now)
        days = self.days
        return sum(day.cost for day in (days.get(today), days.get(today - timedelta(days=1))) if day is not None)

    def reserve(self, reservation_id: str, estimate: int, expires: datetime) -> None:
        """Hold ``estimate`` against every budget the identity has now."""
        self.reservations[reservation_id] = (estimate, expires, tuple(self.budgets))

    def reset(self, period: Period) -> None:
        """Zero the period's spend and release what reservations held against it."""
        self.starts[_PERIOD_ORDER[period]] = self.total
        for rid in [rid for rid, (_, _, periods) in self.reservations.items() if period in periods]:
            amount, expires, periods = self.reservations[rid]
            rest = tuple(p for p in periods if p is not period)
            if rest:
                self.reservations[rid] = (amount, expires, rest)
            else:
                del self.reservations[rid]

    def _current(self, now: datetime) -> Day:
        """The bucket of what is charged in ``now``'s UTC hour until it is folded (see ``current``)."""
        current = self.current
        if current is not None and current[0] <= now < current[1]:
            return current[2]
        self._fold()
        hour = utc_hour(now)
        pending = Day()
        self.current = (hour, hour + _HOUR, pending)
        return pending

    def _fold(self) -> None:
        """Add what the current hour gathered to its day's and its own bucket (made when missing)."""
        current = self.current
        if current is None or not current[2].requests:  # every charge counts a request: nothing to fold
            return
        hour, end, pending = current
        _bucket(self.days, utc_day(hour), _DAYS_KEPT).merge(pending)
        _bucket(self.hours, hour, _HOURS_KEPT).merge(pending)
        self.current = (hour, end, Day())

    def count(self, now: datetime, tz: tzinfo, *, cost: int = 0, input_tokens: int = 0, output_tokens: int = 0,
              error: bool = False, unpriced: int = 0, models: dict[str, ModelUsage] | None = None) -> None:
        """:meth:`charge` with the usage given field by field (a refused request: ``error=True``)."""
        self.charge(now, Usage(cost, input_tokens, output_tokens, models or {}, error, unpriced),
                    period_key_map(now, tz) if cost else {})

    def charge(self, now: datetime, usage: Usage, keys: Mapping[Period, str]) -> None:
        """One request: its usage into the metrics of its UTC day and hour, its cost into every
        period's spend. ``keys``: :func:`period_key_map` at ``now`` in the store's zone (read only
        when the request cost something), which the settlement computes once for the scoped budgets too."""
        self._current(now).add(usage)
        if usage.cost:
            if keys is not self.spend_keys:  # a new day (or the first charge): the periods that rolled over start
                charged = self.spend_keys
                for index, period in enumerate(PERIODS):
                    if charged is None or charged[period] != keys[period]:
                        self.starts[index] = self.total
                self.spend_keys = keys
            self.total += usage.cost

    def hourly(self, now: datetime, hours: int) -> list[HourlyMetrics]:
        """The last ``hours`` UTC hours up to ``now``, oldest first, zeros where nothing was counted."""
        self._fold()
        current = utc_hour(now)
        result = []
        for offset in range(hours - 1, -1, -1):
            when = current - timedelta(hours=offset)
            d = self.hours.get(when) or Day()
            result.append(hourly_from_counters(when, [d.cost, d.input_tokens, d.output_tokens, d.requests, d.errors]))
        return result

    def metrics(self, now: datetime, span: int = METRIC_DAYS) -> Metrics:
        """Totals over the last ``span`` UTC days up to ``now``."""
        self._fold()
        today = utc_day(now)
        oldest = today - timedelta(days=span - 1)
        return _totals([d for when, d in self.days.items() if oldest <= when <= today])

    def recent_hours(self, now: datetime, hours: int) -> Metrics:
        """Totals over the last ``hours`` UTC hours up to ``now`` (per model too)."""
        self._fold()
        current = utc_hour(now)
        oldest = current - timedelta(hours=hours - 1)
        return _totals([d for when, d in self.hours.items() if oldest <= when <= current])

    def daily(self, now: datetime, days: int) -> list[DailyMetrics]:
        """The last ``days`` UTC days up to ``now``, oldest first, zeros where nothing was counted."""
        self._fold()
        today = utc_day(now)
        result = []
        for offset in range(days - 1, -1, -1):
            when = today - timedelta(days=offset)
            d = self.days.get(when) or Day()
            result.append(daily_from_counters(when, [d.cost, d.input_tokens, d.output_tokens, d.requests, d.errors]))
        return result


def _totals(buckets: list[Day]) -> Metrics:
    models: dict[str, ModelUsage] = {}
    for d in buckets:
        for model, share in d.models.items():
            models.setdefault(model, ModelUsage()).merge(share)
    return metrics_from_totals(sum(d.cost for d in buckets), sum(d.input_tokens for d in buckets),
                               sum(d.output_tokens for d in buckets), sum(d.requests for d in buckets),
                               sum(d.errors for d in buckets), sum(d.unpriced for d in buckets), models)
