"""On a Cluster, one master's failure affects only the identities it holds: while the master holding
the registry of global budgets (``P:{budgets}:defs``) does not answer, identities on the other
masters are admitted as usual on the last good copy of the registry."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import redis
from redis.crc import key_slot

from fake_clock import Clock
from identity_middleware.core.admission import AdmissionRequest
from identity_middleware.core.money import to_nanos
from identity_middleware.core.periods import UTC
from identity_middleware.stores import RedisStore
from identity_middleware.stores.redis.keys import KeySchema, identity_tag
from identity_middleware.stores.redis.plans.registry import REFRESH, STALE_LIMIT, Registry
from redis_servers import redis_cluster, stalled

CENT = to_nanos("0.01")
PREFIX = "fo"


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A private 3-master Cluster (one of its masters is stalled here)."""
    with redis_cluster() as url:
        yield url


def port_of_slot(url: str, slot: int) -> int:
    """The port of the master serving ``slot``."""
    with redis.Redis(port=urlsplit(url).port) as admin:
        for start, end, master, *_ in admin.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return int(master[1])
    raise AssertionError(f"no master serves slot {slot}")


def registry_port(url: str, prefix: str) -> int:
    """The port of the master holding the registry of global budgets of a store with ``prefix``."""
    return port_of_slot(url, key_slot(f"{prefix}:{{budgets}}:defs".encode()))


def identities_elsewhere(url: str, prefix: str, count: int) -> list[str]:
    """External ids of identities held by masters other than the registry's."""
    avoid = registry_port(url, prefix)
    found = [f"user-{index}" for index in range(200)
             if port_of_slot(url, key_slot(f"{{{identity_tag(f'user-{index}')}}}".encode())) != avoid]
    return found[:count]


def test_the_staleness_bound_is_longer_than_a_refresh() -> None:
    assert STALE_LIMIT > REFRESH


def test_an_admission_reads_the_registry_as_the_copy_held_until_the_staleness_bound() -> None:
    clock = Clock()
    registry = Registry(KeySchema(PREFIX), UTC, global_budgets=True, clock=clock)
    assert registry.held_defs() is None  # nothing held: the admission reads the registry itself
    registry.keep_defs({})
    clock.now += REFRESH + 0.1
    # Stale: read apart before the admission (due); the admission itself serves the copy held,
    # never reads it inline (its master may be the one that is down).
    assert registry.due() and registry.fresh_defs() is None and registry.held_defs() == {}
    clock.now += STALE_LIMIT
    assert registry.held_defs() is None


def test_sync_admissions_on_healthy_masters_go_on_while_the_registrys_master_stalls(cluster: str) -> None:
    clock = Clock()
    store = RedisStore.from_url(cluster, prefix=PREFIX, clock=clock, request_timeout=1.0)
    users = identities_elsewhere(cluster, PREFIX, 5)
    try:
        # The registry is read by the first admissions (it is empty: an app with identity budgets only).
        assert all(store.admit(AdmissionRequest(user, estimate=CENT, create_missing=True)).allowed for user in users)
        with stalled(registry_port(cluster, PREFIX), 3):
            clock.now += REFRESH + 0.1  # the copy is stale: the next admission reads it, and cannot
            admissions = [store.admit(AdmissionRequest(user, estimate=CENT)) for user in users * 2]
        assert all(admission.allowed and admission.identity is not None for admission in admissions)
    finally:
        store.close()


def test_async_admissions_on_healthy_masters_go_on_while_the_registrys_master_stalls(cluster: str) -> None:
    clock = Clock()
    prefix = PREFIX + "a"
    store = RedisStore.from_url(cluster, prefix=prefix, clock=clock, request_timeout=1.0)
    users = identities_elsewhere(cluster, prefix, 5)
    port = registry_port(cluster, prefix)

    async def main() -> list[bool]:
        for user in users:
            await store.aadmit(AdmissionRequest(user, estimate=CENT, create_missing=True))
        with stalled(port, 3):
            clock.now += REFRESH + 0.1
            admissions = [await store.aadmit(AdmissionRequest(user, estimate=CENT)) for user in users * 2]
        await store.aclose()
        return [admission.allowed and admission.identity is not None for admission in admissions]

    try:
        assert asyncio.run(main()) == [True] * 10
    finally:
        store.close()
