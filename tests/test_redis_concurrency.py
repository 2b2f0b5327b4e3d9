"""Budgets hold under concurrency across processes, and money sums exactly under concurrent commits."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import uuid
from collections.abc import Callable
from decimal import Decimal

import pytest

from identity_middleware.core.admission import AdmissionRequest, Settlement, Usage
from identity_middleware.core.models import Budget, IdentityInput
from identity_middleware.core.money import to_nanos
from identity_middleware.core.periods import Period
from identity_middleware.stores import RedisStore, Store

MakeStore = Callable[..., Store]
CENT = to_nanos("0.01")


async def _admit_and_settle(store: RedisStore, external_id: str) -> bool:
    admission = await store.aadmit(AdmissionRequest(external_id, estimate=CENT))
    if not admission.allowed:
        return False
    await asyncio.sleep(0)  # the "LLM call": other requests interleave while this one holds its reservation
    await store.asettle(Settlement(admission.identity.id, Usage(cost=CENT), admission.reservation))
    return True


def _app_instance(url: str, prefix: str, external_id: str, requests: int) -> int:
    """One app server process: ``requests`` concurrent admissions; returns how many were admitted."""

    async def main() -> int:
        # No request timeout: a process starved of CPU on a shared machine may wait past it, and a
        # timed-out admission's reservation would hold budget until it expires. This test is about
        # the budget under concurrency; tests/test_redis_stall.py is about the timeout.
        store = RedisStore.from_url(url, prefix=prefix, request_timeout=None)
        try:
            results = await asyncio.gather(*(_admit_and_settle(store, external_id) for _ in range(requests)))
        finally:
            await store.aclose()
        return sum(results)

    return asyncio.run(main())


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["redis", "redis-cluster"])
def test_four_processes_never_overspend_and_count_every_request(
    make_store: MakeStore, request: pytest.FixtureRequest, kind: str
) -> None:
    prefix = f"c{uuid.uuid4().hex[:10]}"
    store = make_store(kind, prefix=prefix)
    store.create(IdentityInput(id="shared"))
    store.set_budget("shared", Budget(period=Period.DAILY, amount=Decimal("1.00")))
    url = request.getfixturevalue("redis_url" if kind == "redis" else "redis_cluster_url")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        admitted = sum(pool.starmap(_app_instance, [(url, prefix, "shared", 100)] * 4))
    status = store.budget_status("shared")[0]
    metrics = store.metrics("shared")
    assert status.spent <= Decimal("1.00")
    assert status.spent == Decimal("0.01") * admitted and status.reserved == 0
    assert admitted == 100  # estimates equal costs: the budget is used to the cent, never beyond
    assert metrics.total_requests == 400 and metrics.total_errors == 400 - admitted


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["redis", "redis-cluster"])
def test_100k_tiny_commits_sum_exactly(make_store: MakeStore, kind: str) -> None:
    store = make_store(kind)
    assert isinstance(store, RedisStore)
    identity = store.create(IdentityInput(id="tiny"))
    store.set_budget("tiny", Budget(period=Period.MONTHLY, amount=Decimal("1")))
    tiny = to_nanos("0.0000001")
    errors: list[BaseException] = []

    async def client(count: int) -> None:
        for _ in range(count):
            await store.asettle(Settlement(identity.id, Usage(cost=tiny), None))
            if _ % 1000 == 0:
                await asyncio.sleep(0)
        await store.aflush()

    def thread(count: int) -> None:
        try:
            asyncio.run(client(count))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=thread, args=(25_000,)) for _ in range(4)]
    for each in threads:
        each.start()
    for each in threads:
        each.join()
    assert errors == []
    assert store.metrics("tiny").total_cost == Decimal("0.01")
    assert store.metrics("tiny").total_requests == 100_000
    assert store.budget_status("tiny")[0].spent == Decimal("0.01")
