"""The console's CSV exports (``/v2/analytics/.../export``): every matching identity, and the refusal log."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

from ..core.metrics import Metrics
from ..core.models import Identity
from ..core.money import format_usd
from ..stores.base import Store
from ..stores.refusals import REFUSAL_LOG_SIZE
from .errors import Reply
from .handlers import AdminRequest
from .overview import AT_RISK, all_identities, logged_refusals

__all__ = ["export_identities", "export_refusals"]

_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> str:
    """One CSV cell; text a spreadsheet would run as a formula starts with a quote (identity fields are user input)."""
    text = "" if value is None else str(value)
    return f"'{text}" if text.startswith(_FORMULA) else text


def _csv(name: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Reply:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows([_cell(value) for value in row] for row in rows)
    return Reply(200, out.getvalue().encode(), (("content-type", "text/csv; charset=utf-8"),
                                                ("content-disposition", f'attachment; filename="{name}.csv"')))


def _tightest(identity: Identity) -> tuple[str, str, str]:
    statuses = identity.budgets or []
    if not statuses:
        return "", "", ""
    status = max(statuses, key=lambda item: item.percent)
    state = "over" if status.percent >= 100 else "at risk" if status.percent >= AT_RISK else "ok"
    return status.period.value, f"{status.percent}", state


async def export_identities(store: Store, request: AdminRequest) -> Reply:
    """``GET /v2/analytics/identities/export``: every matching identity with its 30-day numbers, as CSV."""
    rows = []
    async for identity in all_identities(store, search=request.one("search") or None, tags=request.tags(),
                                         include_metrics=True, include_budgets=True):
        metrics = identity.metrics or Metrics()
        rows.append([identity.external_id, identity.id, identity.display_name, identity.email,
                     " ".join(identity.tags), identity.last_source, metrics.total_requests,
                     format_usd(metrics.total_cost), metrics.total_tokens, f"{metrics.error_rate:.4f}",
                     *_tightest(identity)])
    header = ["external_id", "_id", "display_name", "email", "tags", "last_source", "requests_30d", "cost_30d_usd",
              "tokens_30d", "error_rate_30d", "tightest_budget", "tightest_budget_percent", "tightest_budget_state"]
    return _csv("identities", header, rows)


async def export_refusals(store: Store, request: AdminRequest) -> Reply:
    """``GET /v2/analytics/refusals/export``: the whole refusal log as CSV, newest first."""
    found = await logged_refusals(store, REFUSAL_LOG_SIZE)
    header = ["at", "external_id", "identity_id", "budget_id", "scope", "period", "amount_usd", "spent_usd",
              "reserved_usd", "estimate_usd"]
    return _csv("refusals", header, ([refusal.to_json()[name] for name in
                                      ("at", "external_id", "identity_id", "budget_id", "scope", "period", "amount",
                                       "spent", "reserved", "estimate")] for refusal in found))

