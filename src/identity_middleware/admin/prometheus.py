"""``GET /metrics``: per-identity usage and budgets in the Prometheus text format, top N identities, the rest summed.

The store keeps usage per UTC day, so what is exported is a window (the last 30 days, the current
budget periods): gauges, not counters. Labels are bounded: the ``top`` identities by 30-day cost get
their own ``identity`` label, the others are summed under ``identity="__other__"`` (their budgets
are counted in ``identity_middleware_budgets_blocking_other``), so a million identities make a scrape
of ``top`` series, not a million. Each scrape reads every identity once (pages of 200).
``identity_middleware_unmetered_*`` are counters of the scraped process: usage it dropped rather
than charge it to the wrong identity (see :mod:`identity_middleware.unmetered`);
``identity_middleware_tier_requests_total{tier=...}`` counts the requests the scraped process
admitted in each degrade tier (see :mod:`identity_middleware.tier_requests`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from ..core.models import BudgetStatus, Identity, Metrics
from ..stores.base import MAX_PAGE_SIZE, Store
from ..stores.refusals import REFUSAL_LOG_SIZE, Refusal
from ..tier_requests import tier_requests
from ..unmetered import unmetered_usage

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["DEFAULT_TOP", "OTHER", "Snapshot", "exposition", "snapshot"]

DEFAULT_TOP = 50
OTHER = "__other__"
_PREFIX = "identity_middleware"


@dataclass(slots=True)
class Snapshot:
    """What one scrape reports: the top identities (metrics and budgets attached) and the rest summed."""

    top: list[Identity]
    other: Metrics = field(default_factory=Metrics)
    other_count: int = 0
    other_blocking: int = 0
    #: (external id, period) -> the newest logged refusal by that identity budget
    refusals: dict[tuple[str, str], Refusal] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self.top) + self.other_count


def _metrics(identity: Identity) -> Metrics:
    return identity.metrics if identity.metrics is not None else Metrics()


def blocks(status: BudgetStatus, refused: Refusal | None) -> bool:
    """Whether the budget refuses requests now: used up (reservations counted), or its last refusal in
    this period was an estimate that still does not fit (so the same request is refused again)."""
    used = status.spent + status.reserved
    if used >= status.amount:
        return True
    return (refused is not None and refused.at >= status.period_start and refused.estimate > 0
            and used + refused.estimate > status.amount)


def _refused(refusals: dict[tuple[str, str], Refusal], identity: Identity, status: BudgetStatus) -> Refusal | None:
    return refusals.get((identity.external_id, status.period.value))


def _fold(identities: Sequence[Identity], refusals: dict[tuple[str, str], Refusal]) -> tuple[Metrics, int]:
    """The summed metrics of ``identities`` and how many of their budgets block now."""
    totals = [_metrics(identity) for identity in identities]
    requests = sum(m.total_requests for m in totals)
    errors = sum(m.total_errors for m in totals)
    summed = Metrics(
        total_cost=sum((m.total_cost for m in totals), Decimal(0)),
        total_tokens=sum(m.total_tokens for m in totals),
        total_requests=requests,
        error_rate=errors / requests if requests else 0.0,
        input_tokens=sum(m.input_tokens for m in totals),
        output_tokens=sum(m.output_tokens for m in totals),
        total_errors=errors,
    )
    blocking = sum(1 for identity in identities for status in identity.budgets or ()
                   if blocks(status, _refused(refusals, identity, status)))
    return summed, blocking


async def snapshot(store: Store, top: int = DEFAULT_TOP) -> Snapshot:
    """Every identity with its 30-day metrics and budgets; the ``top`` by cost (then requests) kept apart."""
    everyone: list[Identity] = []
    cursor: str | None = None
    while True:
        page = await store.alist(limit=MAX_PAGE_SIZE, starting_after=cursor, include_metrics=True,
                                 include_budgets=True)
        everyone.extend(page.data)
        if not page.has_more or not page.data:
            break
        cursor = page.data[-1].id
    everyone.sort(key=lambda i: (-_metrics(i).total_cost, -_metrics(i).total_requests, i.external_id))
    refusals = await _identity_refusals(store)
    rest = everyone[top:]
    other, blocking = _fold(rest, refusals)
    return Snapshot(everyone[:top], other, len(rest), blocking, refusals)


async def _identity_refusals(store: Store) -> dict[tuple[str, str], Refusal]:
    """The newest logged refusal of each identity budget (none from a store without a refusal log)."""
    try:
        logged = await store.arecent_refusals(REFUSAL_LOG_SIZE)
    except NotImplementedError:
        return {}
    newest: dict[tuple[str, str], Refusal] = {}
    for refusal in logged:  # newest first
        if refusal.scope in (None, "identity"):
            newest.setdefault((refusal.external_id, refusal.period), refusal)
    return newest


def _families(snap: Snapshot) -> Iterator[Metric]:
    from prometheus_client.core import GaugeMetricFamily

    def gauge(name: str, documentation: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"{_PREFIX}_{name}", documentation, labels=list(labels))

    identities = gauge("identities", "Identities in the store.")
    identities.add_metric([], snap.total)
    folded = gauge("identities_other", f"Identities beyond the top N, summed under identity=\"{OTHER}\".")
    folded.add_metric([], snap.other_count)
    cost = gauge("cost_30d_usd", "Cost over the last 30 UTC days, in USD.", ["identity"])
    tokens = gauge("tokens_30d", "Tokens over the last 30 UTC days.", ["identity", "direction"])
    requests = gauge("requests_30d", "Requests over the last 30 UTC days (blocked ones included).", ["identity"])
    errors = gauge("errors_30d", "Errors over the last 30 UTC days (blocked requests included).", ["identity"])
    rows = [(identity.external_id, _metrics(identity)) for identity in snap.top]
    if snap.other_count:
        rows.append((OTHER, snap.other))
    for label, metrics in rows:
        cost.add_metric([label], float(metrics.total_cost))
        tokens.add_metric([label, "input"], metrics.input_tokens)
        tokens.add_metric([label, "output"], metrics.output_tokens)
        requests.add_metric([label], metrics.total_requests)
        errors.add_metric([label], metrics.total_errors)
    yield from (identities, folded, cost, tokens, requests, errors)

    budget_labels = ["identity", "period"]
    amount = gauge("budget_amount_usd", "The budget's amount per period, in USD.", budget_labels)
    spent = gauge("budget_spent_usd", "Spent in the current period, in USD.", budget_labels)
    reserved = gauge("budget_reserved_usd", "Held by in-flight requests' estimates, in USD.", budget_labels)
    consumed = gauge("budget_consumed_ratio", "spent / amount in the current period (1 = exhausted).", budget_labels)
    blocking = gauge("budget_blocking", "1 while the budget refuses requests (spent + reserved >= amount, or "
                                        "its last refused estimate still does not fit).", budget_labels)
    for identity in snap.top:
        for status in identity.budgets or ():
            labels = [identity.external_id, status.period.value]
            amount.add_metric(labels, float(status.amount))
            spent.add_metric(labels, float(status.spent))
            reserved.add_metric(labels, float(status.reserved))
            consumed.add_metric(labels, float(status.spent / status.amount))
            blocking.add_metric(labels, 1 if blocks(status, _refused(snap.refusals, identity, status)) else 0)
    other_blocking = gauge("budgets_blocking_other", "Budgets refusing requests among the identities beyond the top N.")
    other_blocking.add_metric([], snap.other_blocking)
    yield from (amount, spent, reserved, consumed, blocking, other_blocking)


def _unmetered_families() -> Iterator[Metric]:
    """This process's usage dropped rather than charged to another identity (counters since it started)."""
    from prometheus_client.core import CounterMetricFamily

    dropped = unmetered_usage()
    yield CounterMetricFamily(f"{_PREFIX}_unmetered_calls", "LLM calls whose usage could not be put on their own "
                              "identity and was dropped (this process; see the log).", value=dropped.calls)
    yield CounterMetricFamily(f"{_PREFIX}_unmetered_cost_usd", "The cost of those calls, in USD (this process).",
                              value=float(dropped.cost))
    tokens = CounterMetricFamily(f"{_PREFIX}_unmetered_tokens", "The tokens of those calls (this process).",
                                 labels=["direction"])
    tokens.add_metric(["input"], dropped.input_tokens)
    tokens.add_metric(["output"], dropped.output_tokens)
    yield tokens


def _tier_families() -> Iterator[Metric]:
    """Requests this process admitted in each degrade tier (``degrade=``), counters since it started."""
    from prometheus_client.core import CounterMetricFamily

    tiers = CounterMetricFamily(f"{_PREFIX}_tier_requests", "Requests admitted in a degrade tier, by the tier's name "
                                "(this process).", labels=["tier"])
    for name, count in sorted(tier_requests().items()):
        tiers.add_metric([name], count)
    yield tiers


class _Collector:
    def __init__(self, snap: Snapshot) -> None:
        self._snap = snap

    def collect(self) -> Iterator[Metric]:
        yield from _families(self._snap)
        yield from _unmetered_families()
        yield from _tier_families()


def exposition(snap: Snapshot) -> tuple[bytes, str]:
    """The text exposition of ``snap`` and its content type (needs ``prometheus-client``)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(_Collector(snap)), CONTENT_TYPE_LATEST
