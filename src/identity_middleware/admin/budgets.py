"""The admin API's Budgets routes (``/v2/budgets``, orq's Budgets API): a parsed request in, a :class:`Reply` out."""

from __future__ import annotations

from typing import Any

from ..core.budgets import BudgetExists, BudgetNotFound, InvalidBudget
from ..core.errors import IdentityNotFound
from ..stores.base import Store
from .budget_wire import budget_json, changes_from, encode, kind_of, order_of, parse_body, period_of, spec_from
from .errors import AdminError, Reply, invalid_request, not_found
from .handlers import AdminRequest

__all__ = ["create_budget", "delete_budget", "get_budget", "list_budgets", "reset_consumption", "update_budget"]


def _reply(status: int, body: dict[str, Any]) -> Reply:
    return Reply(status, encode(body))


def _missing(budget_id: str) -> AdminError:
    return not_found(f"No budget has the id {budget_id!r}.", budget_id=budget_id)


def _budget_id(request: AdminRequest) -> str:
    return request.params["budget_id"]


async def _guarded(call: Any) -> Any:
    """Store errors of the budgets API as admin errors (the dispatcher maps the rest)."""
    try:
        return await call
    except BudgetNotFound as error:
        raise _missing(str(error.args[0]) if error.args else "") from None
    except BudgetExists as error:
        existing = str(error.args[0]) if error.args else ""
        raise AdminError(409, "budget_exists", "A budget for this scope, target and period exists already: "
                         f"{existing!r}.", budget_id=existing) from None
    except InvalidBudget as error:
        raise invalid_request(error.message, error.field) from None
    except ValueError as error:  # a change the stored budget refuses (e.g. its period)
        if isinstance(error, IdentityNotFound):
            raise
        raise invalid_request(str(error)) from None


async def create_budget(store: Store, request: AdminRequest) -> Reply:
    spec = spec_from(parse_body(request.body))
    budget = await _guarded(store.acreate_budget(spec))
    return _reply(200, {"budget": budget_json(budget)})


async def get_budget(store: Store, request: AdminRequest) -> Reply:
    budget = await _guarded(store.aretrieve_budget(_budget_id(request)))
    usage = await _guarded(store.abudget_usage(budget.id))
    return _reply(200, {"budget": budget_json(budget, usage)})


async def update_budget(store: Store, request: AdminRequest) -> Reply:
    changes = changes_from(parse_body(request.body))
    budget = await _guarded(store.aupdate_budget(_budget_id(request), changes))
    return _reply(200, {"budget": budget_json(budget)})


async def delete_budget(store: Store, request: AdminRequest) -> Reply:
    await _guarded(store.adelete_budget(_budget_id(request)))
    return _reply(200, {})


async def reset_consumption(store: Store, request: AdminRequest) -> Reply:
    if request.body.strip():
        parse_body(request.body)  # the SDK sends {}; anything else must still be an object
    budget_id = _budget_id(request)
    await _guarded(store.areset_budget_consumption(budget_id))
    budget = await _guarded(store.aretrieve_budget(budget_id))
    return _reply(200, {"budget": budget_json(budget)})


def _cursor(request: AdminRequest, name: str) -> str | None:
    value = request.one(name) or None  # empty: not given
    if value is not None and len(value) > 64:
        raise invalid_request(f"{name} must be a budget id.", name)
    return value


def _values(request: AdminRequest, name: str) -> list[str]:
    return [part.strip(" ") for value in request.query.get(name, ()) for part in value.split(",") if part.strip(" ")]


async def list_budgets(store: Store, request: AdminRequest) -> Reply:
    active = request.one("is_active")
    page = await _guarded(store.alist_budgets(
        limit=request.limit(),
        starting_after=_cursor(request, "starting_after"),
        ending_before=_cursor(request, "ending_before"),
        scope_kinds=[kind_of(value) for value in _values(request, "scope_kind")] or None,
        target=request.one("scope_target_id") or None,
        is_active=None if active is None else request.flag("is_active"),
        periods=[period_of(value, "period").value for value in _values(request, "period")] or None,
        query=request.one("query") or None,
        order=order_of(request.one("sort_by") or None),
    ))
    return _reply(200, {"object": "list", "data": [budget_json(budget, usage) for budget, usage in page.data],
                        "hasMore": page.has_more, "has_more": page.has_more})
