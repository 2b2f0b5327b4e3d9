"""The ``/v2/identities`` routes as orq's SDK calls them: ``{"identity": Record}`` replies, orq list parameters."""

from __future__ import annotations

from typing import Any

from ..core.errors import IdentityNotFound
from ..core.models import Identity, IdentityInput, IdentityUpdate
from ..core.ordering import IdentityOrder
from ..core.validation import InvalidIdentity, check_id, check_text
from ..stores.base import Store
from .errors import Reply, invalid_request, not_found
from .handlers import AdminRequest, budgets_of
from .wire import identity_record

__all__ = ["create_identity", "delete_identity", "list_identities", "retrieve_identity", "update_identity"]

SORT_FIELDS = {"IDENTITY_SORT_FIELD_DISPLAY_NAME": IdentityOrder.DISPLAY_NAME,
               "IDENTITY_SORT_FIELD_UPDATED": IdentityOrder.UPDATED}
# The SDK clears these with an empty string; None clears them in the store.
_CLEARED_BY_EMPTY = ("display_name", "email", "avatar_url", "logo_url")


def _profile(data: dict[str, Any]) -> dict[str, Any]:
    """The body's profile fields, with both spellings checked where both are given (the first wins).

    ``metadata`` is an object here, as orq's SDK sends it (the request-body identity the middleware
    reads may also give an array of objects, merged; its merged size is no JSON Schema can bound).
    """
    if data.get("metadata") is not None and not isinstance(data["metadata"], dict):
        raise InvalidIdentity("metadata", "metadata must be an object")
    if "avatar_url" in data and "logo_url" in data:
        check_text(data["logo_url"], "logo_url")
    if "id" in data and "external_id" in data:
        check_id(data["external_id"], "external_id")
    return data


def _record(identity: Identity, request: AdminRequest) -> dict[str, Any]:
    return identity_record(identity, request.workspace_id, budget=request.flag("include_budget"),
                           budgets=request.flag("include_budgets"))


def _reply(status: int, identity: Identity, request: AdminRequest) -> Reply:
    return Reply.json(status, {"identity": _record(identity, request)})


async def _with_extras(store: Store, identity: Identity, request: AdminRequest) -> Identity:
    extra: dict[str, Any] = {}
    # By external id: it names this identity only (an external id shaped like its ULID could name another).
    if request.flag("include_metrics"):
        extra["metrics"] = await store.ametrics(identity.external_id)
    if any([request.flag("include_budgets"), request.flag("include_budget")]):  # both validated
        extra["budgets"] = await store.abudget_status(identity.external_id)
    return identity.model_copy(update=extra) if extra else identity


def _order(request: AdminRequest) -> IdentityOrder:
    value = request.one("sort_by")
    if value is None:
        return IdentityOrder.CREATED
    if value not in SORT_FIELDS:
        raise invalid_request(f"sort_by must be one of {', '.join(SORT_FIELDS)}.", "sort_by")
    return SORT_FIELDS[value]


async def create_identity(store: Store, request: AdminRequest) -> Reply:
    data = _profile(request.json_object())
    identity = IdentityInput.parse(data)
    budgets = budgets_of(data)  # all validated before anything is written
    record = await store.acreate(identity)
    for budget in budgets:
        await store.aset_budget(record.external_id, budget)
    if budgets:
        record = record.model_copy(update={"budgets": await store.abudget_status(record.external_id)})
    shown = identity_record(record, request.workspace_id, budget=request.flag("include_budget"))
    return Reply.json(201, {"identity": shown})


async def retrieve_identity(store: Store, request: AdminRequest) -> Reply:
    record = await store.aretrieve(request.identity_id)
    return _reply(200, await _with_extras(store, record, request), request)


async def update_identity(store: Store, request: AdminRequest) -> Reply:
    data = _profile(request.json_object())
    data.update({name: None for name in _CLEARED_BY_EMPTY if data.get(name) == ""})
    changes = IdentityUpdate.parse(data).changes()
    if changes:
        record = await store.aupdate(request.identity_id, **changes)
    else:
        record = await store.aretrieve(request.identity_id)
    return _reply(200, record, request)


async def delete_identity(store: Store, request: AdminRequest) -> Reply:
    await store.adelete(request.identity_id)
    return Reply.json(200, {})


async def list_identities(store: Store, request: AdminRequest) -> Reply:
    starting_after, ending_before = request.cursor("starting_after"), request.cursor("ending_before")
    options: dict[str, Any] = {}  # only what is asked, so a store written before these options still serves
    if all_tags := request.tags("filter_by.tags"):
        options["all_tags"] = all_tags
    if (order := _order(request)) is not IdentityOrder.CREATED:
        options["order"] = order
    try:
        page = await store.alist(
            limit=request.limit(),
            starting_after=starting_after,
            ending_before=ending_before,
            search=request.one("search") or None,
            tags=request.tags(),
            include_metrics=request.flag("include_metrics"),
            include_budgets=any([request.flag("include_budgets"), request.flag("include_budget")]),
            **options,
        )
    except IdentityNotFound as error:  # a cursor of a sorted list must name an identity
        name = "starting_after" if error.args and error.args[0] == starting_after else "ending_before"
        raise not_found(f"{name} names no identity.", field=name) from None
    return Reply.json(200, {"object": "list", "data": [_record(identity, request) for identity in page.data],
                            "has_more": page.has_more})
