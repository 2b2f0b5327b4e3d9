"""A Redis stalled by DEBUG SLEEP: a settlement that timed out and is retried counts once, and an
admission waits at most the store's request timeout (what the request then gets: test_outage_slow.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from identity_middleware.core.admission import Admission, AdmissionRequest, Settlement, Usage
from identity_middleware.core.errors import StoreUnavailable
from identity_middleware.core.money import to_nanos
from identity_middleware.stores import RedisStore
from identity_middleware.stores.redis.keys import identity_tag
from redis_servers import free_port, frozen, own_server, stalled, start_server, stop_servers

MILLI = to_nanos(Decimal("0.001"))
STALL = 4.0  # seconds Redis sleeps: room for two 0.3 s write timeouts however slow the host is


@pytest.fixture
def port(tmp_path: Path) -> Iterator[int]:
    """A private redis-server that may be stalled (its own, so no other test waits on it)."""
    with own_server(tmp_path) as port:
        yield port


def day_requests(port: int, store: RedisStore, external_id: str) -> int:
    """Requests Redis itself holds for the identity today (not through the store)."""
    client = redis.Redis(port=port, decode_responses=True)
    keys = list(client.scan_iter(match=f"{store.prefix}:{{{identity_tag(external_id)}}}:d:*"))
    return sum(int(client.hget(key, "n") or 0) for key in keys)


def test_sync_settlements_that_timed_out_while_redis_slept_count_once(port: int) -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", prefix="stall", socket_timeout=0.3)
    try:
        ulid = store.admit(AdmissionRequest("a")).identity.id
        store.settle(Settlement(ulid, Usage(cost=MILLI), None))
        store.flush()  # the settle script is loaded
        with stalled(port, STALL):
            for _ in range(2):  # each write times out (here or in the writer thread) and is kept
                store.settle(Settlement(ulid, Usage(cost=MILLI), None))
                with pytest.raises(StoreUnavailable):
                    store.flush()
            assert store.buffered == 2
        assert day_requests(port, store, "a") >= 2  # Redis applied (at least) the first timed-out write
        store.flush()  # the retry: both charges were recorded, so nothing is added
        metrics = store.metrics("a")
        assert (metrics.total_requests, metrics.total_cost) == (3, Decimal("0.003"))
    finally:
        store.close()


@pytest.mark.anyio
@pytest.mark.parametrize("multiplex", [True, False])
async def test_async_settlements_that_timed_out_while_redis_slept_count_once(port: int, multiplex: bool) -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", prefix="stall", socket_timeout=0.3,
                                multiplex=multiplex)
    try:
        ulid = (await store.aadmit(AdmissionRequest("a"))).identity.id
        await store.asettle(Settlement(ulid, Usage(cost=MILLI), None))
        await store.aflush()  # the settle script is loaded
        with stalled(port, STALL):
            await store.asettle(Settlement(ulid, Usage(cost=MILLI), None))
            with pytest.raises(StoreUnavailable):  # the background write timed out, and the retry too
                await store.aflush()
            await store.asettle(Settlement(ulid, Usage(cost=MILLI), None))
            with pytest.raises(StoreUnavailable):
                await store.aflush()
        assert day_requests(port, store, "a") >= 2  # Redis applied (at least) the first timed-out write
        await store.aflush()  # the retry: both charges were recorded, so nothing is added
        metrics = await store.ametrics("a")
        assert (metrics.total_requests, metrics.total_cost) == (3, Decimal("0.003"))
    finally:
        await store.aclose()


def test_a_sync_admission_waits_at_most_the_request_timeout(tmp_path: Path) -> None:
    # A server that never answers (stopped, not a DEBUG SLEEP that ends by itself) and a socket
    # timeout of ten minutes: only the request timeout (0.25 s) can end the call. The bound is 240
    # times that, and a tenth of the socket timeout: which timeout applied, not how fast the host is.
    port = free_port()
    process = start_server(port, tmp_path)
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", prefix="stall", request_timeout=0.25,
                                socket_timeout=600.0)
    try:
        store.admit(AdmissionRequest("a"))
        with frozen(process):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                store.admit(AdmissionRequest("a"))
            assert time.monotonic() - started < 60
    finally:
        store.close()
        stop_servers([process])


def test_concurrent_admissions_on_uvloop_with_deadlines_due_within_a_millisecond_fail_as_outages(
        redis_url: str) -> None:
    """uvloop hands back a plain ``Handle`` (no ``when()``) for a timer due within about 0.4 ms: a
    second admission in the same tick must not ask the first one's timer when it is due."""
    import uvloop  # uvicorn[standard], in the dev extra
    store = RedisStore.from_url(redis_url, prefix=f"uv{time.monotonic_ns()}", request_timeout=5.0)

    async def admissions() -> list[object]:
        await store.aadmit(AdmissionRequest("a"))  # connected, scripts loaded
        store.request_timeout = 0.0002
        return await asyncio.gather(*(store.aadmit(AdmissionRequest("a")) for _ in range(8)),
                                    return_exceptions=True)

    try:
        outcomes = uvloop.run(admissions())
        assert all(isinstance(outcome, (Admission, StoreUnavailable)) for outcome in outcomes), outcomes
    finally:
        store.close()
