"""Forecasts, pure: the rate, the projection, its rounding and its bounds (core/forecast.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from identity_middleware.core.forecast import MIN_SPAN, forecast, identity_span, scoped_span

NOW = datetime(2026, 3, 10, 12, tzinfo=UTC)
USD = 1_000_000_000


def test_the_rate_is_usd_a_day_floored_to_the_nano_dollar() -> None:
    made = forecast(10 * USD, 0, 1 * USD, NOW - timedelta(days=3), NOW, None)
    assert made.burn_rate == Decimal("0.333333333")


def test_the_projection_is_rounded_up_to_the_second() -> None:
    made = forecast(10 * USD + 1, 0, 1 * USD, NOW - timedelta(days=1), NOW, None)
    assert made.exhausts_at == NOW + timedelta(days=10, seconds=1)


def test_a_projection_past_the_reset_or_a_year_away_is_none() -> None:
    assert forecast(3 * USD, 0, 1 * USD, NOW - timedelta(days=1), NOW, NOW + timedelta(days=3)).exhausts_at is None
    assert forecast(3 * USD, 0, 1 * USD, NOW - timedelta(days=1), NOW,
                    NOW + timedelta(days=3, seconds=1)).exhausts_at == NOW + timedelta(days=3)
    assert forecast(367 * USD, 0, 1 * USD, NOW - timedelta(days=1), NOW, None).exhausts_at is None


def test_a_spent_budget_runs_out_now_and_one_without_spending_never() -> None:
    assert forecast(USD, USD, 0, NOW - timedelta(days=1), NOW, None).exhausts_at == NOW
    idle = forecast(USD, 0, 0, NOW - timedelta(days=1), NOW, None)
    assert idle.exhausts_at is None and idle.burn_rate == 0
    assert forecast(None, 5 * USD, USD, NOW - timedelta(days=1), NOW, None).exhausts_at is None


def test_recent_spending_starts_at_the_previous_utc_days_midnight() -> None:
    assert identity_span(NOW) == datetime(2026, 3, 9, tzinfo=UTC)
    assert identity_span(datetime(2026, 3, 10, 0, 30, tzinfo=UTC)) == datetime(2026, 3, 9, tzinfo=UTC)


def test_a_scoped_budgets_rate_starts_at_its_period_or_creation_and_spans_an_hour_at_least() -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    assert scoped_span(start, start - timedelta(days=9), NOW) == start
    assert scoped_span(start, NOW - timedelta(hours=5), NOW) == NOW - timedelta(hours=5)
    assert scoped_span(start, NOW + timedelta(days=1), NOW) == start  # a creation after now is not counted
    assert scoped_span(None, NOW - timedelta(minutes=5), NOW) == NOW - MIN_SPAN


@given(limit=st.integers(1, 10**18), consumed=st.integers(0, 10**18), recent=st.integers(1, 10**15),
       hours=st.integers(1, 24 * 60))
def test_at_the_rate_the_budget_is_spent_by_exhausts_at_and_not_a_second_before(
        limit: int, consumed: int, recent: int, hours: int) -> None:
    span = timedelta(hours=hours)
    made = forecast(limit, consumed, recent, NOW - span, NOW, None)
    if made.exhausts_at is None or consumed >= limit:
        return
    elapsed = (made.exhausts_at - NOW) // timedelta(microseconds=1)
    span_us = span // timedelta(microseconds=1)
    assert consumed * span_us + recent * elapsed >= limit * span_us  # spent by then
    before = elapsed - 1_000_000
    assert before < 0 or consumed * span_us + recent * before < limit * span_us  # a second earlier it was not
