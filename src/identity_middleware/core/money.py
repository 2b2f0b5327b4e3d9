"""Exact money: Decimal USD at the edges, integers of 1e-9 USD (nano-USD) in storage."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

NANOS_PER_USD = 1_000_000_000
_NANO = Decimal("0.000000001")

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
    return result


def to_nanos(value: Money) -> int:
    """USD -> integer nano-USD, rounding half-even below one nano-dollar."""
    amount = to_decimal(value)
    return int((amount / _NANO).to_integral_value(rounding=ROUND_HALF_EVEN))


def from_nanos(nanos: int) -> Decimal:
    """Integer nano-USD -> USD as a normalised ``Decimal`` (``0.2``, not ``0.200000000``)."""
    amount = Decimal(nanos).scaleb(-9)
    if amount == 0:
        return Decimal(0)
    normal = amount.normalize()
    # normalize() turns 10 into 1E+1; keep plain notation for integers.
    return normal.quantize(Decimal(1)) if normal == normal.to_integral_value() else normal


def format_usd(amount: Decimal) -> str:
    """A decimal string for JSON: at least two places (``"0.20"``), more when needed."""
    text = format(amount, "f")
    whole, _, frac = text.partition(".")
    frac = frac.rstrip("0")
    if len(frac) < 2:
        frac = frac.ljust(2, "0")
    return f"{whole}.{frac}"
