"""Scoped budgets at admission and settlement: which block a request, which alerts a usage crosses."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .admission import BudgetBlock
from .budgets import Dimension, ScopedBudget, ScopeKind, budget_bounds
from .forecast import Forecast, forecast, identity_span, scoped_span
from .money import format_usd, from_nanos, to_nanos
from .periods import PERIODS

__all__ = ["FORECAST_EVENT", "ScopedState", "budget_forecast", "crossed", "decide_scoped", "forecast_event",
           "forecast_watched", "threshold_event"]

FORECAST_EVENT = "budget.forecast_exhaustion"


@dataclass(slots=True)  # one per budget per request: a frozen dataclass takes ~3x as long to build
class ScopedState:
    """One budget's consumption at admission time (nano-USD, tokens, requests in the last 60 s).

    ``start``/``end`` bound its current period; a one-time budget has ``end`` None (never resets).
    """

    budget: ScopedBudget
    spent: int
    reserved: int
    tokens: int
    requests: int
    start: datetime | None
    end: datetime | None

    @property
    def limit(self) -> int | None:
        return self.budget.amount_nanos

    def blocks(self, estimate: int) -> bool:
        """``>=`` at a limit blocks (amount, tokens, requests per minute); an estimate must fit."""
        limit = self.limit
        if limit is not None:
            used = self.spent + self.reserved
            if used >= limit or (estimate > 0 and used + estimate > limit):
                return True
        token_limit = self.budget.token_limit
        if token_limit is not None and self.tokens >= token_limit:
            return True
        rpm = self.budget.requests_per_minute
        return rpm is not None and self.requests >= rpm


def decide_scoped(states: list[ScopedState], estimate: int, now: datetime) -> BudgetBlock | None:
    """``None`` when every budget admits; else the blocking budget that resets last (one-time last of all;
    of those resetting at the same instant, the longer period)."""
    blocking = [state for state in states if state.blocks(estimate)]
    if not blocking:
        return None
    last = max(blocking, key=lambda state: (state.end is None, state.end or now, _length(state.budget)))
    wait = 60 if last.end is None else max(1, math.ceil((last.end - now).total_seconds()))
    if last.budget.requests_per_minute is not None and last.requests >= last.budget.requests_per_minute \
            and not _over_money_or_tokens(last, estimate):
        wait = 60
    budget = last.budget
    return BudgetBlock(
        period=budget.period.calendar or budget.period,
        amount=budget.amount if budget.amount is not None else from_nanos(0),
        spent=from_nanos(last.spent), reserved=from_nanos(last.reserved), resets_at=last.end, retry_after=wait,
        budget_id=budget.id, scope=budget.scope.value, token_limit=budget.token_limit, tokens=last.tokens)


def _length(budget: ScopedBudget) -> int:
    """How long a budget's period is, as a rank (daily 0 ... yearly 3; one-time after them all)."""
    calendar = budget.period.calendar
    return len(PERIODS) if calendar is None else PERIODS.index(calendar)


def _over_money_or_tokens(state: ScopedState, estimate: int) -> bool:
    limit = state.limit
    if limit is not None and (state.spent + state.reserved >= limit
                              or (estimate > 0 and state.spent + state.reserved + estimate > limit)):
        return True
    return state.budget.token_limit is not None and state.tokens >= state.budget.token_limit


def crossed(budget: ScopedBudget, before: tuple[int, int], after: tuple[int, int]) -> list[tuple[int, Dimension]]:
    """The alert thresholds (percent, dimension) that usage from ``before`` to ``after`` (cost
    nanos, tokens) reached. The store decides atomically which of them fire (once per period)."""
    reached = []
    for alert in budget.alerts:
        if alert.dimension is Dimension.COST:
            limit, old, new = (None if budget.amount is None else to_nanos(budget.amount)), before[0], after[0]
        else:
            limit, old, new = budget.token_limit, before[1], after[1]
        if limit and new * 100 >= alert.threshold_percent * limit and old * 100 < alert.threshold_percent * limit:
            reached.append((alert.threshold_percent, alert.dimension))
    return reached


def reached(budget: ScopedBudget, consumed: tuple[int, int]) -> list[tuple[int, Dimension]]:
    """Every alert threshold ``consumed`` (cost nanos, tokens) is at or past."""
    return crossed(budget, (-1, -1), consumed) if consumed != (0, 0) else []


def threshold_event(budget: ScopedBudget, percent: int, dimension: Dimension, consumed: tuple[int, int],
                    start: datetime | None, end: datetime | None, identity: str | None) -> dict[str, Any]:
    """The ``budget.threshold_reached`` event a notifier receives (money as decimal strings)."""
    if dimension is Dimension.COST:
        limit: str | int | None = format_usd(budget.amount) if budget.amount is not None else None
        used: str | int = format_usd(from_nanos(consumed[0]))
    else:
        limit, used = budget.token_limit, consumed[1]
    return {
        "type": "budget.threshold_reached",
        "budget_id": budget.id,
        "scope": {"kind": budget.scope.value, "target": budget.target},
        "period": budget.period.value,
        "threshold_percent": percent,
        "dimension": dimension.value,
        "limit": limit,
        "consumed": used,
        "period_start": start.isoformat() if start else None,
        "resets_at": end.isoformat() if end else None,
        "identity": identity,
        "notifier_ids": sorted({notifier for alert in budget.alerts if alert.threshold_percent == percent
                                and alert.dimension is dimension for notifier in alert.notifier_ids}),
    }


def budget_forecast(budget: ScopedBudget, consumed: int, identity_recent: int, now: datetime, tz: Any) -> Forecast:
    """A budget's forecast from what it ``consumed`` this period (nano-USD): an identity's budget at
    the rate of ``identity_recent``, its identity's spend since :func:`~.forecast.identity_span`;
    any other budget at the rate of its consumption this period (see :mod:`.forecast`)."""
    _, start, end = budget_bounds(budget, now, tz)
    if budget.scope is ScopeKind.IDENTITY:
        return forecast(budget.amount_nanos, consumed, identity_recent, identity_span(now), now, end)
    return forecast(budget.amount_nanos, consumed, consumed, scoped_span(start, budget.created_at, now), now, end)


def forecast_watched(budget: ScopedBudget) -> bool:
    """Whether ``budget`` asks for the forecast alert (and has an amount to run out of): once per
    period, when its forecast has it run out before the period ends."""
    return budget.forecast_alert is not None and budget.amount is not None


def forecast_event(budget: ScopedBudget, projected: Forecast, consumed: int, start: datetime | None,
                   end: datetime | None, identity: str | None) -> dict[str, Any]:
    """The ``budget.forecast_exhaustion`` event: the budget runs out before its period ends at its
    recent rate (money as decimal strings; ``exhausts_at`` ISO 8601)."""
    exhausts = projected.exhausts_at
    return {
        "type": FORECAST_EVENT,
        "budget_id": budget.id,
        "scope": {"kind": budget.scope.value, "target": budget.target},
        "period": budget.period.value,
        "limit": format_usd(budget.amount) if budget.amount is not None else None,
        "consumed": format_usd(from_nanos(consumed)),
        "burn_rate": format_usd(projected.burn_rate),
        "exhausts_at": exhausts.isoformat().replace("+00:00", "Z") if exhausts is not None else None,
        "period_start": start.isoformat() if start else None,
        "resets_at": end.isoformat() if end else None,
        "identity": identity,
        "notifier_ids": sorted(set(budget.forecast_alert.notifier_ids)) if budget.forecast_alert else [],
    }
