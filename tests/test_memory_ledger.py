"""The memory store's ledger: spend per calendar period rolls over only the periods that ended."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from identity_middleware.core.admission import ModelUsage
from identity_middleware.core.periods import UTC, Period
from identity_middleware.stores.memory.budgets import Scoped, bucket_of
from identity_middleware.stores.memory.ledger import Account

SUNDAY = datetime(2026, 3, 29, 12, tzinfo=UTC)
MONDAY = datetime(2026, 3, 30, 12, tzinfo=UTC)  # a new day and week, the same month
WEDNESDAY = datetime(2026, 4, 1, 12, tzinfo=UTC)  # a new day and month, the same week


def spent(account: Account, now: datetime) -> dict[str, int]:
    return {period.value: account.spent(period, now, UTC) for period in Period}


def test_each_period_keeps_its_spend_until_it_ends() -> None:
    account = Account()
    account.count(SUNDAY, UTC, cost=1)
    assert spent(account, SUNDAY) == {"daily": 1, "weekly": 1, "monthly": 1, "yearly": 1}
    account.count(MONDAY, UTC, cost=2)
    assert spent(account, MONDAY) == {"daily": 2, "weekly": 2, "monthly": 3, "yearly": 3}
    account.count(WEDNESDAY, UTC, cost=4)
    assert spent(account, WEDNESDAY) == {"daily": 4, "weekly": 6, "monthly": 4, "yearly": 7}


def test_a_period_nothing_was_charged_in_yet_has_spent_nothing() -> None:
    account = Account()
    assert spent(account, SUNDAY) == dict.fromkeys(("daily", "weekly", "monthly", "yearly"), 0)
    account.count(SUNDAY, UTC, cost=5)
    assert spent(account, MONDAY) == {"daily": 0, "weekly": 0, "monthly": 5, "yearly": 5}  # asked before charged


def test_a_request_without_cost_rolls_nothing_over() -> None:
    account = Account()
    account.count(SUNDAY, UTC, cost=5)
    account.count(MONDAY, UTC)  # counted as a request only
    assert spent(account, SUNDAY)["daily"] == 5
    assert account.daily(MONDAY, 1)[0].requests == 1


def test_reset_zeroes_one_period_only() -> None:
    account = Account()
    account.count(SUNDAY, UTC, cost=5)
    account.reset(Period.MONTHLY)
    assert spent(account, SUNDAY) == {"daily": 5, "weekly": 5, "monthly": 0, "yearly": 5}
    account.count(SUNDAY, UTC, cost=1)
    assert spent(account, SUNDAY) == {"daily": 6, "weekly": 6, "monthly": 1, "yearly": 6}


def test_periods_follow_the_store_timezone() -> None:
    tokyo = ZoneInfo("Asia/Tokyo")  # 2026-03-29 12:00 UTC is 21:00 in Tokyo; 16:00 UTC is the next day there
    account = Account()
    account.count(SUNDAY, tokyo, cost=1)
    later = datetime(2026, 3, 29, 16, tzinfo=UTC)
    account.count(later, tokyo, cost=2)
    assert account.spent(Period.DAILY, later, tokyo) == 2
    assert account.spent(Period.MONTHLY, later, tokyo) == 3
    assert account.spent(Period.DAILY, later, UTC) == 0  # asked in another zone: not the day it was charged in


EDGES = st.sampled_from([edge + step for edge in (-10_000, 0, 10_000, 20_000) for step in (-1, 0, 1)])


@given(st.lists(st.one_of(st.integers(min_value=-30_000, max_value=30_000), EDGES), min_size=1, max_size=40),
       st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]))
def test_the_remembered_bucket_is_the_one_the_clock_gives(offsets_ms: list[int], tz: timezone) -> None:
    """Scoped.bucket answers from the last bucket while ``now`` stays in it; in any order, in any
    zone, across bucket edges, it answers what ``bucket_of`` computes."""
    scoped = Scoped()
    edge = datetime(2026, 11, 29, 21, 0, 0, tzinfo=UTC)  # a bucket's first instant
    for offset in offsets_ms:
        now = (edge + timedelta(milliseconds=offset)).astimezone(tz)
        assert scoped.bucket(now) == bucket_of(now) == (int(edge.timestamp()) * 1000 + offset) // 10_000


# Charges up to a day before the last hour (nothing pruned), in any order, in any zone, each
# optionally followed by a read (which folds the current hour's bucket into its day and hour).
CHARGES = st.lists(st.tuples(st.integers(min_value=0, max_value=24 * 60 - 1), st.integers(min_value=0, max_value=9),
                             st.booleans()), min_size=1, max_size=30)


@given(CHARGES, st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]))
def test_hours_and_days_count_every_charge_once(charges: list[tuple[int, int, bool]], tz: timezone) -> None:
    """Whatever the order of charges across hour and day edges, and however reads interleave
    with them, each UTC hour and day counts what was charged in it, once (per model too)."""
    start = datetime(2026, 3, 29, 12, 0, tzinfo=UTC)  # the last hour starts a day later
    last = start + timedelta(hours=23, minutes=59)
    account = Account()
    hours: dict[datetime, tuple[int, int]] = {}
    days: dict[object, tuple[int, int]] = {}
    for minute, cost, read in charges:
        when = (start + timedelta(minutes=minute)).astimezone(tz)
        account.count(when, UTC, cost=cost, models={"m": ModelUsage(1, cost, 0, 0)})
        hour, day = start + timedelta(hours=minute // 60), when.astimezone(UTC).date()
        hours[hour] = (hours.get(hour, (0, 0))[0] + 1, hours.get(hour, (0, 0))[1] + cost)
        days[day] = (days.get(day, (0, 0))[0] + 1, days.get(day, (0, 0))[1] + cost)
        if read:
            account.hourly(last, 24)
    hourly = {h.hour: (h.requests, h.cost) for h in account.hourly(last, 24) if h.requests}
    assert hourly == {hour: (requests, Decimal(cost) / 10**9) for hour, (requests, cost) in hours.items()}
    daily = {d.day: (d.requests, d.cost) for d in account.daily(last, 2) if d.requests}
    assert daily == {day: (requests, Decimal(cost) / 10**9) for day, (requests, cost) in days.items()}
    totals = account.metrics(last)
    assert totals.total_requests == len(charges)
    [model] = totals.models
    assert (model.model, model.requests) == ("m", len(charges))
    assert model.cost == Decimal(sum(cost for _, cost, _ in charges)) / 10**9
