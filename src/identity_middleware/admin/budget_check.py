"""``POST /v2/budgets/check``: orq's what-if check on the wire (request and reply in orq's shape).

Request (every field optional): ``identity_external_id``, ``model_id``, ``provider``, ``project_id``,
``api_key_id``, ``metadata`` (an object: stands for the identity's own), ``headers`` (strings), and
our extension ``estimate`` (USD the request would reserve). Reply: ``allowed``, ``rejection``
(``scope_kind``, ``scope_target_id``, ``dimension``, ``code``, ``message``, and our ``budget_id``)
or null, and ``cost``, ``tokens``, ``requests``: ``{limit, consumed, remaining}`` of the tightest
budget in that dimension, or null. Nothing is written.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ..core.check import BudgetCheck, DimensionInfo
from ..core.money import limit_amount
from ..stores.base import Store
from .budget_wire import KIND_PREFIX, encode, parse_body
from .errors import Reply, invalid_request
from .handlers import AdminRequest

__all__ = ["check_budgets"]

_TEXT_FIELDS = {"identity_external_id": "identity", "model_id": "model", "provider": "provider",
                "project_id": "project", "api_key_id": "api_key"}
_FIELDS = {*_TEXT_FIELDS, "metadata", "headers", "estimate"}


def _text(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 255:
        raise invalid_request(f"{name} must be a string of at most 255 characters.", name)
    return value


def _arguments(data: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise invalid_request(f"unknown field {unknown[0]!r}.", unknown[0])
    arguments: dict[str, Any] = {argument: _text(data, name) for name, argument in _TEXT_FIELDS.items()}
    metadata = data.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise invalid_request("metadata must be an object.", "metadata")
    arguments["metadata"] = metadata
    headers = data.get("headers")
    if headers is not None and (not isinstance(headers, dict)
                                or not all(isinstance(value, str) for value in headers.values())):
        raise invalid_request("headers must be an object of strings.", "headers")
    arguments["headers"] = headers
    estimate = data.get("estimate")
    if estimate is not None:
        if isinstance(estimate, bool) or not isinstance(estimate, (int, Decimal)):
            raise invalid_request("estimate must be a number (USD).", "estimate")
        try:
            arguments["estimate"] = limit_amount(estimate) if estimate else Decimal(0)
        except ValueError as error:
            raise invalid_request(f"estimate: {error}", "estimate") from None
    return arguments


def _dimension(info: DimensionInfo | None) -> dict[str, Any] | None:
    return None if info is None else {"limit": info.limit, "consumed": info.consumed, "remaining": info.remaining}


def check_json(result: BudgetCheck) -> dict[str, Any]:
    rejection = result.rejection
    return {
        "allowed": result.allowed,
        "rejection": None if rejection is None else {
            "scope_kind": KIND_PREFIX + rejection.scope_kind.upper(), "scope_target_id": rejection.scope_target_id,
            "dimension": rejection.dimension, "code": rejection.code, "message": rejection.message,
            "budget_id": rejection.budget_id},
        "cost": _dimension(result.cost),
        "tokens": _dimension(result.tokens),
        "requests": _dimension(result.requests),
    }


async def check_budgets(store: Store, request: AdminRequest) -> Reply:
    result = await store.acheck(**_arguments(parse_body(request.body)))
    return Reply(200, encode(check_json(result)))
