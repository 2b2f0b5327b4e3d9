"""Plans of credits: top-ups of an identity's one-time budget and its ledger (topup.lua).

The ledger is a hash in the identity's slot (``P:{T}:k``, see :mod:`..keys`), so the top-up, its
idempotency key and the limit the admission script reads change in one script call on one node.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import TypeAdapter

from ....core.budgets import BudgetNotFound, BudgetPeriod, InvalidBudget
from ....core.credits import TopUp, TopUpConflict, takes_top_ups, too_large, top_up_amount, top_up_key
from ....core.money import MAX_AMOUNT, from_nanos, to_nanos
from ..scripts import TOPUP
from ..steps import Call, Eval, Plan
from . import codec
from .budgets import BudgetPlans

_MAX_NANOS = str(to_nanos(MAX_AMOUNT))
_TIME = TypeAdapter(datetime)
_PREFIX = "k:"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry(budget_id: str, key: str, entry: str) -> tuple[int, TopUp]:
    """A ledger entry ``"<sequence> <amount nanos> <new limit nanos> <time ISO>"`` as (sequence, top-up)."""
    sequence, amount, limit, created = entry.split(" ", 3)
    return int(sequence), TopUp(budget_id=budget_id, amount=from_nanos(int(amount)), idempotency_key=key,
                                created=datetime.fromisoformat(created), new_limit=from_nanos(int(limit)))


class CreditPlans:
    """Top-ups and the ledger, over the budget plans (which find a budget and its identity's tag)."""

    def __init__(self, budgets: BudgetPlans) -> None:
        self.budgets = budgets
        self.keys = budgets.keys

    def top_up(self, budget_id: str, amount: Decimal | str | int | float, idempotency_key: str,
               now: datetime | None) -> Plan[TopUp]:
        added, key = top_up_amount(amount), top_up_key(idempotency_key)
        moment = codec.now_or(now)
        budget, tag = yield from self.budgets.locate(budget_id)
        takes_top_ups(budget)  # an identity's one-time budget with an amount, or it never made a top-up
        assert tag is not None  # an identity budget's
        updated = '"updated_at":' + _TIME.dump_json(moment).decode()
        reply = yield Eval(TOPUP, [self.keys.budgets(tag), self.keys.top_ups(tag)],
                           [key, to_nanos(added), moment.isoformat(), updated, _MAX_NANOS])
        status = int(reply[0])
        if status == 1:
            made = _entry(budget.id, key, _text(reply[1]))[1]
            if made.amount != added:
                raise TopUpConflict(made)
            return made
        if status == 0:  # deleted meanwhile
            raise BudgetNotFound(budget_id)
        if status == 2:  # its amount removed meanwhile
            raise InvalidBudget("budget_id", f"{budget_id!r} has no amount to top up")
        raise too_large()

    def top_ups(self, budget_id: str) -> Plan[list[TopUp]]:
        budget, tag = yield from self.budgets.locate(budget_id)
        if tag is None or budget.period is not BudgetPeriod.ONE_TIME:
            return []  # only an identity's one-time budget has a ledger
        fields = codec.as_map((yield Call("hgetall", (self.keys.top_ups(tag),))))
        entries = [_entry(budget.id, name[len(_PREFIX):], value) for name, value in fields.items()
                   if name.startswith(_PREFIX)]
        return [top_up for _, top_up in sorted(entries, key=lambda item: item[0])]
