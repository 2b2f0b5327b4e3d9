"""Calendar periods: day 00:00, week from Monday, month from the 1st, year from Jan 1, in any tz."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from identity_middleware.core.periods import (
    Period,
    period_bounds,
    period_end,
    period_key,
    period_start,
    seconds_to_reset,
)

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
SANTIAGO = ZoneInfo("America/Santiago")
HAVANA = ZoneInfo("America/Havana")
HOUR = timedelta(hours=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def local(tz: ZoneInfo, *args: int) -> datetime:
    return datetime(*args, tzinfo=tz)  # type: ignore[misc]


# --- boundaries in UTC -------------------------------------------------------------------------


def test_a_day_runs_from_midnight_to_the_next_midnight() -> None:
    assert period_bounds("daily", utc(2026, 11, 22, 15, 30)) == (utc(2026, 11, 22), utc(2026, 11, 23))


def test_a_week_starts_on_monday() -> None:
    # 2026-11-22 is a Sunday: its week began on Monday the 16th.
    assert period_bounds(Period.WEEKLY, utc(2026, 11, 22, 23, 59)) == (utc(2026, 11, 16), utc(2026, 11, 23))


def test_monday_itself_starts_a_new_week() -> None:
    assert period_start("weekly", utc(2026, 11, 23, 0, 0, 1)) == utc(2026, 11, 23)


def test_a_month_starts_on_the_first() -> None:
    assert period_bounds("monthly", utc(2026, 11, 22)) == (utc(2026, 11, 1), utc(2026, 12, 1))


def test_a_year_starts_on_january_first() -> None:
    assert period_bounds("yearly", utc(2026, 7, 4)) == (utc(2026, 1, 1), utc(2027, 1, 1))


def test_the_instant_at_the_boundary_belongs_to_the_new_period() -> None:
    boundary = utc(2026, 12, 1)
    assert period_start("monthly", boundary) == boundary
    assert period_end("monthly", boundary) == utc(2027, 1, 1)


def test_the_instant_just_before_the_boundary_belongs_to_the_old_period() -> None:
    assert period_end("daily", utc(2026, 11, 22, 23, 59, 59, 999999)) == utc(2026, 11, 23)


def test_period_accepts_its_string_value() -> None:
    assert period_bounds("weekly", utc(2026, 1, 7)) == period_bounds(Period.WEEKLY, utc(2026, 1, 7))


def test_an_unknown_period_is_refused() -> None:
    with pytest.raises(ValueError):
        period_bounds("hourly", utc(2026, 1, 1))


def test_a_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        period_bounds("daily", datetime(2026, 1, 1, 12))


def test_bounds_are_returned_in_utc() -> None:
    start, end = period_bounds("daily", local(AMSTERDAM, 2026, 6, 1, 12), AMSTERDAM)
    assert start.utcoffset() == timedelta(0)
    assert end.utcoffset() == timedelta(0)


# --- month ends and leap years -----------------------------------------------------------------


def test_january_31_is_followed_by_february_1() -> None:
    assert period_end("daily", utc(2026, 1, 31, 12)) == utc(2026, 2, 1)


def test_january_ends_on_february_1() -> None:
    assert period_end("monthly", utc(2026, 1, 31, 23)) == utc(2026, 2, 1)


def test_february_of_a_non_leap_year_ends_after_the_28th() -> None:
    assert period_end("daily", utc(2026, 2, 28, 1)) == utc(2026, 3, 1)
    assert period_bounds("monthly", utc(2026, 2, 14)) == (utc(2026, 2, 1), utc(2026, 3, 1))


def test_february_of_a_leap_year_has_a_29th() -> None:
    assert period_end("daily", utc(2024, 2, 28, 1)) == utc(2024, 2, 29)
    assert period_bounds("daily", utc(2024, 2, 29, 12)) == (utc(2024, 2, 29), utc(2024, 3, 1))


def test_1900_is_not_a_leap_year() -> None:
    assert period_end("daily", utc(1900, 2, 28, 1)) == utc(1900, 3, 1)


def test_2000_is_a_leap_year() -> None:
    assert period_end("daily", utc(2000, 2, 28, 1)) == utc(2000, 2, 29)


def test_december_31_is_followed_by_january_1() -> None:
    assert period_end("daily", utc(2026, 12, 31, 23, 59)) == utc(2027, 1, 1)


def test_december_ends_on_january_1_of_the_next_year() -> None:
    assert period_bounds("monthly", utc(2026, 12, 15)) == (utc(2026, 12, 1), utc(2027, 1, 1))


def test_a_leap_year_lasts_366_days() -> None:
    start, end = period_bounds("yearly", utc(2024, 6, 1))
    assert end - start == timedelta(days=366)


def test_a_week_can_span_two_years() -> None:
    # 2026-01-01 is a Thursday: its week began on Monday 2025-12-29.
    assert period_bounds("weekly", utc(2026, 1, 1)) == (utc(2025, 12, 29), utc(2026, 1, 5))


# --- timezones ---------------------------------------------------------------------------------


def test_a_day_in_a_timezone_starts_at_local_midnight() -> None:
    # 23:30 UTC on Nov 22 is already Nov 23 in Amsterdam (UTC+1).
    start, end = period_bounds("daily", utc(2026, 11, 22, 23, 30), AMSTERDAM)
    assert start == utc(2026, 11, 22, 23)
    assert end == utc(2026, 11, 23, 23)


def test_a_month_in_new_york_starts_at_local_midnight_on_the_first() -> None:
    # 02:00 UTC on Dec 1 is still Nov 30 in New York (UTC-5).
    start, end = period_bounds("monthly", utc(2026, 12, 1, 2), NEW_YORK)
    assert start == local(NEW_YORK, 2026, 11, 1)
    assert end == local(NEW_YORK, 2026, 12, 1)


def test_a_year_in_new_york_starts_at_local_midnight_on_january_first() -> None:
    assert period_start("yearly", utc(2027, 1, 1, 3), NEW_YORK) == local(NEW_YORK, 2026, 1, 1)


def test_a_week_in_amsterdam_starts_at_local_midnight_on_monday() -> None:
    start = period_start("weekly", utc(2026, 11, 22, 23, 30), AMSTERDAM)  # Monday 00:30 local
    assert start.astimezone(AMSTERDAM) == local(AMSTERDAM, 2026, 11, 23)


def test_the_spring_forward_day_lasts_23_hours() -> None:
    start, end = period_bounds("daily", local(AMSTERDAM, 2026, 3, 29, 12), AMSTERDAM)
    assert end - start == timedelta(hours=23)


def test_the_fall_back_day_lasts_25_hours() -> None:
    start, end = period_bounds("daily", local(AMSTERDAM, 2026, 10, 25, 12), AMSTERDAM)
    assert end - start == timedelta(hours=25)


def test_new_york_dst_days_last_23_and_25_hours() -> None:
    spring = period_bounds("daily", local(NEW_YORK, 2026, 3, 8, 12), NEW_YORK)
    fall = period_bounds("daily", local(NEW_YORK, 2026, 11, 1, 12), NEW_YORK)
    assert spring[1] - spring[0] == timedelta(hours=23)
    assert fall[1] - fall[0] == timedelta(hours=25)


def test_lord_howe_half_hour_dst_days_last_23_and_a_half_and_24_and_a_half_hours() -> None:
    spring = period_bounds("daily", local(LORD_HOWE, 2026, 10, 4, 12), LORD_HOWE)
    fall = period_bounds("daily", local(LORD_HOWE, 2026, 4, 5, 12), LORD_HOWE)
    assert spring[1] - spring[0] == timedelta(hours=23, minutes=30)
    assert fall[1] - fall[0] == timedelta(hours=24, minutes=30)


def test_a_month_containing_a_dst_change_is_an_hour_short() -> None:
    start, end = period_bounds("monthly", local(AMSTERDAM, 2026, 3, 15), AMSTERDAM)
    assert end - start == timedelta(days=31) - HOUR


def test_a_day_whose_midnight_falls_in_a_dst_gap_starts_when_the_clocks_jump_santiago() -> None:
    # Santiago springs forward at 24:00 on 2026-09-05: 00:00-00:59 on Sep 6 never happens.
    start, end = period_bounds("daily", local(SANTIAGO, 2026, 9, 6, 12), SANTIAGO)
    assert start == utc(2026, 9, 6, 4)
    assert start.astimezone(SANTIAGO).replace(tzinfo=None) == datetime(2026, 9, 6, 1)
    assert end - start == timedelta(hours=23)


def test_a_day_whose_midnight_falls_in_a_dst_gap_starts_when_the_clocks_jump_havana() -> None:
    # Havana springs forward at 00:00 on 2026-03-08 (to 01:00).
    start, end = period_bounds("daily", local(HAVANA, 2026, 3, 8, 12), HAVANA)
    assert start == utc(2026, 3, 8, 5)
    assert end - start == timedelta(hours=23)


def test_the_day_before_a_midnight_gap_ends_when_the_next_day_starts() -> None:
    before = period_bounds("daily", local(SANTIAGO, 2026, 9, 5, 23, 30), SANTIAGO)
    after = period_bounds("daily", local(SANTIAGO, 2026, 9, 6, 1, 30), SANTIAGO)
    assert before[1] == after[0]


def test_a_gap_that_straddles_midnight_starts_the_day_at_the_jump() -> None:
    # Toronto 1919-03-30: 23:30 EST jumped to 00:30 EDT, so March 31 began at 04:30 UTC.
    toronto = ZoneInfo("America/Toronto")
    now = utc(1919, 3, 31, 4, 45)  # 00:45 EDT
    start, end = period_bounds("daily", now, toronto)
    assert start == utc(1919, 3, 31, 4, 30)
    assert start <= now < end


def test_clocks_going_back_across_midnight_keep_the_new_day() -> None:
    # St. John's 2010-11-07: at 00:01 NDT clocks went back to 23:01 NST on Nov 6. The day Nov 7
    # had begun at the first midnight, and the repeated hour belongs to it.
    st_johns = ZoneInfo("America/St_Johns")
    now = utc(2010, 11, 7, 2, 45)  # 23:15 NST, local date Nov 6 again
    assert now.astimezone(st_johns).date() == date(2010, 11, 6)
    start, end = period_bounds("daily", now, st_johns)
    assert start <= now < end
    assert start == utc(2010, 11, 7, 2, 30)  # 00:00 NDT (UTC-2:30)
    assert period_key("daily", now, st_johns) == "daily:2010-11-07"


def test_a_skipped_day_leaves_no_gap_between_periods() -> None:
    # Samoa skipped 2011-12-30 entirely.
    apia = ZoneInfo("Pacific/Apia")
    before = period_bounds("daily", local(apia, 2011, 12, 29, 12), apia)
    after = period_bounds("daily", local(apia, 2011, 12, 31, 12), apia)
    assert before[1] == after[0]


# --- seconds_to_reset --------------------------------------------------------------------------


def test_seconds_to_reset_counts_whole_seconds_to_the_end() -> None:
    assert seconds_to_reset("daily", utc(2026, 11, 22, 23, 59)) == 60


def test_seconds_to_reset_rounds_up() -> None:
    assert seconds_to_reset("daily", utc(2026, 11, 22, 23, 59, 58, 500000)) == 2


def test_seconds_to_reset_is_at_least_one() -> None:
    assert seconds_to_reset("daily", utc(2026, 11, 22, 23, 59, 59, 999999)) == 1


def test_seconds_to_reset_at_the_boundary_is_the_whole_new_period() -> None:
    assert seconds_to_reset("daily", utc(2026, 11, 23)) == 86400


def test_seconds_to_reset_follows_the_timezone() -> None:
    assert seconds_to_reset("daily", utc(2026, 11, 22, 22, 59), AMSTERDAM) == 60


# --- period_key --------------------------------------------------------------------------------


def test_period_key_names_the_period_and_its_local_start_date() -> None:
    assert period_key("daily", utc(2026, 11, 22, 15)) == "daily:2026-11-22"
    assert period_key("weekly", utc(2026, 11, 22, 15)) == "weekly:2026-11-16"
    assert period_key("monthly", utc(2026, 11, 22, 15)) == "monthly:2026-11-01"
    assert period_key("yearly", utc(2026, 11, 22, 15)) == "yearly:2026-01-01"


def test_period_key_is_stable_within_a_period() -> None:
    assert period_key("monthly", utc(2026, 11, 1)) == period_key("monthly", utc(2026, 11, 30, 23, 59, 59))


def test_period_key_changes_at_the_boundary() -> None:
    assert period_key("monthly", utc(2026, 11, 30, 23, 59, 59)) != period_key("monthly", utc(2026, 12, 1))


def test_period_key_uses_the_local_date() -> None:
    assert period_key("daily", utc(2026, 11, 22, 23, 30), AMSTERDAM) == "daily:2026-11-23"


# --- properties --------------------------------------------------------------------------------

ZONES = st.sampled_from([
    UTC,
    AMSTERDAM,
    NEW_YORK,
    LORD_HOWE,
    SANTIAGO,
    HAVANA,
    ZoneInfo("America/St_Johns"),
    ZoneInfo("America/Toronto"),
    ZoneInfo("Pacific/Apia"),
    ZoneInfo("Pacific/Chatham"),
    ZoneInfo("Asia/Kolkata"),
    ZoneInfo("Asia/Tehran"),
    ZoneInfo("Africa/Casablanca"),
    ZoneInfo("Antarctica/Troll"),
    ZoneInfo("Antarctica/Casey"),
])
TIMEZONES = st.one_of(ZONES, st.timezones())
NOWS = st.datetimes(
    min_value=datetime(1901, 1, 1), max_value=datetime(2099, 12, 1), timezones=st.just(UTC)
)
PERIODS = st.sampled_from(list(Period))


def _midnight_exists(day: date, tz: timezone | ZoneInfo) -> bool:
    midnight = datetime.combine(day, time(0))
    return midnight.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None) == midnight


@settings(max_examples=500, deadline=None)
@given(period=PERIODS, now=NOWS, tz=TIMEZONES)
def test_the_period_contains_now(period: Period, now: datetime, tz: ZoneInfo) -> None:
    start, end = period_bounds(period, now, tz)
    assert start <= now < end


@settings(max_examples=500, deadline=None)
@given(period=PERIODS, now=NOWS, tz=TIMEZONES)
def test_the_next_period_starts_where_this_one_ends(period: Period, now: datetime, tz: ZoneInfo) -> None:
    _, end = period_bounds(period, now, tz)
    assert period_start(period, end, tz) == end


@settings(max_examples=500, deadline=None)
@given(period=PERIODS, now=NOWS, tz=TIMEZONES)
def test_the_period_starts_at_local_midnight_of_its_first_day(period: Period, now: datetime, tz: ZoneInfo) -> None:
    start = period_start(period, now, tz)
    first = date.fromisoformat(period_key(period, now, tz).split(":", 1)[1])
    if period is Period.WEEKLY:
        assert first.weekday() == 0
    elif period is Period.MONTHLY:
        assert first.day == 1
    elif period is Period.YEARLY:
        assert (first.month, first.day) == (1, 1)
    if _midnight_exists(first, tz):
        assert start.astimezone(tz).replace(tzinfo=None) == datetime.combine(first, time(0))
    else:
        # Midnight fell in a gap: the period starts at the first instant of its first local day.
        assert start.astimezone(tz).date() >= first
        assert (start - timedelta(seconds=1)).astimezone(tz).date() < first


@settings(max_examples=300, deadline=None)
@given(period=PERIODS, now=NOWS, tz=TIMEZONES)
def test_seconds_to_reset_is_the_wait_to_the_end_rounded_up(period: Period, now: datetime, tz: ZoneInfo) -> None:
    wait = seconds_to_reset(period, now, tz)
    end = period_end(period, now, tz)
    assert wait >= 1
    assert now + timedelta(seconds=wait) >= end
    assert now + timedelta(seconds=wait - 1) < end


@settings(max_examples=300, deadline=None)
@given(period=PERIODS, now=NOWS, tz=TIMEZONES)
def test_period_key_is_the_same_at_the_start_and_just_before_the_end(
    period: Period, now: datetime, tz: ZoneInfo
) -> None:
    start, end = period_bounds(period, now, tz)
    key = period_key(period, now, tz)
    assert period_key(period, start, tz) == key
    assert period_key(period, end - timedelta(microseconds=1), tz) == key
    assert period_key(period, end, tz) != key
