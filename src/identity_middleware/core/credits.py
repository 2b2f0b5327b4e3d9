"""Credits: a one-time identity budget is a prepaid balance, topped up once per idempotency key.

A top-up adds its amount to the budget's limit (``amount``) and is kept in the budget's ledger under
its idempotency key. The same key again answers the top-up it made, and adds nothing; the same key
with another amount is refused (:class:`TopUpConflict`), as the IETF Idempotency-Key draft has a
server refuse a key reused with another request (HTTP 422). Only an identity's one-time budget with
an amount takes top-ups: admission checks it in the same atomic step as the identity's period budgets.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, field_serializer

from .budgets import BudgetPeriod, InvalidBudget, ScopedBudget, ScopeKind
from .money import MAX_AMOUNT, format_usd, limit_amount
from .validation import InvalidIdentity, check_id

__all__ = ["TopUp", "TopUpConflict", "check_top_up", "takes_top_ups", "too_large", "top_up_amount", "top_up_key"]


class TopUp(BaseModel):
    """One top-up in a budget's ledger: what it added, under which key, when, and the limit it made."""

    model_config = ConfigDict(frozen=True)

    budget_id: str
    amount: Decimal
    idempotency_key: str
    created: datetime
    new_limit: Decimal

    @field_serializer("amount", "new_limit")
    def _dump_money(self, value: Decimal) -> str:
        return format_usd(value)


class TopUpConflict(Exception):
    """The idempotency key made a top-up of another amount already; ``top_up`` is that one."""

    def __init__(self, top_up: TopUp) -> None:
        super().__init__(f"the idempotency key {top_up.idempotency_key!r} topped up {format_usd(top_up.amount)} "
                         "already; a key is used for one top-up only")
        self.top_up = top_up


def top_up_amount(value: object) -> Decimal:
    """A top-up's amount: more than 0, at most nine decimal places and $1,000,000,000 (as a limit)."""
    try:
        return limit_amount(value)
    except (ValueError, TypeError) as error:
        raise InvalidBudget("amount", str(error).replace("amount must", "a top-up's amount must")) from None


def top_up_key(value: object) -> str:
    """An idempotency key: 1 to 255 characters, no control characters (an identity's rule)."""
    try:
        return check_id(value, "idempotency_key")
    except InvalidIdentity as error:
        raise InvalidBudget("idempotency_key", error.message) from None


def takes_top_ups(budget: ScopedBudget) -> Decimal:
    """``budget``'s amount; :class:`InvalidBudget` unless it is an identity's one-time budget with one."""
    if budget.scope is not ScopeKind.IDENTITY or budget.period is not BudgetPeriod.ONE_TIME:
        raise InvalidBudget("budget_id", "only an identity's one-time budget takes top-ups (a prepaid balance); "
                                         f"{budget.id!r} is a {budget.period.value} {budget.scope.value} budget")
    if budget.amount is None:
        raise InvalidBudget("budget_id", f"{budget.id!r} has no amount to top up (a token or request limit only)")
    return budget.amount


def too_large() -> InvalidBudget:
    return InvalidBudget("amount", f"the top-up would take the limit past {MAX_AMOUNT} USD, the largest amount")


def check_top_up(budget: ScopedBudget, amount: Decimal) -> Decimal:
    """The limit ``amount`` makes of ``budget``'s; :class:`InvalidBudget` if the budget takes no
    top-ups (:func:`takes_top_ups`) or the limit would pass :data:`~.money.MAX_AMOUNT`."""
    limit = takes_top_ups(budget) + amount
    if limit > MAX_AMOUNT:
        raise too_large()
    return limit
