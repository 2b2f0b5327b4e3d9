"""Plain values to script arguments and script replies to models: no keys, no I/O, no state."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

from ....core.admission import BudgetState, Consumed, ModelUsage, Usage
from ....core.budgets import Dimension, ScopedBudget, ScopeKind, budget_bounds, identity_budget_id
from ....core.forecast import forecast, identity_span
from ....core.metrics import HourlyMetrics, hourly_from_counters, utc_hour
from ....core.models import (
    BudgetStatus,
    DailyMetrics,
    Identity,
    Metrics,
    budget_status,
    daily_from_counters,
    metrics_from_totals,
)
from ....core.money import from_nanos, to_nanos
from ....core.periods import UTC, Period, period_bounds
from ....core.scoped import ScopedState
from ..keys import ONE_TIME, PERIODS

_PROFILE = ("display_name", "email", "avatar_url", "tags", "metadata")
_PERIOD_NAMES = (*(period.value for period in PERIODS), ONE_TIME)  # lib.lua's period indexes, from 1


def now_or(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def packed(key: str) -> bytes:
    """A key as one bulk string of the Redis protocol (script keys are packed once and cached)."""
    data = key.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def encode(name: str, value: Any) -> str:
    # tags/metadata set to None mean "clear" (as MemoryStore does); JSON is canonical so equal
    # values compare equal inside the script and an unchanged upsert leaves `updated` alone.
    if value is None and name in ("tags", "metadata"):
        value = [] if name == "tags" else {}
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def field_args(changes: dict[str, Any]) -> list[str]:
    """Profile changes as the admit script's ``n, name, value, ...`` arguments."""
    args = [str(len(changes))]
    for name, value in changes.items():
        args += [name, encode(name, value)]
    return args


def as_map(reply: Any) -> dict[str, str]:
    """A hash reply as a dict: RESP3 sends a map, RESP2 and Lua a flat list."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))


def version(fields: dict[str, str]) -> str:
    """``"<ULID> <updated>"``: what the admit script compares to skip sending an unchanged record."""
    return f"{fields['u']} {fields['t']}"


def identity(fields: dict[str, str]) -> Identity:
    profile = {name: json.loads(fields[name]) for name in _PROFILE if name in fields}
    return Identity(id=fields["u"], external_id=fields["x"], created=datetime.fromisoformat(fields["c"]),
                    updated=datetime.fromisoformat(fields["t"]), last_source=fields.get("ls"), **profile)


@dataclass(frozen=True, slots=True)
class BudgetRow:
    """One identity budget as lib.lua reports it (nano-USD, tokens, admissions in the last minute)."""

    period: str  # daily..yearly, or one_time
    amount: int | None
    spent: int
    reserved: int
    tokens: int
    token_limit: int | None
    requests: int
    requests_per_minute: int | None
    live: bool


def _optional(value: Any) -> int | None:
    return None if value in ("", b"") else int(value)


def rows(reply: Any) -> list[BudgetRow]:
    """A script's budget rows ``{period index, amount, spent, reserved, tokens, token limit, requests,
    requests per minute, live}`` (lib.lua), daily first."""
    return [BudgetRow(_PERIOD_NAMES[int(row[0]) - 1], _optional(row[1]), int(row[2]), int(row[3]), int(row[4]),
                      _optional(row[5]), int(row[6]), _optional(row[7]), bool(int(row[8]))) for row in reply]


def states(reply: Any, now: datetime, tz: tzinfo) -> list[BudgetState]:
    """The live calendar budgets with an amount (the per-identity view), daily first."""
    result = []
    for row in rows(reply):
        if row.live and row.amount is not None and row.period != ONE_TIME:
            start, end = period_bounds(row.period, now, tz)
            result.append(BudgetState(Period(row.period), row.amount, row.spent, row.reserved, start, end))
    return result


def consumed(reply: Any, now: datetime, tz: tzinfo) -> tuple[Consumed, ...]:
    """The live budgets with an amount as steering reads them (spend and reservations before this request)."""
    found = []
    for row in rows(reply):
        if row.live and row.amount is not None:
            start, end = period_bounds(row.period, now, tz) if row.period != ONE_TIME else (None, None)
            found.append(Consumed(row.period, row.spent + row.reserved, row.amount, end, start))
    return tuple(found)


def statuses(reply: Any, now: datetime, tz: tzinfo, recent: int = 0) -> list[BudgetStatus]:
    """The per-identity statuses, each with its forecast at the rate of ``recent`` (:func:`recent_cost`)."""
    since = identity_span(now)
    return [budget_status(s.period, s.amount, s.spent, s.reserved, s.period_start, s.resets_at,
                          forecast(s.amount, s.spent, recent, since, now, s.resets_at))
            for s in states(reply, now, tz)]


def recent_cost(reply: Sequence[Any]) -> int:
    """The cost (nano-USD) in the metrics script's reply for today and the previous UTC day."""
    return sum(int(as_map(day).get("c", 0)) for day in reply)


def scoped_states(budget_rows: list[BudgetRow], identity: Identity, now: datetime, tz: tzinfo) -> list[ScopedState]:
    """The live rows as :class:`ScopedState` of the identity's budgets (their limits; no alerts), to
    name the one that blocks."""
    result = []
    for row in budget_rows:
        if not row.live:
            continue
        budget = ScopedBudget(
            id=identity_budget_id(identity.id, row.period), scope=ScopeKind.IDENTITY, target=identity.external_id,
            period=row.period, amount=None if row.amount is None else from_nanos(row.amount),
            token_limit=row.token_limit, requests_per_minute=row.requests_per_minute, created_at=now,
            updated_at=now)
        _, start, end = budget_bounds(budget, now, tz)
        result.append(ScopedState(budget, row.spent, row.reserved, row.tokens, row.requests, start, end))
    return result


