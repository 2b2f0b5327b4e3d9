"""A Cluster that cannot route a command now is an outage, and only for the identities it cannot serve.

What redis-py's Cluster client raises when no master serves a slot, no node can be reached, or the
topology cannot be read whole (``SlotNotCoveredError``, ``RedisClusterUnreachableError``,
``ClusterError``, a plain ``RedisClusterException`` about coverage; not all of them ``RedisError``s)
meets the outage policy (never a 500) and leaves settlements buffered, written once when the slot
is served again. A master's loss affects only the identities it holds: each master has its own
breaker, so identities on the other masters are admitted (tracked) as usual. Real private Clusters
(``cluster-require-full-coverage no``, the recommended setting) with a slot taken from every node's
view (``CLUSTER DELSLOTS``) or a master killed (SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from decimal import Decimal

import pytest
import redis
from redis.crc import key_slot
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from fake_clock import Clock
from identity_middleware import IdentityMiddleware, budgeted, current_identity, record_usage
from identity_middleware.core.admission import AdmissionRequest
from identity_middleware.core.errors import StoreLate, StoreUnavailable
from identity_middleware.core.models import Budget, IdentityInput
from identity_middleware.core.money import to_nanos
from identity_middleware.stores import RedisStore
from identity_middleware.stores.health import Failure, Health
from identity_middleware.stores.redis.keys import identity_tag
from identity_middleware.stores.redis.transport import down
from identity_middleware.stores.redis.verdicts import IDLE, Shards
from outages import asettlements_outlast, settlements_outlast
from redis_servers import Cluster, cluster_nodes
from waiting import wait_until

CENT = to_nanos("0.01")
OPTIONS = ("--cluster-node-timeout", "1000", "--cluster-require-full-coverage", "no")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A private 3-master Cluster whose slots tests take away and give back."""
    with cluster_nodes(3, 0, *OPTIONS) as found:
        yield found


@pytest.fixture
def doomed() -> Iterator[Cluster]:
    """A private 3-master Cluster of this test's own: one of its masters is killed."""
    with cluster_nodes(3, 0, *OPTIONS) as found:
        yield found


def slot_of(external_id: str) -> int:
    return key_slot(f"{{{identity_tag(external_id)}}}".encode())


def users_by_master(cluster: Cluster, count: int = 60) -> dict[int, list[str]]:
    """External ids ``user-N`` grouped by the port of the master holding them."""
    found: dict[int, list[str]] = {}
    for index in range(count):
        user = f"user-{index}"
        found.setdefault(cluster.master_of(slot_of(user)), []).append(user)
    return found


@contextlib.contextmanager
def uncovered(cluster: Cluster, slot: int) -> Iterator[None]:
    """``slot`` served by no master in any node's view (``CLUSTER DELSLOTS`` on each), then given back
    to its master (``CLUSTER ADDSLOTS``), until every node maps it to that master again."""
    owner = cluster.master_of(slot)
    for port in cluster.ports:
        with redis.Redis(port=port) as node:
            node.execute_command("CLUSTER", "DELSLOTS", slot)
    try:
        yield
    finally:
        with redis.Redis(port=owner) as node:
            node.execute_command("CLUSTER", "ADDSLOTS", slot)
        def maps_it_to_owner(port: int) -> bool:
            with redis.Redis(port=port) as node:
                return any(start <= slot <= end and int(master[1]) == owner
                           for start, end, master, *_ in node.execute_command("CLUSTER", "SLOTS"))

        wait_until(lambda: all(maps_it_to_owner(port) for port in cluster.ports),
                   f"slot {slot} given back to {owner} in every node's view", every=0.05)


def spent(store: RedisStore, identity: str) -> tuple[Decimal, int]:
    metrics = store.metrics(identity)
    return metrics.total_cost, metrics.total_requests


def test_what_the_cluster_client_raises_when_it_cannot_route_now_is_an_outage_and_mistakes_are_not() -> None:
    exceptions = redis.exceptions
    assert down(exceptions.SlotNotCoveredError('Slot "7" is not covered by the cluster.'))
    assert down(exceptions.RedisClusterUnreachableError("Redis Cluster cannot be connected."))
    assert down(exceptions.ClusterError("TTL exhausted."))
    assert down(exceptions.RedisClusterException("All slots are not covered after query all startup_nodes."))
    assert down(exceptions.RedisClusterException("startup_nodes could not agree on a valid slots cache"))
    assert not down(exceptions.CrossSlotTransactionError("keys in different slots"))
    assert not down(exceptions.RedisClusterException("method eval() is not implemented"))
    assert not down(ValueError("no"))


