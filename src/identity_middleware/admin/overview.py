"""The console's admin routes beyond orq's API (``/v2/analytics/...``): the workspace overview, the refusal
log and the identity count (CSV exports: :mod:`.exports`). orq's SDK never calls them.

The overview is computed from what the store keeps per identity (metrics per UTC day and per UTC
hour, per model over either), so it reads every identity once per computation, as
``GET /metrics`` does: spend, requests, tokens and errors over the range, its buckets, the models,
the top spenders (sorted here, on the server, over every identity), the budgets at or above
:data:`AT_RISK` percent of a limit or forecast to run out before they reset, and the newest refusals. A
computed overview answers every poll of its store and range for the poll interval (:mod:`.recent`), so
dashboards polling together cost the store one computation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from ..core.admission import ModelUsage
from ..core.budgets import ScopedBudget, ScopeKind
from ..core.metrics import DailyMetrics, HourlyMetrics, Metrics
from ..core.models import Identity
from ..core.money import format_usd
from ..core.periods import UTC
from ..stores.base import MAX_PAGE_SIZE, METRIC_DAYS, METRIC_HOURS, Store
from ..stores.refusals import REFUSAL_LOG_SIZE, Refusal
from .errors import Reply, invalid_request
from .handlers import AdminRequest
from .recent import RecentReplies

__all__ = ["AT_RISK", "RANGES", "all_identities", "count_identities", "logged_refusals", "overview", "refusals"]

AT_RISK = 75  # percent of a limit from which a budget is at risk
RANGES = {"24h": 1, "7d": 7, "30d": 30}  # the range -> whole UTC days of per-model data it reads
TOP = 10
RECENT = RecentReplies()  # the overviews computed last, per store and range
_CONCURRENCY = 32  # identities read at once
T = TypeVar("T")


async def all_identities(store: Store, *, search: str | None = None, tags: Sequence[str] | None = None,
                         include_metrics: bool = False, include_budgets: bool = False) -> AsyncIterator[Identity]:
    """Every identity (matching ``search``/``tags``), page by page in the store's order."""
    cursor: str | None = None
    while True:
        page = await store.alist(limit=MAX_PAGE_SIZE, starting_after=cursor, search=search, tags=tags,
                                 include_metrics=include_metrics, include_budgets=include_budgets)
        for identity in page.data:
            yield identity
        if not page.has_more or not page.data:
            return
        cursor = page.data[-1].id


async def _each(items: Sequence[T], read: Callable[[T], Awaitable[Any]]) -> list[Any]:
    """``read`` of every item, at most :data:`_CONCURRENCY` at once, in order."""
    results: list[Any] = []
    for start in range(0, len(items), _CONCURRENCY):
        results += await asyncio.gather(*(read(item) for item in items[start:start + _CONCURRENCY]))
    return results


@dataclass(slots=True)
class _Bucket:
    start: str
    cost: Decimal = Decimal(0)
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    errors: int = 0

    def add(self, point: DailyMetrics | HourlyMetrics) -> None:
        self.cost += point.cost
        self.requests += point.requests
        self.input_tokens += point.input_tokens
        self.output_tokens += point.output_tokens
        self.errors += point.errors

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start, "cost": format_usd(self.cost), "requests": self.requests,
                "tokens": self.input_tokens + self.output_tokens, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "errors": self.errors}


@dataclass(slots=True)
class _Workspace:
    series: dict[str, _Bucket] = field(default_factory=dict)
    models: dict[str, ModelUsage] = field(default_factory=dict)
    model_costs: dict[str, Decimal] = field(default_factory=dict)
    spenders: list[tuple[Identity, _Bucket]] = field(default_factory=list)

    def add(self, identity: Identity, points: Sequence[DailyMetrics | HourlyMetrics], metrics: Metrics) -> None:
        own = _Bucket("")
        for point in points:
            start = _start(point)
            self.series.setdefault(start, _Bucket(start)).add(point)
            own.add(point)
        if own.requests:
            self.spenders.append((identity, own))
        for share in metrics.models:
            usage = self.models.setdefault(share.model, ModelUsage())
            usage.requests += share.requests
            usage.input_tokens += share.input_tokens
            usage.output_tokens += share.output_tokens
            self.model_costs[share.model] = self.model_costs.get(share.model, Decimal(0)) + share.cost


def _start(point: DailyMetrics | HourlyMetrics) -> str:
    if isinstance(point, HourlyMetrics):
        return point.hour.isoformat().replace("+00:00", "Z")
    return point.day.isoformat()


async def _points(store: Store, identity: Identity, days: int, hourly: bool) -> Sequence[DailyMetrics | HourlyMetrics]:
    if hourly:
        return await store.ahourly_metrics(identity.external_id, hours=METRIC_HOURS)
    return await store.adaily_metrics(identity.external_id, days=days)


async def _keeps(read: Callable[[], Awaitable[object]]) -> bool:
    """Whether the store answers ``read`` (an optional store method raises NotImplementedError)."""
    try:
        await read()
    except NotImplementedError:
        return False
    return True


def _range(request: AdminRequest) -> str:
    value = request.one("range")
    if value is None:
        return "7d"
    if value not in RANGES:
        raise invalid_request(f"range must be one of {', '.join(RANGES)}.", "range")
    return value


def _spender(identity: Identity, bucket: _Bucket) -> dict[str, Any]:
    return {"_id": identity.id, "external_id": identity.external_id, "display_name": identity.display_name,
            "cost": format_usd(bucket.cost), "requests": bucket.requests,
            "tokens": bucket.input_tokens + bucket.output_tokens, "errors": bucket.errors}


