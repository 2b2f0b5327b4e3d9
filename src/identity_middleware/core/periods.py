"""Calendar periods: where the current day, week, month or year starts and ends, in a timezone."""

from __future__ import annotations

import enum
import math
from datetime import UTC as UTC  # re-exported: the package's one UTC
from datetime import date, datetime, time, timedelta, tzinfo


class Period(str, enum.Enum):
    """A budget period; a ``str`` enum, so ``"daily"`` is accepted wherever a ``Period`` is."""

    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    YEARLY = "yearly"

    def __str__(self) -> str:
        return self.value



def _first_day(period: Period, day: date) -> date:
    if period is Period.DAILY:
        return day
    if period is Period.WEEKLY:
        return day - timedelta(days=day.weekday())  # Monday
    if period is Period.MONTHLY:
        return day.replace(day=1)
    return day.replace(month=1, day=1)


def _next_first_day(period: Period, first: date) -> date:
    if period is Period.DAILY:
        return first + timedelta(days=1)
    if period is Period.WEEKLY:
        return first + timedelta(days=7)
    if period is Period.MONTHLY:
        return (first.replace(year=first.year + 1, month=1) if first.month == 12
                else first.replace(month=first.month + 1))
    return first.replace(year=first.year + 1)


def _day_start(day: date, tz: tzinfo) -> datetime:
    """The first instant (UTC) whose local date is ``day`` or later: usually local midnight.

    Midnight can fall in a DST gap (America/Santiago, America/Havana, Toronto in 1919): the day
    then starts when the clocks jump, which reading midnight with either offset can miss. Where
    the clocks go back across midnight (America/St_Johns until 2011) the first midnight counts.
    """
    midnight = datetime.combine(day, time(0))
    first = midnight.replace(tzinfo=tz).astimezone(UTC)  # fold=0: the first of two midnights
    if first.astimezone(tz).replace(tzinfo=None) == midnight:
        return first
    # In a gap: fold=1 reads midnight before the jump, fold=0 after it; the jump lies between,
    # on a whole second (tz transitions are), so search it.
    low = midnight.replace(tzinfo=tz, fold=1).astimezone(UTC)
    low, high = min(low, first), max(low, first)
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) // 2
        middle = middle.replace(microsecond=0)
        if middle <= low:
            break
        if middle.astimezone(tz).date() >= day:
            high = middle
        else:
            low = middle
    return high


def _compute(period: Period, now: datetime, tz: tzinfo) -> tuple[date, datetime, datetime]:
    first = _first_day(period, now.astimezone(tz).date())
    start = _day_start(first, tz)
    end = _day_start(_next_first_day(period, first), tz)
    # Clocks going back across midnight show the old date again after the new period began.
    while now >= end:
        first = _next_first_day(period, first)
        start, end = end, _day_start(_next_first_day(period, first), tz)
    return first, start, end


# The current window of each (period, timezone): every request asks about "now", which almost
# always falls in the window computed for the previous request, so the calendar arithmetic
# (and its DST search) runs once per period instead of several times per request.
_windows: dict[tuple[Period, tzinfo], tuple[date, datetime, datetime]] = {}
_keys: dict[tuple[Period, date], str] = {}


def _period(period: Period, now: datetime, tz: tzinfo) -> tuple[date, datetime, datetime]:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    window = _windows.get((period, tz))
    if window is not None and window[1] <= now < window[2]:
        return window
    window = _compute(period, now, tz)
    if window[1] <= now:  # cache only a window that contains now (always, barring odd clocks)
        _windows[(period, tz)] = window
    return window


def period_bounds(period: Period | str, now: datetime, tz: tzinfo = UTC) -> tuple[datetime, datetime]:
    """``(start, end)`` of the period containing ``now``, as aware UTC datetimes."""
    _, start, end = _period(period if isinstance(period, Period) else Period(period), now, tz)
    return start, end


def period_start(period: Period | str, now: datetime, tz: tzinfo = UTC) -> datetime:
    return period_bounds(period, now, tz)[0]


def period_end(period: Period | str, now: datetime, tz: tzinfo = UTC) -> datetime:
    """The instant the next period starts (the budget's ``resets_at``)."""
    return period_bounds(period, now, tz)[1]


def seconds_to_reset(period: Period | str, now: datetime, tz: tzinfo = UTC) -> int:
    """Whole seconds until the period resets, rounded up, at least 1 (for ``Retry-After``)."""
    remaining = (period_end(period, now, tz) - now).total_seconds()
    return max(1, math.ceil(remaining))


def period_key(period: Period | str, now: datetime, tz: tzinfo = UTC) -> str:
    """A stable name of the current period, its local start date: ``daily:2026-11-22``."""
    period = period if isinstance(period, Period) else Period(period)
    first, _, _ = _period(period, now, tz)
    key = _keys.get((period, first))
    if key is None:
        if len(_keys) > 4096:
            _keys.clear()
        key = _keys[(period, first)] = f"{period.value}:{first.isoformat()}"
    return key


PERIODS: tuple[Period, ...] = tuple(Period)
# Every period's key at once, valid until the first of them ends: a settle adds its cost to all four.
_all_keys: dict[tzinfo, tuple[datetime, datetime, tuple[tuple[Period, str], ...], dict[Period, str]]] = {}


def _current(now: datetime, tz: tzinfo) -> tuple[datetime, datetime, tuple[tuple[Period, str], ...], dict[Period, str]]:
    cached = _all_keys.get(tz)
    if cached is not None and cached[0] <= now < cached[1]:
        return cached
    keys = tuple((period, period_key(period, now, tz)) for period in PERIODS)
    windows = [_period(period, now, tz) for period in PERIODS]
    found = (max(window[1] for window in windows), min(window[2] for window in windows), keys, dict(keys))
    if found[0] <= now < found[1]:
        _all_keys[tz] = found
    return found


def period_keys(now: datetime, tz: tzinfo = UTC) -> tuple[tuple[Period, str], ...]:
    """``((Period.DAILY, "daily:2026-11-22"), ...)`` for every period, at ``now``."""
    return _current(now, tz)[2]


def key_of(period: Period, now: datetime, tz: tzinfo = UTC) -> str:
    """:func:`period_key` for a :class:`Period` member, from the keys of every period at once (hot paths)."""
    return _current(now, tz)[3][period]


def period_key_map(now: datetime, tz: tzinfo = UTC) -> dict[Period, str]:
    """``{Period.DAILY: "daily:2026-11-22", ...}``: :func:`key_of` of every period at once."""
    cached = _all_keys.get(tz)  # _current's test, here too: the memory store asks twice per request
    if cached is not None and cached[0] <= now < cached[1]:
        return cached[3]
    return _current(now, tz)[3]


def utc_day(now: datetime) -> date:
    return now.date() if now.tzinfo is UTC else now.astimezone(UTC).date()
