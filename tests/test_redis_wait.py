"""The WAIT guard (``RedisOptions(wait=Wait())``): a settlement leaves the buffer only once a replica
acknowledged it; one fewer replicas acknowledged stays buffered and is sent again, counted once.
Real servers: a master with no replica (WAIT falls short), then one attached to it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from identity_middleware.core.admission import AdmissionRequest, Settlement, Usage
from identity_middleware.core.errors import StoreUnavailable
from identity_middleware.core.models import IdentityInput
from identity_middleware.core.money import to_nanos
from identity_middleware.stores import RedisStore
from identity_middleware.stores.redis.buffer import BATCH
from identity_middleware.stores.redis.options import RedisOptions, Wait
from outages import asettlements_outlast, settlements_outlast
from redis_servers import own_server, wait_role

CENT = to_nanos("0.01")
SHORT = Wait(replicas=1, timeout=0.05)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """A master and a server that is not yet its replica (:func:`attach` makes it one)."""
    (tmp_path / "m").mkdir()
    (tmp_path / "r").mkdir()
    with own_server(tmp_path / "m") as master, own_server(tmp_path / "r") as replica:
        yield master, replica


def attach(master: int, replica: int) -> None:
    with redis.Redis(port=replica) as admin:
        admin.replicaof("127.0.0.1", master)
    wait_role(replica, "slave")


@contextlib.contextmanager
def unreplicated(master: int, replica: int) -> Iterator[None]:
    """No replica acknowledges the master's writes until the block ends (``replica`` attached then)."""
    try:
        yield
    finally:
        attach(master, replica)


def spent(port: int, prefix: str, identity: str) -> tuple[Decimal, int]:
    reader = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", prefix=prefix)
    try:
        metrics = reader.metrics(identity)
        return metrics.total_cost, metrics.total_requests
    finally:
        reader.close()


def assert_spent(port: int, prefix: str, identity: str, expected: tuple[Decimal, int]) -> None:
    assert spent(port, prefix, identity) == expected


def test_the_options_are_checked() -> None:
    assert Wait().timeout_ms == 100
    for wrong in ({"replicas": 0}, {"replicas": True}, {"timeout": 0}, {"timeout": float("nan")}):
        with pytest.raises(ValueError, match="Wait"):
            Wait(**wrong)  # type: ignore[arg-type]
    assert RedisOptions.of(wait=Wait(2, 0.5)).wait == Wait(2, 0.5)


def test_a_cluster_store_refuses_the_guard() -> None:
    with pytest.raises(ValueError, match="Cluster"):
        RedisStore.from_url("redis+cluster://127.0.0.1:1", wait=Wait())


@pytest.mark.parametrize("multiplex", [False, True])
def test_sync_settlements_no_replica_acknowledged_stay_buffered_and_land_once(
        pair: tuple[int, int], multiplex: bool) -> None:
    master, replica = pair
    prefix = f"w{int(multiplex)}"
    store = RedisStore.from_url(f"redis://127.0.0.1:{master}/0", prefix=prefix, multiplex=multiplex,
                                wait=SHORT, linger=60.0)
    try:
        # Buffered though applied by the master: no replica holds it, so it is not let go of.
        settlements_outlast(store, "u", unreplicated(master, replica), refusal="0 of 1 replicas",
                            admissions_refused=False,  # admissions do not wait (Wait(admissions=False))
                            during=lambda: assert_spent(master, prefix, "u", (Decimal("0.03"), 3)))
        assert spent(master, prefix, "u") == (Decimal("0.03"), 3)  # sent again, counted once
        assert spent(replica, prefix, "u") == (Decimal("0.03"), 3)
    finally:
        store.close()


@pytest.mark.parametrize("multiplex", [False, True])
def test_async_settlements_no_replica_acknowledged_stay_buffered_and_land_once(
        pair: tuple[int, int], multiplex: bool) -> None:
    master, replica = pair
    prefix = f"wa{int(multiplex)}"
    store = RedisStore.from_url(f"redis://127.0.0.1:{master}/0", prefix=prefix, multiplex=multiplex, wait=SHORT)

    async def main() -> None:
        await asettlements_outlast(store, "u", unreplicated(master, replica), refusal="0 of 1 replicas",
                                   admissions_refused=False)
        await store.aclose()

    try:
        asyncio.run(main())
        assert spent(replica, prefix, "u") == (Decimal("0.03"), 3)
    finally:
        store.close()


@pytest.mark.parametrize("multiplex", [False, True])
def test_admissions_that_wait_meet_the_outage_until_a_replica_acknowledges(
        pair: tuple[int, int], multiplex: bool) -> None:
    master, replica = pair
    store = RedisStore.from_url(f"redis://127.0.0.1:{master}/0", prefix="wadm", multiplex=multiplex,
                                wait=Wait(1, 0.05, admissions=True))
    try:
        store.create(IdentityInput(id="u"))
        with pytest.raises(StoreUnavailable, match="0 of 1 replicas"):
            store.admit(AdmissionRequest("u", estimate=CENT))
        attach(master, replica)
        assert store.admit(AdmissionRequest("u", estimate=CENT)).allowed  # the breaker's probe

        async def admitted() -> bool:
            admission = await store.aadmit(AdmissionRequest("u", estimate=CENT))
            await store.aclose()
            return admission.allowed

        assert asyncio.run(admitted())
    finally:
        store.close()


def test_settlements_that_wait_land_on_a_master_that_forgot_its_scripts(pair: tuple[int, int]) -> None:
    master, replica = pair
    attach(master, replica)
    store = RedisStore.from_url(f"redis://127.0.0.1:{master}/0", prefix="wok", wait=Wait(1, 5.0), linger=60.0)
    try:
        identity = store.create(IdentityInput(id="u")).id
        with redis.Redis(port=master) as admin:
            admin.script_flush()  # a new master has no scripts: reloaded, and the write waited for again
        for _ in range(2):
            store.settle(Settlement(identity, Usage(cost=CENT), None))
        store.flush()
        assert store.buffered == 0
        assert spent(replica, "wok", "u") == (Decimal("0.02"), 2)
    finally:
        store.close()


def test_a_batch_no_replica_acknowledged_does_not_hold_back_the_batches_after_it(pair: tuple[int, int]) -> None:
    """More than one batch buffered (501 charges): each is written to the master though the first
    falls short of its replica, and all stay buffered until one acknowledges (on a loop: a sync
    store's writer thread would be writing them meanwhile)."""
    master, replica = pair
    store = RedisStore.from_url(f"redis://127.0.0.1:{master}/0", prefix="wmany", wait=SHORT)

    async def main() -> None:
        ids = [(await store.acreate(IdentityInput(id=f"u{n}"))).id for n in range(BATCH + 1)]
        for identity in ids:
            await store.asettle(Settlement(identity, Usage(cost=CENT), None))
        with pytest.raises(StoreUnavailable, match="0 of 1 replicas"):
            await store.aflush()
        assert store.buffered == BATCH + 1
        assert spent(master, "wmany", f"u{BATCH}") == (Decimal("0.01"), 1)  # the second batch, in the master
        await asyncio.to_thread(attach, master, replica)
        await store.aflush()
        assert store.buffered == 0
        await store.aclose()

    try:
        asyncio.run(main())
        assert spent(replica, "wmany", "u0") == spent(replica, "wmany", f"u{BATCH}") == (Decimal("0.01"), 1)
    finally:
        store.close()