def test_each_master_has_a_breaker_and_one_no_call_asks_is_forgotten() -> None:
    clock = Clock()
    shards = Shards(lambda: Health(clock=clock), clock)
    assert shards.of("127.0.0.1:7000") is shards.of("127.0.0.1:7000") is not shards.of("127.0.0.1:7001")
    assert shards.of(None) is shards.store
    shards.of("127.0.0.1:7000").failed(Failure.REFUSED)
    assert shards.down and not shards.store.down and not shards.of("127.0.0.1:7001").down
    clock.now += IDLE - 0.5
    assert shards.down
    clock.now += 1.0
    assert not shards.down  # a master replaced: its slots are another node's, and nothing asks it
    assert not shards.of("127.0.0.1:7000").down  # asked again: a breaker of its own, closed


def test_settlements_of_a_slot_no_master_serves_stay_buffered_and_land_once(cluster: Cluster) -> None:
    store = RedisStore.from_url(cluster.url, prefix="unc", linger=60.0)
    user = "uncovered-sync"
    try:
        settlements_outlast(store, user, uncovered(cluster, slot_of(user)))  # an admission too: an outage, not a 500
        assert spent(store, user) == (Decimal("0.03"), 3)
    finally:
        store.close()


def test_async_settlements_of_a_slot_no_master_serves_stay_buffered_and_land_once(cluster: Cluster) -> None:
    store = RedisStore.from_url(cluster.url, prefix="unca")
    user = "uncovered-async"

    async def main() -> None:
        await asettlements_outlast(store, user, uncovered(cluster, slot_of(user)))
        await store.aclose()

    try:
        asyncio.run(main())
        assert spent(store, user) == (Decimal("0.03"), 3)
    finally:
        store.close()


@budgeted(estimate="0.01")
async def llm(request: Request) -> Response:
    record_usage("0.01")
    return JSONResponse({"tracked": current_identity() is not None})


def app_of(store: RedisStore, policy: str) -> Starlette:
    return Starlette(routes=[Route("/llm", llm, methods=["POST"])],
                     middleware=[Middleware(IdentityMiddleware, store=store, on_store_error=policy)])


def outage_lines(caplog: pytest.LogCaptureFixture) -> tuple[int, int, list[str]]:
    """How many 'unavailable' and 'available again' lines were logged, and any that should not be."""
    messages = [record.getMessage() for record in caplog.records]
    wrong = [each for each in messages if "never retrieved" in each or "refused" in each or "Traceback" in each]
    return (len([each for each in messages if "store unavailable" in each]),
            len([each for each in messages if "available again" in each]), wrong)


