"""Usage over time: an identity's 30-day metrics, per model and per UTC day (pydantic v2)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

from pydantic import BaseModel, Field, field_serializer

from .money import format_usd, from_nanos
from .usage import ModelUsage

__all__ = ["DailyMetrics", "HourlyMetrics", "Metrics", "ModelMetrics", "UsageOver", "daily_from_counters",
           "hourly_from_counters", "metrics_from_totals", "utc_hour"]


def _usd(value: Decimal) -> str:
    return format_usd(value)


class ModelMetrics(BaseModel):
    """One model's usage over the last 30 UTC days (``requests``: the LLM calls made with it)."""

    model: str
    cost: Decimal = Decimal(0)
    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0

    @field_serializer("cost")
    def _dump_cost(self, value: Decimal) -> str:
        return _usd(value)


class Metrics(BaseModel):
    """Usage over the last 30 UTC days. ``models`` (most expensive first) and ``unpriced_requests``
    (LLM calls recorded at cost 0 because their model had no price) are our extensions."""

    total_cost: Decimal = Decimal(0)
    total_tokens: int = 0
    total_requests: int = 0
    error_rate: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    total_errors: int = 0
    unpriced_requests: int = 0
    models: list[ModelMetrics] = Field(default_factory=list)

    @field_serializer("total_cost")
    def _dump_cost(self, value: Decimal) -> str:
        return _usd(value)


class DailyMetrics(BaseModel):
    """One UTC day's usage of one identity (cost exact, as a decimal string in JSON)."""

    day: date
    cost: Decimal = Decimal(0)
    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0
    errors: int = 0

    @field_serializer("cost")
    def _dump_cost(self, value: Decimal) -> str:
        return _usd(value)


def daily_from_counters(day: date, counters: list[int]) -> DailyMetrics:
    """:class:`DailyMetrics` from one day's ``cost (nano-USD), input, output, requests, errors``."""
    cost, input_tokens, output_tokens, requests, errors = counters
    return DailyMetrics(day=day, cost=from_nanos(cost), input_tokens=input_tokens, output_tokens=output_tokens,
                        requests=requests, errors=errors)


class HourlyMetrics(BaseModel):
    """One UTC hour's usage of one identity (``hour``: its start, in UTC)."""

    hour: datetime
    cost: Decimal = Decimal(0)
    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0
    errors: int = 0

    @field_serializer("cost")
    def _dump_cost(self, value: Decimal) -> str:
        return _usd(value)


@dataclass(frozen=True, slots=True)
class UsageOver:
    """An identity's usage over the last hours or days: each bucket, oldest first, and their sums
    (per model too)."""

    points: Sequence[DailyMetrics | HourlyMetrics]
    totals: Metrics


def utc_hour(now: datetime) -> datetime:
    """The start of ``now``'s UTC hour (an aware datetime)."""
    utc = now if now.tzinfo is UTC else now.astimezone(UTC)
    # Positional, tzinfo included: datetime's keyword arguments (and replace()'s) cost 2.7x as much,
    # and the memory store counts every settlement into its hour.
    return datetime(utc.year, utc.month, utc.day, utc.hour, 0, 0, 0, UTC)


def hourly_from_counters(hour: datetime, counters: list[int]) -> HourlyMetrics:
    """:class:`HourlyMetrics` from one hour's ``cost (nano-USD), input, output, requests, errors``."""
    cost, input_tokens, output_tokens, requests, errors = counters
    return HourlyMetrics(hour=hour, cost=from_nanos(cost), input_tokens=input_tokens, output_tokens=output_tokens,
                         requests=requests, errors=errors)


def metrics_from_totals(cost: int, input_tokens: int, output_tokens: int, requests: int, errors: int,
                        unpriced: int = 0, models: Mapping[str, ModelUsage] | None = None) -> Metrics:
    """:class:`Metrics` from summed daily counters (cost in nano-USD)."""
    return Metrics(
        total_cost=from_nanos(cost),
        total_tokens=input_tokens + output_tokens,
        total_requests=requests,
        error_rate=errors / requests if requests else 0.0,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_errors=errors,
        unpriced_requests=unpriced,
        models=[ModelMetrics(model=name, cost=from_nanos(share.cost), input_tokens=share.input_tokens,
                             output_tokens=share.output_tokens, requests=share.requests)
                for name, share in sorted((models or {}).items(), key=lambda item: (-item[1].cost, item[0]))],
    )
