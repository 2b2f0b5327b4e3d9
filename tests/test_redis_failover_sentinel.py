"""A demoted master is not written to: READONLY drops the store's connections to it, and usage recorded
before and after a Sentinel failover (``SENTINEL FAILOVER``) is all in the new master, once."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis

from fake_clock import Clock
from identity_middleware.core.admission import AdmissionRequest, Settlement, Usage
from identity_middleware.core.errors import StoreUnavailable
from identity_middleware.core.metrics import Metrics
from identity_middleware.core.models import Budget, IdentityInput
from identity_middleware.core.money import to_nanos
from identity_middleware.stores import RedisStore
from identity_middleware.stores.redis.transport import MASTER_CHECK
from redis_servers import own_server, redis_sentinel_with_replica, sentinel_failover, wait_role
from waiting import wait_until

CENT = to_nanos("0.01")


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[int]:
    """The port of a replica (of a master on another port): what a demoted master is. It holds
    identity ``u``, with a budget."""
    (tmp_path / "m").mkdir()
    (tmp_path / "r").mkdir()
    with own_server(tmp_path / "m") as master, own_server(tmp_path / "r") as port:
        with redis.Redis(port=port) as admin:
            admin.replicaof("127.0.0.1", master)
        wait_role(port, "slave")
        on_master = RedisStore.from_url(f"redis://127.0.0.1:{master}/0")
        on_master.create(IdentityInput(id="u"))
        on_master.set_budget("u", Budget(period="daily", amount="1.00"))
        on_master.close()
        with redis.Redis(port=master) as admin:
            assert admin.wait(1, 10_000) == 1
        yield port


def clients_of_others(port: int) -> int:
    """Ordinary client connections to the server on ``port``, other than the one asking."""
    with redis.Redis(port=port) as admin:
        return len(admin.client_list(_type="normal")) - 1


def all_closed(port: int) -> None:
    """Until the server on ``port`` sees every other client connection closed (a close reaches it
    within moments)."""
    wait_until(lambda: clients_of_others(port) == 0, f"every client connection to port {port} closed")


@pytest.mark.parametrize("multiplex", [False, True])
def test_a_store_that_meets_readonly_drops_its_connections_to_that_server(replica: int, multiplex: bool) -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{replica}/0", multiplex=multiplex, linger=60.0)
    try:
        store.settle(Settlement(store.retrieve("u").id, Usage(cost=CENT), None))
        assert clients_of_others(replica) >= 1
        with pytest.raises(StoreUnavailable, match="READONLY"):
            store.flush()
        with pytest.raises(StoreUnavailable, match="READONLY"):
            store.admit(AdmissionRequest("u", estimate=CENT))
        all_closed(replica)
        assert store.buffered == 1  # kept for the master
    finally:
        with contextlib.suppress(StoreUnavailable):  # what is buffered cannot be written at close
            store.close()


@pytest.mark.parametrize("multiplex", [False, True])
def test_an_async_store_that_meets_readonly_drops_its_connections_to_that_server(
        replica: int, multiplex: bool) -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{replica}/0", multiplex=multiplex)

    async def main() -> None:
        await store.asettle(Settlement((await store.aretrieve("u")).id, Usage(cost=CENT), None))
        with pytest.raises(StoreUnavailable, match="READONLY"):
            await store.aflush()
        await asyncio.sleep(0)  # a transport closes its socket on the loop's next turn
        all_closed(replica)
        assert store.buffered == 1

    try:
        asyncio.run(main())
    finally:
        with contextlib.suppress(StoreUnavailable):
            store.close()


@pytest.fixture
def sentinel() -> Iterator[tuple[str, int, int, int]]:
    """A master, its replica and a Sentinel: (url, sentinel port, master port, replica port)."""
    with redis_sentinel_with_replica() as found:
        yield found


def written(store: RedisStore) -> None:
    """Flush until the buffer is written: the first attempt after a switch may meet the demoted master."""
    for _ in range(3):
        try:
            store.flush()
            return
        except StoreUnavailable:
            continue
    store.flush()


def counted_once_demoted(store: RedisStore, main: Coroutine[Any, Any, None], master: int) -> Metrics:
    """``u``'s metrics once ``main`` has run (closing its loop's connections) and the old master is
    demoted (what it took since the switch is discarded); the store closed."""
    try:
        asyncio.run(main)
        wait_role(master, "slave")
        return store.metrics("u")
    finally:
        store.close()


def test_usage_recorded_before_and_after_a_sentinel_failover_is_in_the_new_master_once(
        sentinel: tuple[str, int, int, int]) -> None:
    url, sentinel_port, master, replica = sentinel
    store = RedisStore.from_url(url, linger=60.0, request_timeout=5.0)
    try:
        identity = store.create(IdentityInput(id="u")).id
        store.set_budget("u", Budget(period="daily", amount="1.00"))
        for _ in range(5):
            admission = store.admit(AdmissionRequest("u", estimate=CENT))
            store.settle(Settlement(identity, Usage(cost=CENT), admission.reservation))
        written(store)
        with redis.Redis(port=master) as admin:
            assert admin.wait(1, 10_000) == 1  # replicated before the switch (asynchronous otherwise)
        sentinel_failover(sentinel_port, "mymaster", replica)
        wait_role(master, "slave")  # the old master demoted: it would answer READONLY
        for _ in range(5):
            try:
                admission = store.admit(AdmissionRequest("u", estimate=CENT))
            except StoreUnavailable:  # the first call after the switch may meet the demoted master
                admission = store.admit(AdmissionRequest("u", estimate=CENT))
            store.settle(Settlement(identity, Usage(cost=CENT), admission.reservation))
        written(store)
        metrics = store.metrics("u")
        assert (metrics.total_cost, metrics.total_requests) == (Decimal("0.10"), 10)
        with redis.Redis(port=replica) as new_master:
            assert new_master.info("replication")["role"] == "master"
    finally:
        store.close()


def test_settlements_after_sentinel_names_a_new_master_go_to_it_not_to_the_old_one(
        sentinel: tuple[str, int, int, int]) -> None:
    url, sentinel_port, master, replica = sentinel
    clock = Clock()
    store = RedisStore.from_url(url, linger=60.0, request_timeout=5.0, clock=clock)
    try:
        identity = store.create(IdentityInput(id="u")).id
        for _ in range(5):
            store.settle(Settlement(identity, Usage(cost=CENT), None))
        written(store)
        with redis.Redis(port=master) as admin:
            assert admin.wait(1, 10_000) == 1
        sentinel_failover(sentinel_port, "mymaster", replica)  # the old master still takes writes
        clock.now += MASTER_CHECK  # the writer asks Sentinel again before its next batch
        for _ in range(5):
            store.settle(Settlement(identity, Usage(cost=CENT), None))
        written(store)
        wait_role(master, "slave")  # demoted: what it took since the switch is discarded
        metrics = store.metrics("u")
        assert (metrics.total_cost, metrics.total_requests) == (Decimal("0.10"), 10)
    finally:
        store.close()


def test_async_settlements_after_sentinel_names_a_new_master_go_to_it_not_to_the_old_one(
        sentinel: tuple[str, int, int, int]) -> None:
    url, sentinel_port, master, replica = sentinel
    clock = Clock()
    store = RedisStore.from_url(url, request_timeout=5.0, clock=clock)

    async def main() -> None:
        identity = (await store.acreate(IdentityInput(id="u"))).id
        for _ in range(5):
            await store.asettle(Settlement(identity, Usage(cost=CENT), None))
        await store.aflush()
        with redis.Redis(port=master) as admin:
            assert admin.wait(1, 10_000) == 1
        sentinel_failover(sentinel_port, "mymaster", replica)
        clock.now += MASTER_CHECK
        for _ in range(5):
            await store.asettle(Settlement(identity, Usage(cost=CENT), None))
        await store.aflush()
        await store.aclose()

    metrics = counted_once_demoted(store, main(), master)
    assert (metrics.total_cost, metrics.total_requests) == (Decimal("0.10"), 10)


async def admitted(store: RedisStore, identity: str) -> None:
    """One admission of ``u`` and its settlement (buffered)."""
    admission = await store.aadmit(AdmissionRequest("u", estimate=CENT))
    await store.asettle(Settlement(identity, Usage(cost=CENT), admission.reservation))


async def admitted_then_switched(store: RedisStore, calls: int, sentinel: tuple[str, int, int, int]) -> str:
    """Identity ``u`` (with a budget) admitted ``calls`` times at once (a connection each, to the
    master), written and replicated; then Sentinel switches to the replica. Its id."""
    _, sentinel_port, master, replica = sentinel
    identity = (await store.acreate(IdentityInput(id="u"))).id
    await store.aset_budget("u", Budget(period="daily", amount="10.00"))
    await asyncio.gather(*(admitted(store, identity) for _ in range(calls)))
    await store.aflush()
    with redis.Redis(port=master) as admin:
        assert admin.wait(1, 10_000) == 1
    sentinel_failover(sentinel_port, "mymaster", replica)
    return identity


def test_async_settlements_under_load_go_to_the_new_master_once_sentinel_names_it(
        sentinel: tuple[str, int, int, int]) -> None:
    """Connections in use when the store learns of the switch (concurrent admissions) are not taken
    back to the old master: each later batch goes to the new one."""
    url, _, master, _ = sentinel
    clock = Clock()
    store = RedisStore.from_url(url, request_timeout=5.0, clock=clock)

    async def main() -> None:
        identity = await admitted_then_switched(store, 10, sentinel)  # the old master still takes writes
        clock.now += MASTER_CHECK
        for _ in range(3):
            await asyncio.gather(*(admitted(store, identity) for _ in range(10)), store.aflush())
        await store.aflush()
        await store.aclose()

    metrics = counted_once_demoted(store, main(), master)
    assert (metrics.total_cost, metrics.total_requests) == (Decimal("0.40"), 40)


def postponed(port: int) -> int:
    """Clients of the server on ``port`` whose command waits for a ``CLIENT PAUSE`` to end."""
    with redis.Redis(port=port) as admin:
        return sum("b" in client["flags"] for client in admin.client_list(_type="normal"))


def test_async_admissions_waiting_on_the_old_master_when_the_store_learns_of_the_switch_go_to_the_new_one(
        sentinel: tuple[str, int, int, int]) -> None:
    """Admissions sent to the old master before the store asked Sentinel, and still unanswered (the old
    master holds them: ``CLIENT PAUSE WRITE``), lose their connections when the store learns of the
    switch: sent again, they go to the new master, and so does every later batch on those connections
    (redis-py reconnected them to the address they had, the old master's, without asking Sentinel)."""
    url, _, master, _ = sentinel
    clock = Clock()
    store = RedisStore.from_url(url, request_timeout=5.0, clock=clock)
    calls = 4

    async def main() -> None:
        identity = await admitted_then_switched(store, calls, sentinel)  # the old master still takes writes
        with redis.Redis(port=master) as admin:
            admin.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")
            try:
                waiting = [asyncio.create_task(admitted(store, identity)) for _ in range(calls)]
                await asyncio.to_thread(wait_until, lambda: postponed(master) == calls,
                                        "the admissions waiting on the old master")
                await store.asettle(Settlement(identity, Usage(cost=CENT), None))
                clock.now += MASTER_CHECK
                await store.aflush()  # asks Sentinel first, and writes to the new master
            finally:
                admin.execute_command("CLIENT", "UNPAUSE")
            await asyncio.gather(*waiting)
        for _ in range(2):
            await asyncio.gather(*(admitted(store, identity) for _ in range(calls)), store.aflush())
        await store.aflush()
        await store.aclose()

    metrics = counted_once_demoted(store, main(), master)
    assert (metrics.total_cost, metrics.total_requests) == (Decimal(4 * calls + 1) / 100, 4 * calls + 1)


def test_a_batch_waiting_on_the_old_master_whose_connection_breaks_after_the_check_goes_to_the_new_one(
        sentinel: tuple[str, int, int, int]) -> None:
    """The sync twin: a settlement batch sent to the old master before the store asked Sentinel, whose
    connection breaks after it (``CLIENT KILL``), is sent again to the new master (redis-py's retry
    reopened the address the connection had: the old master, which took it and discarded it later)."""
    url, sentinel_port, master, replica = sentinel
    clock = Clock()
    store = RedisStore.from_url(url, linger=60.0, socket_timeout=30.0, clock=clock)
    try:
        identity = store.create(IdentityInput(id="u")).id
        store.settle(Settlement(identity, Usage(cost=CENT), None))
        written(store)
        with redis.Redis(port=master) as admin:
            assert admin.wait(1, 10_000) == 1
        sentinel_failover(sentinel_port, "mymaster", replica)  # the old master still takes writes
        with redis.Redis(port=master) as old, redis.Redis(port=replica) as new:
            old.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")
            try:
                store.settle(Settlement(identity, Usage(cost=CENT), None))
                waiting = threading.Thread(target=store.flush)
                waiting.start()
                wait_until(lambda: postponed(master) == 1, "the batch waiting on the old master")
                clock.now += MASTER_CHECK
                store.settle(Settlement(identity, Usage(cost=CENT), None))
                checking = threading.Thread(target=store.flush)  # asks Sentinel, then waits for the other batch
                checking.start()
                wait_until(lambda: "cmdstat_evalsha" in new.info("commandstats"), "a batch sent to the new master")
                old.client_kill_filter(_type="normal", skipme=True)
            finally:
                old.execute_command("CLIENT", "UNPAUSE")
            waiting.join()
            checking.join()
        written(store)
        wait_role(master, "slave")  # demoted: what it took since the switch is discarded
        metrics = store.metrics("u")
        assert (metrics.total_cost, metrics.total_requests) == (Decimal("0.03"), 3)
    finally:
        store.close()