def _target(budget: ScopedBudget) -> str:
    if budget.scope is ScopeKind.MATCH:  # a team budget at risk is named by its expression
        return budget.match or ""
    return "workspace" if budget.scope is ScopeKind.WORKSPACE else str(budget.target)


async def _at_risk(store: Store, now: datetime) -> list[dict[str, Any]]:
    """Live budgets at or above AT_RISK percent of their amount or token limit, and those forecast
    to run out before they reset (:mod:`~identity_middleware.core.forecast`), fullest first."""
    found: list[tuple[Decimal, dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        page = await store.alist_budgets(limit=MAX_PAGE_SIZE, starting_after=cursor)
        for budget, usage in page.data:
            if not budget.live(now):
                continue
            shares = []
            if budget.amount:
                shares.append(usage.amount * 100 / budget.amount)
            if budget.token_limit:
                shares.append(Decimal(usage.tokens * 100) / budget.token_limit)
            percent = max(shares, default=Decimal(0))
            exhausts = usage.forecast.exhausts_at if usage.forecast is not None else None
            if percent >= AT_RISK or exhausts is not None:
                amount = None if budget.amount is None else format_usd(budget.amount)
                state = "over" if percent >= 100 else "at_risk" if percent >= AT_RISK else "forecast"
                found.append((percent, {
                    "budget_id": budget.id, "scope": budget.scope.value, "target": _target(budget),
                    "period": budget.period.value, "amount": amount,
                    "spent": format_usd(usage.amount), "token_limit": budget.token_limit, "tokens": usage.tokens,
                    "percent": float(round(percent, 1)), "state": state,
                    "exhausts_at": None if exhausts is None else exhausts.isoformat().replace("+00:00", "Z")}))
        if not page.has_more or not page.data:
            break
        cursor = page.data[-1][0].id
    found.sort(key=lambda item: (-item[0], item[1]["budget_id"]))
    return [entry for _, entry in found]


async def logged_refusals(store: Store, limit: int) -> list[Refusal]:
    try:
        return await store.arecent_refusals(limit)
    except NotImplementedError:
        return []


async def overview(store: Store, request: AdminRequest) -> Reply:
    """``GET /v2/analytics/overview?range=24h|7d|30d``: the workspace over the range (extension),
    computed at most once per poll interval (:mod:`.recent`)."""
    name = _range(request)
    return await RECENT.get(store, name, lambda: _overview(store, name))


async def _overview(store: Store, name: str) -> Reply:
    days = RANGES[name]
    now = datetime.now(UTC)
    identities = [identity async for identity in all_identities(store)]
    first = identities[0].external_id if identities else None
    # Hours where the store keeps them (else the last 24 hours are read as the last 2 UTC days), models
    # over the range's hours or days where it sums a range (else over 30 days).
    hourly = name == "24h" and (first is None or await _keeps(lambda: store.ahourly_metrics(first, hours=1)))
    point_days = 2 if name == "24h" else days  # by day, the last 24 hours reach into yesterday

    ranged = first is None or await _keeps(lambda: store.arecent_metrics(first, days=1))
    models_hours = METRIC_HOURS if hourly and ranged else None
    models_days = None if models_hours else point_days if ranged else METRIC_DAYS

    async def read(identity: Identity) -> tuple[Sequence[DailyMetrics | HourlyMetrics], Metrics]:
        if ranged:  # the buckets and the models over the same hours or days: one read where the store can
            usage = await store.ausage_over(identity.external_id, hours=models_hours, days=models_days)
            return usage.points, usage.totals
        return await _points(store, identity, point_days, hourly), await store.ametrics(identity.external_id)

    workspace = _Workspace()
    for identity, (points, metrics) in zip(identities, await _each(identities, read), strict=True):
        workspace.add(identity, points, metrics)
    series = [workspace.series[start] for start in sorted(workspace.series)]
    totals = _Bucket("")
    for bucket in series:
        totals.cost += bucket.cost
        totals.requests += bucket.requests
        totals.input_tokens += bucket.input_tokens
        totals.output_tokens += bucket.output_tokens
        totals.errors += bucket.errors
    workspace.spenders.sort(key=lambda item: (-item[1].cost, -item[1].requests, item[0].external_id))
    models = sorted(workspace.models.items(), key=lambda item: (-workspace.model_costs[item[0]], item[0]))
    body = {
        "object": "overview", "range": name, "granularity": "hour" if hourly else "day",
        "models_days": models_days, "models_hours": models_hours,
        "totals": {**totals.to_json(), "identities": len(identities),
                   "error_rate": totals.errors / totals.requests if totals.requests else 0.0},
        "series": [bucket.to_json() for bucket in series],
        "models": [{"model": model, "requests": usage.requests, "cost": format_usd(workspace.model_costs[model]),
                    "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}
                   for model, usage in models],
        "top_spenders": [_spender(identity, bucket) for identity, bucket in workspace.spenders[:TOP]],
        "budgets_at_risk": await _at_risk(store, now),
        "refusals": [refusal.to_json() for refusal in await logged_refusals(store, TOP)],
    }
    return Reply.json(200, body)


async def refusals(store: Store, request: AdminRequest) -> Reply:
    """``GET /v2/analytics/refusals?limit=50``: the store's refusal log, newest first (extension)."""
    found = await logged_refusals(store, request.count("limit", 50, REFUSAL_LOG_SIZE))
    return Reply.json(200, {"object": "list", "data": [refusal.to_json() for refusal in found]})


async def count_identities(store: Store, request: AdminRequest) -> Reply:
    """``GET /v2/analytics/identities/count``: how many identities match ``search`` and ``tags``."""
    total = 0
    async for _ in all_identities(store, search=request.one("search") or None, tags=request.tags()):
        total += 1
    return Reply.json(200, {"object": "count", "total": total})
