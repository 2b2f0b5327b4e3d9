"""The outage policies as values: "open", "closed", a local :class:`Allowance`, or a callable choosing one.

What each does, and the allowance's overshoot bound: :mod:`identity_middleware.flow.allowance`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from .money import to_nanos

__all__ = ["Allowance", "OutagePolicy", "PolicyChoice", "is_policy"]


@dataclass(frozen=True, slots=True)
class Allowance:
    """The third outage policy: per process and identity, admit up to ``amount`` (USD) while the
    store is down, then refuse (see the module docs for the overshoot bound)."""

    amount: Decimal | str | int | float
    nanos: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        nanos = to_nanos(self.amount)
        if nanos <= 0:
            raise ValueError(f"Allowance amount must be greater than 0, not {self.amount!r}")
        object.__setattr__(self, "nanos", nanos)


PolicyChoice = Literal["open", "closed"] | Allowance
# The callable's second argument is the flow's Request (identity_middleware.flow.Request).
OutagePolicy = PolicyChoice | Callable[[str, Any], PolicyChoice]


def is_policy(value: object) -> bool:
    """Whether ``value`` may be ``on_store_error``."""
    return value in ("open", "closed") or isinstance(value, Allowance) or callable(value)


