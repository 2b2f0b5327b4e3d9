"""Exact money: Decimal USD at the edges, integers of 1e-9 USD (nano-USD) in storage."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

NANOS_PER_USD = 1_000_000_000
# The largest amount accepted anywhere ($1e9): its nano-USD still fit a signed 64-bit Redis
# integer with room for sums, and absurd inputs ("1E+999999999") never become huge ints.
MAX_AMOUNT = Decimal(1_000_000_000)

Money = Decimal | str | int | float


def to_decimal(value: Money) -> Decimal:
    """Convert a cost to ``Decimal`` exactly; floats go through ``str`` so 0.1 stays 0.1."""
    if isinstance(value, bool):
        raise TypeError("a cost is a number, not a bool")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, (int, str)):
        try:
            result = Decimal(value)
        except InvalidOperation:
            raise ValueError(f"not a decimal amount: {value!r}") from None
    elif isinstance(value, float):
        result = Decimal(str(value))
    else:
        raise TypeError(f"a cost is a Decimal, str or number, not {type(value).__name__}")
    if not result.is_finite():
        raise ValueError(f"not a finite amount: {value!r}")
    if result.copy_abs() > MAX_AMOUNT:  # copy_abs: no context, so no Overflow on 1E+999999999
        raise ValueError(f"an amount of money is at most {MAX_AMOUNT} USD: {value!r}")
    return result


def to_nanos(value: Money) -> int:
    """USD -> integer nano-USD, rounding half-even below one nano-dollar; never negative."""
    amount = to_decimal(value)
    if amount < 0:
        raise ValueError(f"an amount of money is never negative: {value!r}")
    return decimal_nanos(amount)


def decimal_nanos(amount: Decimal) -> int:
    """:func:`to_nanos` of a ``Decimal`` that :func:`to_decimal` already checked and is not negative."""
    shifted = amount.scaleb(9)
    nanos = int(shifted)
    if shifted == nanos:  # the common case: at most nine places, so the shift is exact
        return nanos
    # Integer arithmetic, not Decimal division: the default 28-digit context would round
    # amounts with more significant digits.
    _, digits, exponent = amount.as_tuple()
    coefficient = int("".join(map(str, digits)))
    shift = int(exponent) + 9  # finite: to_decimal checked
    scale: int = 10 ** abs(shift)
    if shift >= 0:
        return coefficient * scale
    nanos, rest = divmod(coefficient, scale)
    half = scale // 2
    if rest > half or (rest == half and nanos % 2):
        nanos += 1
    return nanos


# The nano-USD of the Decimal costs recorded lately: an app records a few costs over and over, and
# converting one costs more than the rest of recording it. Only checked values are kept.
_known_nanos: dict[Decimal, int] = {}
_KNOWN_MAX = 1024


def cost_nanos(value: Money) -> tuple[Decimal, int]:
    """``value`` as a ``Decimal`` (:func:`to_decimal`) and in nano-USD; a negative cost raises ``ValueError``."""
    if type(value) is Decimal and value.is_finite():  # a signalling NaN cannot be hashed
        known = _known_nanos.get(value)
        if known is not None:
            return value, known
    amount = to_decimal(value)
    if amount < 0:
        raise ValueError("cost and token counts must not be negative")
    nanos = decimal_nanos(amount)
    if type(value) is Decimal:
        if len(_known_nanos) >= _KNOWN_MAX:
            _known_nanos.clear()
        _known_nanos[value] = nanos
    return amount, nanos


def from_nanos(nanos: int) -> Decimal:
    """Integer nano-USD -> USD as a normalised ``Decimal`` (``0.2``, not ``0.200000000``)."""
    if nanos == 0:
        return Decimal(0)
    # Built from digits, not scaleb()/normalize(), which round to the 28-digit context.
    # Trailing zeros are dropped down to the units, so 10 stays 10 (not 1E+1).
    magnitude, exponent = abs(nanos), -9
    while exponent < 0 and magnitude % 10 == 0:
        magnitude //= 10
        exponent += 1
    return Decimal((1 if nanos < 0 else 0, tuple(int(digit) for digit in str(magnitude)), exponent))


def format_usd(amount: Decimal) -> str:
    """A decimal string for JSON: at least two places (``"0.20"``), more when needed."""
    text = format(amount, "f")
    whole, _, frac = text.partition(".")
    frac = frac.rstrip("0")
    if len(frac) < 2:
        frac = frac.ljust(2, "0")
    return f"{whole}.{frac}"


# A limit written as text: a plain positive decimal of whole nano-dollars, at most MAX_AMOUNT
# (no sign, exponent or spaces). The admin API's OpenAPI document states the same pattern.
_FRACTION = "|".join(f"{'0' * zeros}[1-9][0-9]{{0,{8 - zeros}}}" for zeros in range(9))
AMOUNT_PATTERN = (r"^0*(?:[1-9][0-9]{0,8}(?:\.[0-9]{1,9})?|1000000000(?:\.0{1,9})?|0?\.(?:" + _FRACTION + "))$")
_AMOUNT_TEXT = re.compile(AMOUNT_PATTERN)


def limit_amount(value: object) -> Decimal:
    """A budget's amount: a positive whole number of nano-dollars (at most nine places), at most
    :data:`MAX_AMOUNT`. A limit is never rounded: ``5e-324`` would round to a $0 budget."""
    if isinstance(value, bool) or not isinstance(value, (Decimal, str, int, float)):
        raise ValueError("amount must be a decimal string or number")
    if isinstance(value, str) and not _AMOUNT_TEXT.match(value):
        raise ValueError("amount must be a plain decimal like \"10.50\": more than 0, at most 1000000000, "
                         "at most nine decimal places")
    amount = to_decimal(value)
    if amount <= 0:
        raise ValueError("amount must be greater than 0")
    if amount.scaleb(9) != int(amount.scaleb(9)):
        raise ValueError("amount has more than nine decimal places (the smallest unit is $0.000000001)")
    return amount

