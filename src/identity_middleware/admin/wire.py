"""The orq wire shapes: JSON with exact decimal numbers, the identity record and its singular budget."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from ..core.budgets import identity_budget_id
from ..core.forecast import Forecast
from ..core.models import BudgetStatus, Identity, Metrics
from ..core.money import format_usd
from ..core.periods import PERIODS

__all__ = ["dumps", "forecast_json", "identity_budget", "identity_record"]


def _encode(value: Any) -> str:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} has no JSON number")
        return format_usd(value)  # the exact decimal text, written as a JSON number (never via a float)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{json.dumps(str(key))}:{_encode(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_encode(item) for item in value) + "]"
    return json.dumps(value)


def dumps(body: Mapping[str, Any]) -> bytes:
    """Compact JSON like ``json.dumps``, with :class:`~decimal.Decimal` values written as exact JSON numbers."""
    return _encode(body).encode()


def _metrics(metrics: Metrics) -> dict[str, Any]:
    """The orq ``metrics``: money as JSON numbers (the SDK's ``IdentityMetrics`` types them so),
    our extension fields beside them in the same convention."""
    data = metrics.model_dump(mode="json")
    data["total_cost"] = metrics.total_cost
    for shown, model in zip(data["models"], metrics.models, strict=True):
        shown["cost"] = model.cost
    return data


def forecast_json(forecast: Forecast) -> dict[str, Any]:
    """Our ``forecast`` extension in orq's shapes: ``exhausts_at`` (ISO 8601 or null), ``burn_rate``
    (USD a day, a JSON number written from the exact decimal)."""
    exhausts = forecast.exhausts_at
    return {"exhausts_at": None if exhausts is None else exhausts.isoformat().replace("+00:00", "Z"),
            "burn_rate": forecast.burn_rate}


def identity_budget(identity: Identity, statuses: Sequence[BudgetStatus]) -> dict[str, Any] | None:
    """The SDK's singular ``Budget`` of an identity: its identity-scoped budget that resets last
    (of those that reset at the same instant, as daily and monthly do on a month's last day, the
    longer period: the answer does not change with the day it is asked).

    The store keeps no budget timestamps, so ``created_at``/``updated_at`` are the identity's own
    (the budget cannot be older than its identity). ``budget_id`` is the Budgets API's id of that
    budget (``bi_<_id>_<period>``): ``orq.budgets.get`` reads it.
    """
    if not statuses:
        return None
    status = max(statuses, key=lambda item: (item.resets_at, PERIODS.index(item.period)))
    times = identity.model_dump(mode="json", include={"created", "updated"})
    singular: dict[str, Any] = {
        "budget_id": identity_budget_id(identity.id, status.period.value),
        "scope": {"identity": {"identity_external_id": identity.external_id}},
        "limits": {"period": f"BUDGET_PERIOD_{status.period.value.upper()}", "amount": status.amount},
        "is_active": True,
        "created_at": times["created"],
        "updated_at": times["updated"],
    }
    if status.forecast is not None:  # our extension, as on every budget
        singular["forecast"] = forecast_json(status.forecast)
    return singular


def identity_record(identity: Identity, workspace_id: str, *, budget: bool = False,
                    budgets: bool = True) -> dict[str, Any]:
    """The orq ``Identity`` record: ``workspace_id``, numeric ``metrics`` when loaded, the singular
    ``budget`` when asked (from the loaded ``budgets``), and our ``budgets`` list unless told not to."""
    shown = identity.to_json()
    record = {"_id": shown.pop("_id"), "external_id": shown.pop("external_id"), "workspace_id": workspace_id,
              **shown}
    if identity.metrics is not None:
        record["metrics"] = _metrics(identity.metrics)
    if budget:
        singular = identity_budget(identity, identity.budgets or [])
        if singular is not None:
            record["budget"] = singular
    if not budgets:
        record.pop("budgets", None)
    return record
