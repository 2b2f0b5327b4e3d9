"""Scoped budgets across processes: a model budget's hot key in its own slot holds on the real
Cluster, and a threshold alert is sent once however many processes cross it together."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest

from alert_receiver import Received, alert_receiver
from identity_middleware.core.admission import AdmissionRequest, Settlement, Usage
from identity_middleware.core.budgets import Alert, BudgetSpec
from identity_middleware.core.models import IdentityInput
from identity_middleware.core.money import to_nanos
from identity_middleware.core.signing import signature_problem
from identity_middleware.stores import RedisStore, Store

MakeStore = Callable[..., Store]
CENT = to_nanos("0.01")
MODEL = "openai/gpt-4o"
SECRET = "alert-secret"


async def _request(store: RedisStore, external_id: str) -> bool:
    admission = await store.aadmit(AdmissionRequest(external_id, estimate=CENT, model=MODEL))
    if not admission.allowed:
        return False
    await asyncio.sleep(0)  # the LLM call: other requests interleave while this one holds its reservation
    usage = Usage()
    usage.add(CENT, 5, 5, MODEL)
    # ``charged``: the team (match) budgets the admission matched, charged as the middleware does
    await store.asettle(Settlement(admission.identity.id, usage, admission.reservation, None, admission.charged))
    return True


def _app_instance(url: str, prefix: str, members: list[str], requests: int, notifier: str | None) -> int:
    """One app instance: ``requests`` concurrent requests, taking turns among ``members``."""
    async def main() -> int:
        store = RedisStore.from_url(url, prefix=prefix, request_timeout=None,
                                    notifiers={"ops": notifier} if notifier else None, notifier_secret=SECRET)
        try:
            results = await asyncio.gather(*(_request(store, members[n % len(members)]) for n in range(requests)))
        finally:
            await store.aclose()
        if store.alerts is not None:
            assert store.alerts.drain()  # each delivery answered: the receiver had recorded it before answering
        return sum(results)

    return asyncio.run(main())


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["redis", "redis-cluster"])
def test_four_processes_stay_within_a_one_dollar_model_budget(
    make_store: MakeStore, request: pytest.FixtureRequest, kind: str
) -> None:
    prefix = f"m{uuid.uuid4().hex[:10]}"
    store = make_store(kind, prefix=prefix)
    budget = store.create_budget(BudgetSpec(scope="model", target=MODEL, period="daily", amount="1.00"))
    url = request.getfixturevalue("redis_url" if kind == "redis" else "redis_cluster_url")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        # One identity per process: the model budget is the only thing they share.
        admitted = sum(pool.starmap(_app_instance, [(url, prefix, [f"user_{n}"], 100, None) for n in range(4)]))
    spent = store.budget_usage(budget.id).amount
    # The bound (README): overshoot <= the in-flight estimation error, here 0 (estimate == cost).
    assert spent <= Decimal("1.00")
    assert spent == Decimal("0.01") * admitted
    assert admitted >= 90, admitted  # refusals beyond the budget come only from compensated reservations


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["redis", "redis-cluster"])
def test_a_team_of_identities_in_four_processes_stays_within_its_team_budget(
    make_store: MakeStore, request: pytest.FixtureRequest, kind: str
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    store = make_store(kind, prefix=prefix)
    members = [[f"p{process}_member_{n}" for n in range(3)] for process in range(4)]
    for name in (name for group in members for name in group):  # twelve identities, spread over the slots
        store.create(IdentityInput(id=name, metadata={"team": "ml"}))
    store.create(IdentityInput(id="outsider", metadata={"team": "infra"}))
    budget = store.create_budget(BudgetSpec(scope="match", match='metadata.team == "ml"', period="daily",
                                            amount="1.00"))
    url = request.getfixturevalue("redis_url" if kind == "redis" else "redis_cluster_url")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        admitted = sum(pool.starmap(_app_instance, [(url, prefix, group, 100, None) for group in members]))
    spent = store.budget_usage(budget.id).amount
    # The bound (docs/concepts/team-budgets.md): the team budget's counters live in its own slot, checked
    # and reserved atomically there, so overshoot <= the in-flight estimation error: here 0.
    assert spent <= Decimal("1.00")
    assert spent == Decimal("0.01") * admitted
    assert admitted >= 90, admitted  # refusals beyond the budget come only from compensated reservations
    assert store.admit(AdmissionRequest("outsider")).allowed  # not in the team: not under its budget


@pytest.fixture
def receiver() -> Iterator[tuple[str, Received]]:
    with alert_receiver() as receiving:
        yield receiving


@pytest.mark.slow
def test_four_processes_crossing_a_threshold_together_send_one_signed_event(
    make_store: MakeStore, redis_url: str, receiver: tuple[str, Received]
) -> None:
    url, received = receiver
    prefix = f"a{uuid.uuid4().hex[:10]}"
    store = make_store("redis", prefix=prefix)
    budget = store.create_budget(BudgetSpec(scope="workspace", period="monthly", amount="0.50",
                                            alerts=[Alert(threshold_percent=50, notifier_ids=("ops",))]))
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.starmap(_app_instance, [(redis_url, prefix, [f"user_{n}"], 20, url) for n in range(4)])
    # each process delivered what it fired before returning (store.alerts.drain())
    assert len(received) == 1, received
    event, signature = received[0]
    assert event["type"] == "budget.threshold_reached" and event["budget_id"] == budget.id
    assert event["threshold_percent"] == 50 and event["dimension"] == "cost" and event["limit"] == "0.50"
    body = json.dumps(event, separators=(",", ":"))
    assert signature_problem(SECRET, body, signature, time.time()) is None
