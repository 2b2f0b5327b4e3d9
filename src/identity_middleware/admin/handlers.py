"""The admin operations without a framework: the parsed request, and the per-identity budget routes
(a parsed request in, a :class:`Reply` out, async store calls only). Identity routes: :mod:`.identities`."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ..core.ids import is_ulid
from ..core.models import Budget, BudgetStatus
from ..core.periods import Period
from ..stores.base import MAX_PAGE_SIZE, Store
from .errors import Reply, invalid_request, not_found

__all__ = [
    "AdminRequest",
    "budgets_of",
    "get_budget",
    "list_budgets",
    "remove_budget",
    "reset_budget",
    "set_budget",
]

_TRUE = {"true", "1"}
_FALSE = {"false", "0"}
_PERIODS = ", ".join(period.value for period in Period)


@dataclass(frozen=True, slots=True)
class AdminRequest:
    """One request as every shell can give it: path parameters, query (multi-valued) and raw body."""

    params: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, Sequence[str]] = field(default_factory=dict)
    body: bytes = b""
    #: The ``workspace_id`` the identity records carry (``create_admin_app(workspace_id=...)``).
    workspace_id: str = "default"

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object; 400 ``invalid_request`` when it is not one."""
        try:
            data = json.loads(self.body) if self.body.strip() else None
        except (ValueError, UnicodeDecodeError):
            raise invalid_request("The request body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise invalid_request("The request body must be a JSON object.")
        return data

    def one(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    def flag(self, name: str) -> bool:
        value = self.one(name)
        if value is None or value.lower() in _FALSE:
            return False
        if value.lower() in _TRUE:
            return True
        raise invalid_request(f"{name} must be true, false, 1 or 0.", name)

    def limit(self) -> int:
        return self.count("limit", 10, MAX_PAGE_SIZE)

    def count(self, name: str, default: int, most: int) -> int:
        """The query's ``name`` as a whole number from 1 to ``most`` (``default`` when absent)."""
        value = self.one(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            number = 0
        if not 1 <= number <= most:
            raise invalid_request(f"{name} must be an integer from 1 to {most}.", name)
        return number

    def cursor(self, name: str) -> str | None:
        value = self.one(name)
        if value is not None and not is_ulid(value):
            raise invalid_request(f"{name} must be an identity _id (a ULID).", name)
        return value or None

    def tags(self, name: str = "tags") -> list[str] | None:
        """A repeatable, comma-joinable tag parameter (``tags=a,b`` or ``filter_by.tags=a&filter_by.tags=b``)."""
        tags = [tag.strip() for value in self.query.get(name, ()) for tag in value.split(",") if tag.strip()]
        return tags or None

    @property
    def identity_id(self) -> str:
        return self.params["identity_id"]

    def period(self) -> Period:
        try:
            return Period(self.params["period"])
        except ValueError:
            raise invalid_request(f"period must be one of {_PERIODS}.", "period") from None


def _budget(data: object, period: Period | None = None, where: str = "") -> Budget:
    if not isinstance(data, dict):
        raise invalid_request("a budget must be an object with period and amount.", where or "budget")
    if "amount" not in data:
        raise invalid_request("amount is required.", f"{where}amount")
    fields = {"period": data.get("period", period), "amount": data["amount"]}
    if period is not None and fields["period"] != period.value:
        raise invalid_request("period in the body does not match the path.", f"{where}period")
    try:
        return Budget.model_validate(fields)
    except ValidationError as error:
        first = error.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "amount"
        message = first["msg"].removeprefix("Value error, ")
        if name == "period":
            message = f"period must be one of {_PERIODS}."
        raise invalid_request(message, f"{where}{name}") from None


def budgets_of(data: Mapping[str, Any]) -> list[Budget]:
    raw = data.get("budgets")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise invalid_request("budgets must be an array of {period, amount} objects.", "budgets")
    budgets = [_budget(item, where=f"budgets[{index}].") for index, item in enumerate(raw)]
    if len({budget.period for budget in budgets}) != len(budgets):
        raise invalid_request("an identity holds at most one budget per period.", "budgets")
    return budgets


def _status_json(status: BudgetStatus) -> dict[str, Any]:
    return status.model_dump(mode="json")


def _status_of(statuses: Sequence[BudgetStatus], identity_id: str, period: Period) -> BudgetStatus:
    for status in statuses:
        if status.period is period:
            return status
    raise not_found(f"Identity {identity_id!r} has no {period.value} budget.", identity=identity_id,
                    period=period.value)


# -- budgets ---------------------------------------------------------------------------------------
async def list_budgets(store: Store, request: AdminRequest) -> Reply:
    statuses = await store.abudget_status(request.identity_id)
    return Reply.json(200, {"object": "list", "data": [_status_json(status) for status in statuses]})


async def set_budget(store: Store, request: AdminRequest) -> Reply:
    period = request.period()
    budget = _budget(request.json_object(), period)
    identity = await store.aretrieve(request.identity_id)  # resolved once; then named by its external id
    await store.aset_budget(identity.external_id, budget)
    status = _status_of(await store.abudget_status(identity.external_id), request.identity_id, period)
    return Reply.json(200, _status_json(status))


async def get_budget(store: Store, request: AdminRequest) -> Reply:
    period = request.period()
    status = _status_of(await store.abudget_status(request.identity_id), request.identity_id, period)
    return Reply.json(200, _status_json(status))


async def remove_budget(store: Store, request: AdminRequest) -> Reply:
    period = request.period()
    identity = await store.aretrieve(request.identity_id)
    _status_of(await store.abudget_status(identity.external_id), request.identity_id, period)
    await store.aremove_budget(identity.external_id, period)
    return Reply.empty()


async def reset_budget(store: Store, request: AdminRequest) -> Reply:
    period = request.period()
    identity = await store.aretrieve(request.identity_id)
    _status_of(await store.abudget_status(identity.external_id), request.identity_id, period)
    await store.areset_budget(identity.external_id, period)
    status = _status_of(await store.abudget_status(identity.external_id), request.identity_id, period)
    return Reply.json(200, _status_json(status))