@pytest.mark.parametrize("policy", ["open", "closed"])
def test_budgeted_requests_for_a_slot_no_master_serves_follow_the_policy_and_log_once(
        cluster: Cluster, policy: str, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    store = RedisStore.from_url(cluster.url, prefix=f"uncm{policy}", clock=clock)
    user = f"uncovered-{policy}"
    body = {"identity": {"id": user}}
    try:
        store.create(IdentityInput(id=user))
        store.set_budget(user, Budget(period="daily", amount="1.00"))
        with TestClient(app_of(store, policy)) as client, caplog.at_level(logging.WARNING):
            assert client.post("/llm", json=body).json() == {"tracked": True}
            with uncovered(cluster, slot_of(user)):
                during = [client.post("/llm", json=body) for _ in range(5)]
                if policy == "open":
                    assert [(each.status_code, each.json()) for each in during] == [(200, {"tracked": False})] * 5
                else:
                    assert [each.status_code for each in during] == [503] * 5
            # A breaker the outage opened that no call asks any more (the slot's, while no master
            # served it) is forgotten after IDLE: only then is the outage over.
            clock.now += IDLE
            after = client.post("/llm", json=body)
            assert (after.status_code, after.json()) == (200, {"tracked": True})
        assert spent(store, user)[0] == Decimal("0.02")  # before and after; those let through are untracked
        assert outage_lines(caplog) == (1, 1, [])
    finally:
        store.close()


def test_sync_admissions_on_healthy_masters_are_served_while_another_master_is_down(
        doomed: Cluster) -> None:
    store = RedisStore.from_url(doomed.url, prefix="kill")
    by_master = users_by_master(doomed)
    lost, *healthy = sorted(by_master)
    try:
        for users in by_master.values():
            for user in users:
                assert store.admit(AdmissionRequest(user, estimate=CENT, create_missing=True)).allowed
        doomed.kill(lost)
        for _ in range(3):  # the lost master's identities first, so their failures come before the others
            for user in by_master[lost]:
                with pytest.raises(StoreUnavailable) as raised:
                    store.admit(AdmissionRequest(user, estimate=CENT))
                assert not isinstance(raised.value, StoreLate)  # an outage, not a late reply
            for port in healthy:
                for user in by_master[port]:
                    admission = store.admit(AdmissionRequest(user, estimate=CENT))
                    assert admission.allowed and admission.identity is not None
        assert store.partly_down
    finally:
        with contextlib.suppress(StoreUnavailable):
            store.close()


def test_async_admissions_on_healthy_masters_are_served_while_another_master_is_down(
        doomed: Cluster) -> None:
    store = RedisStore.from_url(doomed.url, prefix="akill")
    by_master = users_by_master(doomed)
    lost, *healthy = sorted(by_master)

    async def main() -> list[bool]:
        for users in by_master.values():
            for user in users:
                await store.aadmit(AdmissionRequest(user, estimate=CENT, create_missing=True))
        doomed.kill(lost)
        served = []
        for _ in range(3):
            failed = await asyncio.gather(*(store.aadmit(AdmissionRequest(user, estimate=CENT))
                                            for user in by_master[lost]), return_exceptions=True)
            assert all(isinstance(each, StoreUnavailable) and not isinstance(each, StoreLate) for each in failed)
            for port in healthy:
                admissions = await asyncio.gather(*(store.aadmit(AdmissionRequest(user, estimate=CENT))
                                                    for user in by_master[port]))
                served += [admission.allowed and admission.identity is not None for admission in admissions]
        with contextlib.suppress(StoreUnavailable):
            await store.aclose()
        return served

    try:
        served = asyncio.run(main())
        assert served and all(served)
    finally:
        with contextlib.suppress(StoreUnavailable):
            store.close()


@pytest.mark.parametrize("policy", ["open", "closed"])
def test_identities_on_healthy_masters_answer_tracked_while_another_master_is_down(
        doomed: Cluster, policy: str, caplog: pytest.LogCaptureFixture) -> None:
    store = RedisStore.from_url(doomed.url, prefix=f"mkill{policy}")
    # A store with nothing of its own to write first, to read the spend; its scripts are loaded
    # now (redis-py loads a script on every master: not while one is gone).
    reader = RedisStore.from_url(doomed.url, prefix=f"mkill{policy}")
    by_master = users_by_master(doomed, 30)
    lost, *healthy = sorted(by_master)
    try:
        with TestClient(app_of(store, policy)) as client, caplog.at_level(logging.WARNING):
            for users in by_master.values():
                for user in users:
                    assert client.post("/llm", json={"identity": {"id": user}}).json() == {"tracked": True}
            reader.metrics(by_master[lost][0])
            doomed.kill(lost)
            answers: dict[str, list[tuple[int, bool | None]]] = {"lost": [], "healthy": []}
            for _ in range(3):
                for port, users in by_master.items():
                    for user in users:
                        response = client.post("/llm", json={"identity": {"id": user}})
                        tracked = response.json().get("tracked") if response.status_code == 200 else None
                        answers["lost" if port == lost else "healthy"].append((response.status_code, tracked))
        assert set(answers["healthy"]) == {(200, True)}
        assert set(answers["lost"]) == ({(200, False)} if policy == "open" else {(503, None)})
        unavailable, again, wrong = outage_lines(caplog)
        assert (unavailable, again, wrong) == (1, 0, [])  # one line for the outage, not one per answer between
        assert {spent(reader, user) for port in healthy for user in by_master[port]} == {(Decimal("0.04"), 4)}
    finally:
        with contextlib.suppress(StoreUnavailable):
            store.close()
        reader.close()
