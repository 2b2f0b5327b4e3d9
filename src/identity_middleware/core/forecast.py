"""Forecasts: when a budget runs out at its recent rate of spending (pure, exact integer arithmetic).

"Recent" is what the stores already keep, the same on every store:

- an identity's budget (any period, one-time included) spends at the identity's rate: the cost of
  the identity's previous UTC day and of today so far (its daily metrics), over the time they cover
  (24 hours plus the time since 00:00 UTC), so the rate never rests on less than a day;
- a model, provider or workspace budget keeps no history but its consumption this period: the rate is
  that consumption over the time since its period started (a one-time budget: since it was created;
  a budget created in its period: since its creation), at least an hour.

Both are computed at the minute: ``now`` and the start of the recent spending are floored to the
minute, so a forecast read twice within a minute is the same.

``burn_rate`` is in USD per day (nano-USD per day floored, as a ``Decimal``). ``exhausts_at`` is
``now + (limit - consumed) / rate``, rounded up to the second, when that falls before the budget's
period resets (a one-time budget, which never resets: within a year); ``now`` when the budget is
already spent; else ``None``: nothing is being spent, the budget has no amount, or it lasts until it
resets. A budget whose ``exhausts_at`` is not ``None`` is *forecast to run out*.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, field_serializer

from .money import format_usd, from_nanos

__all__ = ["DAY", "HORIZON", "MIN_SPAN", "Forecast", "forecast", "identity_span", "scoped_span"]

DAY = timedelta(days=1)
HORIZON = timedelta(days=366)  # further than this, a projection says nothing: exhausts_at is None
MIN_SPAN = timedelta(hours=1)  # a rate from less than an hour of a period would swing wildly
_US_PER_DAY = 86_400_000_000


def _minute(moment: datetime) -> datetime:
    """``moment`` floored to the minute: a forecast read twice within a minute is the same forecast
    (replies keep their ETag; a poll gets its 304)."""
    return moment.replace(second=0, microsecond=0)


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class Forecast(BaseModel):
    """A budget's projection: ``exhausts_at`` (UTC, whole seconds, or ``None``) and ``burn_rate`` (USD a day)."""

    model_config = ConfigDict(frozen=True)

    exhausts_at: datetime | None
    burn_rate: Decimal

    @field_serializer("burn_rate")
    def _dump_rate(self, value: Decimal) -> str:
        return format_usd(value)


def forecast(limit: int | None, consumed: int, recent: int, since: datetime, now: datetime,
             resets_at: datetime | None) -> Forecast:
    """The forecast of a budget of ``limit`` nano-USD (``None``: no amount) that has ``consumed`` this
    period, which ends at ``resets_at`` (``None``: never), from ``recent`` nano-USD spent between
    ``since`` and ``now``."""
    now, since = _minute(now), _minute(since)
    span = _micros(now - since)
    if span <= 0 or recent < 0:
        recent, span = 0, 1
    rate = from_nanos(recent * _US_PER_DAY // span)
    if limit is None:
        return Forecast(exhausts_at=None, burn_rate=rate)
    remaining = limit - consumed
    if remaining <= 0:
        return Forecast(exhausts_at=now, burn_rate=rate)
    if recent == 0:
        return Forecast(exhausts_at=None, burn_rate=rate)
    wait = -(-remaining * span // recent)  # microseconds, rounded up
    if wait > _micros(HORIZON):
        return Forecast(exhausts_at=None, burn_rate=rate)
    at = now + timedelta(microseconds=wait)
    if at.microsecond:
        at = at.replace(microsecond=0) + timedelta(seconds=1)
    if resets_at is not None and at >= resets_at:
        return Forecast(exhausts_at=None, burn_rate=rate)
    return Forecast(exhausts_at=at, burn_rate=rate)


def identity_span(now: datetime) -> datetime:
    """Where an identity's recent spending starts: 00:00 UTC of the day before ``now``'s UTC day."""
    utc = now.astimezone(UTC)
    return datetime(utc.year, utc.month, utc.day, tzinfo=UTC) - DAY


def scoped_span(period_start: datetime | None, created_at: datetime, now: datetime) -> datetime:
    """Where a model, provider or workspace budget's recent spending starts: its period's start or its
    creation, whichever is later (a creation after ``now``, as a test's clock may have it, is not
    counted), and at least :data:`MIN_SPAN` before ``now``."""
    start = period_start
    if created_at <= now and (start is None or created_at > start):
        start = created_at
    latest = now - MIN_SPAN
    return latest if start is None or start > latest else start
