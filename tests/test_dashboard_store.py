"""What the console reads from the stores: the refusal log, metrics over a range, hourly buckets (every store kind)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from identity_middleware import Budget, IdentityInput
from identity_middleware.core.admission import AdmissionRequest
from identity_middleware.stores import MemoryStore, Store
from identity_middleware.stores.refusals import REFUSAL_LOG_SIZE, REFUSAL_TTL, MemoryRefusalLog, Refusal

# Redis expires counters by the wall clock, so the stores are asked at the real instant (one per run).
NOW = datetime.now(UTC)
NANOS = 1_000_000_000


def refused_over_budget(store: Store, external_id: str, *, estimate: int = 0, now: datetime = NOW) -> None:
    store.create(IdentityInput(id=external_id))
    store.set_budget(external_id, Budget(period="daily", amount=Decimal("0.10")))
    store.record(external_id, cost=Decimal("0.10") if not estimate else Decimal("0.08"), now=now)
    admission = store.admit(AdmissionRequest(external_id=external_id, estimate=estimate, now=now))
    assert admission.blocked is not None


def test_a_refused_admission_is_logged_with_identity_budget_and_time(store: Store) -> None:
    refused_over_budget(store, "jane")
    [refusal] = store.recent_refusals(now=NOW)
    assert (refusal.external_id, refusal.period, refusal.scope, refusal.at) == ("jane", "daily", "identity", NOW)
    assert refusal.identity_id == store.retrieve("jane").id
    assert (refusal.amount, refusal.spent, refusal.estimate) == (Decimal("0.10"), Decimal("0.10"), 0)
    assert refusal.budget_id is not None and store.retrieve("jane").id in refusal.budget_id


def test_an_estimate_that_no_longer_fits_is_logged_with_the_estimate(store: Store) -> None:
    refused_over_budget(store, "ann", estimate=5 * NANOS // 100)
    [refusal] = store.recent_refusals(now=NOW)
    assert (refusal.spent, refusal.estimate) == (Decimal("0.08"), Decimal("0.05"))


def test_admitted_requests_are_not_logged(store: Store) -> None:
    store.create(IdentityInput(id="ok"))
    store.set_budget("ok", Budget(period="daily", amount=Decimal("1")))
    assert store.admit(AdmissionRequest(external_id="ok", estimate=NANOS // 10, now=NOW)).blocked is None
    assert store.recent_refusals(now=NOW) == []


@pytest.mark.anyio
async def test_refusals_read_newest_first_and_limited_in_async_too(store: Store) -> None:
    for n in range(3):
        refused_over_budget(store, f"u{n}", now=NOW + timedelta(seconds=n))
    newest = await store.arecent_refusals(2, now=NOW + timedelta(seconds=5))
    assert [refusal.external_id for refusal in newest] == ["u2", "u1"]


def test_refusals_older_than_the_ttl_are_not_read(store: Store) -> None:
    refused_over_budget(store, "old")
    assert store.recent_refusals(now=NOW + REFUSAL_TTL + timedelta(seconds=1)) == []


def test_the_memory_log_keeps_the_newest_entries_up_to_its_size() -> None:
    log = MemoryRefusalLog()
    for n in range(REFUSAL_LOG_SIZE + 5):
        log.add(Refusal(NOW, f"u{n}", "x", None, None, "daily", Decimal(1), Decimal(1), Decimal(0), Decimal(0)))
    recent = log.recent(REFUSAL_LOG_SIZE, NOW)
    assert len(recent) == REFUSAL_LOG_SIZE and recent[0].external_id == f"u{REFUSAL_LOG_SIZE + 4}"


def test_a_refusal_survives_its_json_form() -> None:
    refusal = Refusal(NOW, "a\"b", "01J", "bi_x_daily", "identity", "daily", Decimal("0.1"), Decimal("0.1"),
                      Decimal("0.000000001"), Decimal("0.05"))
    assert Refusal.decode(refusal.encode()) == refusal


def test_metrics_over_fewer_days_leave_out_older_usage(store: Store) -> None:
    store.create(IdentityInput(id="m"))
    store.record("m", cost=Decimal("1"), model="gpt-4o", now=NOW - timedelta(days=10))  # kept 31 days
    store.record("m", cost=Decimal("0.5"), model="gpt-4o", now=NOW)
    week = store.recent_metrics("m", days=7, now=NOW)
    assert (week.total_cost, week.total_requests, week.models[0].cost) == (Decimal("0.5"), 1, Decimal("0.5"))
    assert store.metrics("m", now=NOW).total_cost == Decimal("1.5")


def test_memory_keeps_the_last_24_hours_by_hour() -> None:
    store = MemoryStore()
    store.create(IdentityInput(id="h"))
    store.record("h", cost=Decimal("0.2"), input_tokens=3, now=NOW - timedelta(hours=2))
    store.record("h", cost=Decimal("0.1"), error=True, now=NOW)
    hours = store.hourly_metrics("h", now=NOW)
    assert len(hours) == 24 and hours[-1].hour == NOW.replace(minute=0, second=0, microsecond=0)
    assert (hours[-1].cost, hours[-1].errors, hours[-3].cost, hours[-3].input_tokens) == (
        Decimal("0.1"), 1, Decimal("0.2"), 3)
    assert sum(hour.requests for hour in hours) == 2


def test_redis_keeps_the_log_in_one_expiring_list_beside_the_identities(make_store: Any) -> None:
    store = make_store("redis")
    refused_over_budget(store, "r")
    key = f"{store.prefix}:refusals"
    assert store.client.llen(key) == 1
    assert REFUSAL_TTL.total_seconds() - 60 < store.client.ttl(key) <= REFUSAL_TTL.total_seconds()
