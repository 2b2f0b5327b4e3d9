"""The admin API's credits routes, our extension of orq's Budgets API (orq's SDK never calls them).

``POST /v2/budgets/{budget_id}/top-up`` with ``{"amount": number, "idempotency_key": string}`` adds the
amount to an identity's one-time budget once per key: the first call and every repeat answer ``200``
with the same ``{"top_up": ...}``; the key reused with another amount answers ``422
idempotency_key_reused`` (the IETF Idempotency-Key draft's status for a key reused with another
request). ``GET /v2/budgets/{budget_id}/top-ups`` lists the ledger, oldest first. Money is written as
JSON numbers from the exact decimal, as the rest of the Budgets API writes it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ..core.credits import TopUp, TopUpConflict
from ..core.money import format_usd
from ..stores.base import Store
from .budget_wire import encode, parse_body
from .budgets import _guarded
from .errors import AdminError, Reply, invalid_request
from .handlers import AdminRequest

__all__ = ["list_top_ups", "top_up", "top_up_json"]


def top_up_json(top_up: TopUp) -> dict[str, Any]:
    """A ledger entry: ``budget_id``, ``amount``, ``idempotency_key``, ``created``, ``new_limit``."""
    return {"budget_id": top_up.budget_id, "amount": top_up.amount, "idempotency_key": top_up.idempotency_key,
            "created": top_up.created.isoformat().replace("+00:00", "Z"), "new_limit": top_up.new_limit}


def _amount(data: dict[str, Any]) -> Decimal | str:
    value = data.get("amount")
    if isinstance(value, bool) or not isinstance(value, (int, Decimal, str)):
        raise invalid_request("amount must be a number (USD), more than 0.", "amount")
    return value if isinstance(value, str) else Decimal(value)


async def top_up(store: Store, request: AdminRequest) -> Reply:
    data = parse_body(request.body)
    unknown = sorted(set(data) - {"amount", "idempotency_key"})
    if unknown:
        raise invalid_request(f"unknown field {unknown[0]!r}.", unknown[0])
    key = data.get("idempotency_key")
    if not isinstance(key, str):
        raise invalid_request("idempotency_key must be a string (1 to 255 characters).", "idempotency_key")
    try:
        made = await _guarded(store.atop_up(request.params["budget_id"], _amount(data), key))
    except TopUpConflict as error:
        raise AdminError(422, "idempotency_key_reused", f"The idempotency key {key!r} topped this budget up by "
                         f"{format_usd(error.top_up.amount)} already; use a new key for another top-up.",
                         field="idempotency_key") from None
    return Reply(200, encode({"top_up": top_up_json(made)}))


async def list_top_ups(store: Store, request: AdminRequest) -> Reply:
    ledger = await _guarded(store.atop_ups(request.params["budget_id"]))
    return Reply(200, encode({"object": "list", "data": [top_up_json(entry) for entry in ledger],
                              "has_more": False}))
