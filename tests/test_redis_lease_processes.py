"""Leasing across processes (issue 13): 4 processes x 800 concurrent requests on one identity with a
small budget, on a real Redis and on the real Cluster. The budget invariant holds exactly and every
request is counted once. (What leasing saves in Redis calls depends on how the requests interleave,
so it is measured by the benchmark, ``bench.run --store redis-lease``, not asserted here.)"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import uuid
from collections.abc import Callable
from decimal import Decimal

import pytest

from identity_middleware.core.admission import AdmissionRequest, Settlement, Usage
from identity_middleware.core.models import Budget, IdentityInput
from identity_middleware.core.money import to_nanos
from identity_middleware.stores import Lease, RedisStore, Store

MakeStore = Callable[..., Store]
COST = to_nanos("0.001")
PROCESSES, REQUESTS = 4, 800
AMOUNT = Decimal("2.40")  # 2400 requests' worth of 3200: the last quarter is refused


async def _request(store: RedisStore, external_id: str) -> bool:
    admission = await store.aadmit(AdmissionRequest(external_id, estimate=COST))
    if not admission.allowed:
        return False
    await asyncio.sleep(random.random() / 100)  # the LLM call: requests interleave while it runs
    assert admission.identity is not None
    await store.asettle(Settlement(admission.identity.id, Usage(cost=COST, input_tokens=3, output_tokens=2),
                                   admission.reservation))
    return True


def _app_instance(url: str, prefix: str, external_id: str) -> int:
    async def main() -> int:
        store = RedisStore.from_url(url, prefix=prefix, request_timeout=None, lease=Lease())
        try:
            results = await asyncio.gather(*(_request(store, external_id) for _ in range(REQUESTS)))
        finally:
            await store.aclose()  # flushes, then gives back what the lease still holds
        return sum(results)

    return asyncio.run(main())


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["redis", "redis-cluster"])
def test_four_leasing_processes_hold_the_budget_exactly(
    make_store: MakeStore, request: pytest.FixtureRequest, kind: str
) -> None:
    prefix = f"l{uuid.uuid4().hex[:10]}"
    store = make_store(kind, prefix=prefix)
    external_id = "shared_user"
    store.create(IdentityInput(id=external_id))
    store.set_budget(external_id, Budget(period="daily", amount=AMOUNT))
    url = request.getfixturevalue("redis_url" if kind == "redis" else "redis_cluster_url")
    with multiprocessing.get_context("spawn").Pool(PROCESSES) as pool:
        per_process = pool.starmap(_app_instance, [(url, prefix, external_id)] * PROCESSES)
    admitted = sum(per_process)
    total = PROCESSES * REQUESTS
    (status,) = store.budget_status(external_id)
    metrics = store.metrics(external_id)
    # The invariant, exactly: spend + reservations (leases included) never passed the amount, and
    # with every request settled and every lease given back, nothing is held any more.
    assert status.spent + status.reserved <= AMOUNT
    assert status.reserved == 0
    assert status.spent == Decimal("0.001") * admitted
    # Every request counted once: admitted ones by their settlement, refused ones as errors.
    assert metrics.total_requests == total
    assert metrics.total_errors == total - admitted
    assert metrics.total_cost == Decimal("0.001") * admitted
    assert metrics.total_tokens == 5 * admitted
    # Refusals come once the budget is (nearly) spent: at most what the leases held at the end.
    assert admitted >= 0.9 * 2400, per_process