# A day's metric hash (keys.py): totals under one letter, per-model counters under a prefix and the
# model name. "m:" (requests per model) is the field older versions already wrote.
_TOTALS = {"c": 0, "i": 1, "o": 2, "n": 3, "e": 4, "u": 5}
_MODEL_FIELDS = {"m": "requests", "mc": "cost", "mi": "input_tokens", "mo": "output_tokens"}


def day_increments(usage: Usage) -> list[str | int]:
    """The settle script's field/increment pairs for the per-model and unpriced counters of ``usage``
    (a charge's, summed)."""
    args: list[str | int] = ["u", usage.unpriced] if usage.unpriced else []
    for model, share in usage.models.items():
        args += [f"m:{model}", share.requests]
        for prefix, value in (("mc", share.cost), ("mi", share.input_tokens), ("mo", share.output_tokens)):
            if value:
                args += [f"{prefix}:{model}", value]
    return args


def metrics(reply: Sequence[Any]) -> Metrics:
    """Metrics from the metrics script's reply: each day's hash as a flat list, summed exactly."""
    totals = [0] * 6
    models: dict[str, ModelUsage] = {}
    for day in reply:
        for name, value in as_map(day).items():
            index = _TOTALS.get(name)
            if index is not None:
                totals[index] += int(value)
                continue
            prefix, _, model = name.partition(":")
            attribute = _MODEL_FIELDS.get(prefix)
            if attribute is not None and model:
                share = models.setdefault(model, ModelUsage())
                setattr(share, attribute, getattr(share, attribute) + int(value))
    cost, input_tokens, output_tokens, requests, errors, unpriced = totals
    return metrics_from_totals(cost, input_tokens, output_tokens, requests, errors, unpriced, models)


def _counters(bucket: Any) -> list[int]:
    """A metrics hash's ``cost, input, output, requests, errors``."""
    fields = as_map(bucket)
    return [int(fields.get(name, 0)) for name in ("c", "i", "o", "n", "e")]


def daily(reply: Sequence[Any], today: date) -> list[DailyMetrics]:
    """Per-day metrics from the metrics script's reply (one hash a day, today first), oldest first."""
    days = [daily_from_counters(today - timedelta(days=offset), _counters(day)) for offset, day in enumerate(reply)]
    days.reverse()
    return days


def hourly(reply: Sequence[Any], now: datetime) -> list[HourlyMetrics]:
    """Per-hour metrics from the metrics script's reply (one hash an hour, this hour first), oldest first."""
    current = utc_hour(now)
    hours = [hourly_from_counters(current - timedelta(hours=offset), _counters(hour))
             for offset, hour in enumerate(reply)]
    hours.reverse()
    return hours


# -- scoped budgets as the scripts take them ---------------------------------------------------------
def alert_thresholds(budget: ScopedBudget) -> list[tuple[int, str, int]]:
    """Each alert as (percent, ``c`` or ``t``, threshold): the threshold is ``ceil(percent * limit /
    100)`` in nano-USD or tokens, computed here in integers, so that the scripts compare integers
    below 2^53 only (exact in Lua's doubles). Alerts on a dimension without a limit are left out."""
    amount = None if budget.amount is None else to_nanos(budget.amount)
    found: dict[tuple[int, str, int], None] = {}
    for alert in budget.alerts:
        limit = amount if alert.dimension is Dimension.COST else budget.token_limit
        if limit:
            found[alert.threshold_percent, alert.dimension.value[0], -(-alert.threshold_percent * limit // 100)] = None
    return list(found)


def limits_field(budget: ScopedBudget) -> str:
    """The ``l:<period>`` field lib.lua enforces and counts by: ``"<live>:<expiry ms>:<amount nanos>:
    <token limit>:<requests per minute>:<alerts>"``, each alert ``<percent><c|t><threshold>``, and
    ``0f0`` when the budget asks for the forecast alert."""
    alerts = ",".join(f"{percent}{dim}{threshold}" for percent, dim, threshold in alert_thresholds(budget))
    if budget.forecast_alert is not None and budget.amount is not None:  # settle.lua's forecast alert
        alerts = f"{alerts},0f0" if alerts else "0f0"
    parts = [int(budget.is_active), "" if budget.expires_at is None else ms(budget.expires_at),
             "" if budget.amount is None else to_nanos(budget.amount), budget.token_limit or "",
             budget.requests_per_minute or "", alerts]
    return ":".join(str(part) for part in parts)


def enforced_field(budget: ScopedBudget) -> str | None:
    """The value of the ``<period>`` field the admission script enforces, or None (not enforced)."""
    if budget.period.calendar is None or budget.amount is None or not budget.is_active:
        return None
    nanos = to_nanos(budget.amount)
    return str(nanos) if budget.expires_at is None else f"{nanos}:{ms(budget.expires_at)}"


def limit_args(budget: ScopedBudget) -> list[str | int]:
    """A scoped.lua call's amount (nano-USD) and token limit arguments ('' for none)."""
    return [to_nanos(budget.amount) if budget.amount is not None else "",
            budget.token_limit if budget.token_limit is not None else ""]


def expire_at(end: datetime | None) -> int:
    """When a global budget's counters of a period ending at ``end`` expire (Unix seconds; 0: never)."""
    return 0 if end is None else math.ceil((end + timedelta(days=1)).timestamp())
