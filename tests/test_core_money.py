"""Exact money: Decimal USD at the edges, integers of 1e-9 USD in storage, never floats."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from identity_middleware.core.money import (
    MAX_AMOUNT,
    NANOS_PER_USD,
    cost_nanos,
    format_usd,
    from_nanos,
    to_decimal,
    to_nanos,
)


def test_a_million_tenths_of_a_micro_dollar_sum_to_exactly_ten_cents() -> None:
    total = sum(to_nanos(Decimal("0.0000001")) for _ in range(1_000_000))
    assert from_nanos(total) == Decimal("0.1")


def test_a_million_float_costs_sum_exactly_too() -> None:
    total = sum(to_nanos(0.0000001) for _ in range(1_000_000))
    assert from_nanos(total) == Decimal("0.1")


def test_one_dollar_is_a_billion_nanos() -> None:
    assert to_nanos(1) == NANOS_PER_USD == 1_000_000_000


def test_a_decimal_string_converts_exactly() -> None:
    assert to_nanos("0.000000001") == 1
    assert to_nanos("12.345678901") == 12_345_678_901


def test_a_float_goes_through_str_so_point_one_stays_point_one() -> None:
    assert to_decimal(0.1) == Decimal("0.1")
    assert to_nanos(0.1) == 100_000_000


def test_a_float_sum_that_is_inexact_in_binary_is_exact_in_nanos() -> None:
    assert to_nanos(0.1) + to_nanos(0.2) == to_nanos("0.3")


def test_a_decimal_is_kept_as_is() -> None:
    amount = Decimal("0.020")
    assert to_decimal(amount) is amount


def test_an_int_is_whole_dollars() -> None:
    assert to_decimal(3) == Decimal(3)


def test_below_a_nano_rounds_half_to_even_down() -> None:
    assert to_nanos("0.0000000005") == 0
    assert to_nanos("0.0000000025") == 2


def test_below_a_nano_rounds_half_to_even_up() -> None:
    assert to_nanos("0.0000000015") == 2
    assert to_nanos("0.0000000035") == 4


def test_below_a_nano_more_than_half_rounds_up() -> None:
    assert to_nanos("0.00000000051") == 1


def test_below_a_nano_less_than_half_rounds_down() -> None:
    assert to_nanos("1.0000000004999") == 1_000_000_000


def test_a_negative_cost_is_refused() -> None:
    with pytest.raises(ValueError):
        to_nanos("-0.01")


def test_a_negative_float_is_refused() -> None:
    with pytest.raises(ValueError):
        to_nanos(-1.5)


def test_nan_is_refused() -> None:
    with pytest.raises(ValueError):
        to_nanos("NaN")
    with pytest.raises(ValueError):
        to_nanos(float("nan"))


def test_infinity_is_refused() -> None:
    with pytest.raises(ValueError):
        to_nanos(float("inf"))
    with pytest.raises(ValueError):
        to_nanos(Decimal("Infinity"))
    with pytest.raises(ValueError):
        to_nanos("-inf")


def test_a_bool_is_refused() -> None:
    with pytest.raises(TypeError):
        to_nanos(True)
    with pytest.raises(TypeError):
        to_decimal(False)


def test_a_string_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(ValueError):
        to_decimal("ten dollars")


def test_other_types_are_refused() -> None:
    with pytest.raises(TypeError):
        to_decimal([1])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        to_decimal(None)  # type: ignore[arg-type]


def test_zero_is_a_valid_cost() -> None:
    assert to_nanos(0) == 0
    assert to_nanos("0.00") == 0


def test_from_nanos_is_normalised() -> None:
    assert str(from_nanos(200_000_000)) == "0.2"


def test_from_nanos_keeps_whole_dollars_in_plain_notation() -> None:
    assert str(from_nanos(10 * NANOS_PER_USD)) == "10"


def test_from_nanos_of_zero_is_zero() -> None:
    assert str(from_nanos(0)) == "0"


def test_from_nanos_of_one_is_one_nano_dollar() -> None:
    assert from_nanos(1) == Decimal("0.000000001")


def test_large_amounts_convert_exactly() -> None:
    amount = Decimal("999999999.123456789")  # 18 significant digits, just under the cap
    assert to_nanos(amount) == 999999999123456789
    assert from_nanos(999999999123456789) == amount
    assert from_nanos(12345678901234567890123456789) == Decimal("12345678901234567890.123456789")


def test_large_whole_amounts_convert_back_in_plain_notation() -> None:
    assert str(from_nanos(10**40)) == "1" + "0" * 31


@given(st.decimals(places=9, allow_nan=False, allow_infinity=False, min_value=0, max_value=MAX_AMOUNT))
def test_nanos_round_trip_any_amount_with_at_most_nine_places(amount: Decimal) -> None:
    assert from_nanos(to_nanos(amount)) == amount


@given(st.integers(min_value=0, max_value=int(MAX_AMOUNT) * NANOS_PER_USD))
def test_any_nano_count_round_trips(nanos: int) -> None:
    assert to_nanos(from_nanos(nanos)) == nanos


@given(st.lists(st.decimals(places=9, min_value=0, max_value=1000), max_size=50))
def test_sums_in_nanos_equal_decimal_sums(amounts: list[Decimal]) -> None:
    assert from_nanos(sum(to_nanos(amount) for amount in amounts)) == sum(amounts, Decimal(0))


def test_format_usd_has_at_least_two_places() -> None:
    assert format_usd(Decimal("0.2")) == "0.20"


def test_format_usd_of_whole_dollars() -> None:
    assert format_usd(Decimal("10")) == "10.00"
    assert format_usd(from_nanos(10 * NANOS_PER_USD)) == "10.00"


def test_format_usd_keeps_every_needed_place() -> None:
    assert format_usd(Decimal("0.000000001")) == "0.000000001"


def test_format_usd_drops_trailing_zeros_beyond_two_places() -> None:
    assert format_usd(Decimal("1.2300")) == "1.23"
    assert format_usd(Decimal("1.2340")) == "1.234"


def test_format_usd_of_zero() -> None:
    assert format_usd(Decimal(0)) == "0.00"


def test_format_usd_never_uses_exponent_notation() -> None:
    assert format_usd(Decimal("1E+1")) == "10.00"
    assert format_usd(Decimal("1E-9")) == "0.000000001"


def test_absurdly_large_amounts_are_refused_before_any_arithmetic() -> None:
    from identity_middleware.core.models import Budget

    with pytest.raises(ValueError, match="at most"):
        to_nanos("1E+999999999")
    with pytest.raises(ValueError):
        Budget(period="daily", amount="1000000000.01")
    assert to_nanos("1000000000") == 10**18  # the cap itself fits a signed 64-bit integer


# -- cost_nanos: record_usage's conversion, which remembers the Decimal costs it has converted -------
@given(st.one_of(st.decimals(min_value=0, max_value=MAX_AMOUNT, allow_nan=False, allow_infinity=False),
                 st.floats(min_value=0, max_value=1e6), st.integers(min_value=0, max_value=10**6)))
def test_cost_nanos_equals_to_nanos_the_first_time_and_every_time_after(value: Decimal | float | int) -> None:
    expected = (to_decimal(value), to_nanos(value))
    assert cost_nanos(value) == expected
    assert cost_nanos(value) == expected  # remembered, for a Decimal


def test_cost_nanos_of_equal_decimals_written_differently() -> None:
    assert cost_nanos(Decimal("0.10"))[1] == cost_nanos(Decimal("0.1"))[1] == 100_000_000
    assert cost_nanos(Decimal("0.10"))[0] == Decimal("0.10")  # the caller's own value back


@pytest.mark.parametrize("value", [Decimal("-0.5"), Decimal("NaN"), Decimal("sNaN"), Decimal("Infinity"),
                                   Decimal("1E+999999999"), -1, "x", True])
def test_cost_nanos_refuses_what_to_decimal_refuses_every_time(value: object) -> None:
    for _ in range(2):  # nothing bad is remembered
        with pytest.raises((ValueError, TypeError)):
            cost_nanos(value)  # type: ignore[arg-type]
