"""Admin routes the dashboard needs beyond orq's API: an identity's usage per UTC day."""

from __future__ import annotations

from ..stores.base import METRIC_DAYS, Store
from .errors import AdminError, Reply
from .handlers import AdminRequest

__all__ = ["daily_metrics"]


async def daily_metrics(store: Store, request: AdminRequest) -> Reply:
    """``GET /v2/identities/{id}/metrics/daily?days=30``: one entry per UTC day, oldest first."""
    days = request.count("days", METRIC_DAYS, METRIC_DAYS)
    try:
        daily = await store.adaily_metrics(request.identity_id, days=days)
    except NotImplementedError as error:
        raise AdminError(501, "not_implemented", str(error)) from None
    return Reply.json(200, {"object": "list", "data": [day.model_dump(mode="json") for day in daily]})
