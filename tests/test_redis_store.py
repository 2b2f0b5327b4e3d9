"""RedisStore specifics: key schema and TTLs, Cluster-safe ids, loops and threads, outages, batching."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import pytest
import redis

from identity_middleware.core.admission import AdmissionRequest, ModelUsage, Settlement, Usage
from identity_middleware.core.budgets import Alert, BudgetSpec
from identity_middleware.core.errors import StoreUnavailable
from identity_middleware.core.models import Budget, IdentityInput
from identity_middleware.core.periods import Period
from identity_middleware.stores import RedisStore, Store
from identity_middleware.stores.redis.keys import identity_tag
from identity_middleware.stores.redis.plans import SETTLE_ID_TTL
from redis_servers import free_port, frozen, start_server, stop_servers

MakeStore = Callable[..., Store]


def _redis(store: RedisStore) -> Any:
    return store.client


def _keys(store: RedisStore) -> dict[str, int]:
    """Every key of the store's prefix with its TTL in seconds (-1: none)."""
    client = _redis(store)
    return {key: client.ttl(key) for key in client.scan_iter(match=f"{store.prefix}:*", count=1000)}


def test_counters_expire_only_the_record_and_budgets_live_on(make_store: MakeStore) -> None:
    store = make_store("redis", reservation_ttl=30)
    assert isinstance(store, RedisStore)
    admission = store.admit(AdmissionRequest("user_1", estimate=10))
    store.set_budget("user_1", Budget(period=Period.DAILY, amount=Decimal("1")))
    admission = store.admit(AdmissionRequest("user_1", estimate=10))
    usage = Usage()
    usage.add(5, 1, 1, "gpt")
    store.settle(Settlement(admission.identity.id, usage, None))  # reservation left to expire
    store.flush()
    keys = _keys(store)
    tag = identity_tag("user_1")
    forever = {key for key, ttl in keys.items() if ttl == -1}
    assert forever == {f"{store.prefix}:identities", f"{store.prefix}:{{{tag}}}:id", f"{store.prefix}:{{{tag}}}:b"}
    for key, ttl in keys.items():
        if ":s:" in key:  # to the period's end plus one day
            period = key.split(":s:")[1].split(":")[0]
            assert 0 < ttl <= {"daily": 1, "weekly": 7, "monthly": 31, "yearly": 366}[period] * 86400 + 86400
        elif ":d:" in key:
            assert 30 * 86400 < ttl <= 31 * 86400 + 1
        elif ":h:" in key:  # an hour's metrics: 25 hours from the hour's start
            assert 24 * 3600 < ttl <= 25 * 3600 + 1
        elif ":u:" in key:  # a budget's tokens: as long as the spend of its period
            assert key.split(":u:")[1] == keys_period(keys, "daily") and 0 < ttl <= 2 * 86400
        elif key.endswith(":q"):  # admissions of the last minute
            assert 0 < ttl <= 70
        elif ":r:" in key:
            assert 0 < ttl <= 30 + 60
        elif ":c:" in key:  # the settle call's marker: remembered for settle_id_ttl
            assert 0 < ttl <= SETTLE_ID_TTL
        else:
            assert ttl == -1, key
    assert sum(":s:" in key for key in keys) == 4 and sum(":u:" in key for key in keys) == 1
    assert sum(":h:" in key for key in keys) == 1


def test_counters_keep_their_expiry_whoever_created_them(make_store: MakeStore) -> None:
    """The settle script sets a counter's expiry when it creates the counter, not on every charge:
    counters a refused admission created, or an earlier charge, keep theirs."""
    store = make_store("redis")
    assert isinstance(store, RedisStore)
    refused = store.admit(AdmissionRequest("user_2", create_missing=True, refused=True))  # creates the metric hashes
    assert refused.identity is not None
    for cost in (5, 7):  # the first creates the spend counters, the second adds to them
        store.settle(Settlement(refused.identity.id, Usage(cost=cost), None))
        store.flush()
    keys = _keys(store)
    counters = {key: ttl for key, ttl in keys.items() if ":s:" in key or ":d:" in key or ":h:" in key}
    assert len(counters) == 6 and all(ttl > 0 for ttl in counters.values()), counters
    metrics = store.metrics("user_2")
    assert (metrics.total_requests, metrics.total_cost) == (3, Decimal("0.000000012"))


def test_a_budgets_token_count_keeps_the_expiry_its_first_charge_set(make_store: MakeStore) -> None:
    store = make_store("redis")
    assert isinstance(store, RedisStore)
    client = _redis(store)
    store.set_budget(store.admit(AdmissionRequest("user_t")).identity.id, Budget(period="daily", amount="1"))
    store.record("user_t", cost="0.000001", input_tokens=5)
    store.flush()
    (key,) = [key for key in _keys(store) if ":u:" in key]
    assert 0 < client.ttl(key) <= 2 * 86400 and client.hget(key, "t") == "5"
    client.expire(key, 500)
    store.record("user_t", cost="0.000001", input_tokens=7)  # adds to the count: its expiry left alone
    store.flush()
    assert client.hget(key, "t") == "12" and 0 < client.ttl(key) <= 500


def test_the_admission_buckets_expiry_is_set_by_a_new_bucket_not_by_every_admission(make_store: MakeStore) -> None:
    store = make_store("redis")
    assert isinstance(store, RedisStore)
    client = _redis(store)
    store.set_budget(store.admit(AdmissionRequest("user_q")).identity.id, Budget(period="daily", amount="1"))
    now = datetime.now(UTC)
    store.admit(AdmissionRequest("user_q", now=now))
    (key,) = [key for key in _keys(store) if key.endswith(":q")]
    assert 60_000 < client.pttl(key) <= 70_000
    client.pexpire(key, 5_000)
    store.admit(AdmissionRequest("user_q", now=now))  # the same 10 s bucket: its expiry left alone
    assert 0 < client.pttl(key) <= 5_000
    store.admit(AdmissionRequest("user_q", now=now + timedelta(seconds=10)))  # a new bucket sets it again
    assert 60_000 < client.pttl(key) <= 70_000
    assert sum(int(count) for count in client.hvals(key)) == 3


def test_an_admission_a_global_budget_refused_is_taken_back_and_its_hash_keeps_an_expiry(
        make_store: MakeStore) -> None:
    store = make_store("redis")
    assert isinstance(store, RedisStore)
    client = _redis(store)
    store.set_budget(store.admit(AdmissionRequest("user_w")).identity.id, Budget(period="daily", amount="1"))
    store.create_budget(BudgetSpec(scope="workspace", period="daily", amount="0.000001"))
    store.record("user_w", cost="0.000002")
    store.flush()
    now = datetime.now(UTC)
    admitted = store.admit(AdmissionRequest("user_w", now=now))
    assert admitted.blocked is not None  # the identity's script counted it; the workspace refused it
    (key,) = [key for key in _keys(store) if key.endswith(":q")]
    assert sum(int(count) for count in client.hvals(key)) == 0 and 0 < client.pttl(key) <= 70_000


def keys_period(keys: dict[str, int], period: str) -> str:
    """The period key (``daily:2026-11-22``) of the spend counter of ``period`` among ``keys``."""
    (key,) = [key.split(":s:")[1] for key in keys if f":s:{period}:" in key]
    return key


def test_delete_leaves_no_key_of_the_identity(make_store: MakeStore) -> None:
    store = make_store("redis")
    assert isinstance(store, RedisStore)
    store.set_budget(store.admit(AdmissionRequest("u")).identity.id, Budget(period="weekly", amount="1"))
    store.admit(AdmissionRequest("u", estimate=5))
    store.record("u", cost="0.1", model="m")
    store.delete("u")
    # Only the settle calls' markers stay, holding "1" until settle_id_ttl ends.
    left = {key: ttl for key, ttl in _keys(store).items() if ":c:" not in key or not 0 < ttl <= SETTLE_ID_TTL}
    assert list(left) == [] or list(left) == [f"{store.prefix}:identities"]


@pytest.mark.parametrize("external_id", ["{a}b}", "with space", "ünï©ødé ✓", "}{", "a{}b", "x" * 255])
def test_any_external_id_works_on_the_cluster(make_store: MakeStore, external_id: str) -> None:
    store = make_store("redis-cluster")
    store.create(IdentityInput(id=external_id, display_name=external_id))
    store.set_budget(external_id, Budget(period=Period.DAILY, amount=Decimal("1")))
    admission = store.admit(AdmissionRequest(external_id, estimate=100))
    assert admission.allowed and admission.reservation is not None
    store.settle(Settlement(admission.identity.id, Usage(cost=7), admission.reservation))
    assert store.retrieve(admission.identity.id).external_id == external_id
    assert store.budget_status(external_id)[0].spent == Decimal("0.000000007")
    assert [i.external_id for i in store.list(search=external_id[:3]).data] == [external_id]


async def _use(store: Store, name: str) -> None:
    admission = await store.aadmit(AdmissionRequest(name, estimate=10))
    await store.aset_budget(name, Budget(period=Period.DAILY, amount=Decimal("1")))
    await store.asettle(Settlement(admission.identity.id, Usage(cost=10), admission.reservation))
    assert (await store.ametrics(name)).total_requests == 1  # reads see buffered writes


def _connections(url: str, name: str) -> int:
    return sum(1 for client in redis.Redis.from_url(url).client_list() if client.get("name") == name)


@pytest.mark.parametrize("kind", ["redis", "redis-cluster"])
def test_one_store_serves_loops_then_threads_without_leaks(
    make_store: MakeStore, request: pytest.FixtureRequest, kind: str
) -> None:
    store = make_store(kind, client_name="leakcheck")
    url = request.getfixturevalue("redis_url")
    with anyio.from_thread.start_blocking_portal() as portal:  # a test client's loop
        portal.call(_use, store, "portal")
    anyio.run(_use, store, "anyio")
    asyncio.run(_use(store, "asyncio"))
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            asyncio.run(_use(store, f"thread-loop-{index}"))
            admission = store.admit(AdmissionRequest(f"thread-{index}"))
            store.settle(Settlement(admission.identity.id, Usage(cost=1), None))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.list(limit=50).data.__len__() == 19
    if kind == "redis":
        assert _connections(url, "leakcheck") <= 64  # only the sync pool remains
    store.close()
    if kind == "redis":
        assert _connections(url, "leakcheck") == 0


@pytest.mark.anyio
async def test_asettle_batches_and_aflush_drains(make_store: MakeStore) -> None:
    store = make_store("redis")
    assert isinstance(store, RedisStore)
    admission = await store.aadmit(AdmissionRequest("a"))
    for _ in range(50):
        await store.asettle(Settlement(admission.identity.id, Usage(cost=2), None))
    assert store.buffered == 50  # nothing written yet: one round trip will carry all
    await store.aflush()
    assert not store.buffered
    assert (await store.ametrics("a")).total_cost == Decimal("0.0000001")


def test_outage_raises_store_unavailable_and_keeps_usage(tmp_path: Path) -> None:
    port = free_port()
    process = start_server(port, tmp_path)
    # A cold connection on this shared 2-core machine can take longer than the production bound
    # (request_timeout 0.25 s): what is tested here is the outage, not that bound.
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", prefix="outage", socket_timeout=1,
                                socket_connect_timeout=2.0, request_timeout=5.0)
    try:
        admission = store.admit(AdmissionRequest("a"))
        stop_servers([process])
        with pytest.raises(StoreUnavailable):
            store.admit(AdmissionRequest("a"))
        store.settle(Settlement(admission.identity.id, Usage(cost=3), None))  # kept, not raised
        assert store.buffered == 1
        with pytest.raises(StoreUnavailable):
            store.flush()
        process = start_server(port, tmp_path)
        store.create(IdentityInput(id="a"))  # the data went with the server; the record is back
        identity = store.retrieve("a")
        store.settle(Settlement(identity.id, Usage(cost=3), None))
        store.flush()
        assert not store.buffered
    finally:
        store.close()
        stop_servers([process])


def test_rate_limit_storage_uri_names_the_same_server(redis_url: str, redis_cluster_url: str) -> None:
    assert RedisStore.from_url(redis_url).rate_limit_storage_uri == redis_url
    assert RedisStore.from_url(redis_cluster_url).rate_limit_storage_uri.startswith("redis+cluster://")


def test_prefix_with_braces_is_refused(redis_url: str) -> None:
    with pytest.raises(ValueError):
        RedisStore.from_url(redis_url, prefix="a{b}")


def test_amounts_compare_exactly_near_the_documented_bound(make_store: MakeStore) -> None:
    store = make_store("redis")
    store.create(IdentityInput(id="rich"))
    store.set_budget("rich", Budget(period="yearly", amount="9000000"))
    store.record("rich", cost="8999999.999999999")
    assert store.admit(AdmissionRequest("rich")).allowed
    store.record("rich", cost="0.000000001")
    assert not store.admit(AdmissionRequest("rich")).allowed
    assert store.budget_status("rich")[0].spent == Decimal("9000000")



# 9% of 8,888,888.888888889 USD is 800,000.000000000 01: the alert must wait for the next nano-USD,
# although 100 x 800,000 USD in nano-USD, as a double, already reaches 9 x the amount.
@pytest.mark.parametrize("scope", ["identity", "workspace"])
def test_alert_thresholds_compare_exactly_near_the_bound(make_store: MakeStore, scope: str) -> None:
    events: list[dict[str, Any]] = []
    store = make_store("redis", notifiers={"ops": events.append})
    store.create(IdentityInput(id="rich"))
    store.create_budget(BudgetSpec(scope=scope, target="rich" if scope == "identity" else None, period="one_time",
                                   amount="8888888.888888889",
                                   alerts=[Alert(threshold_percent=9, notifier_ids=("ops",))]))
    store.record("rich", cost="800000")
    assert store.alerts is not None and store.alerts.drain(10) and events == []
    store.record("rich", cost="0.000000001")
    assert store.alerts.drain(10) and len(events) == 1


def test_a_one_time_identity_amount_compares_exactly_near_the_bound(make_store: MakeStore) -> None:
    store = make_store("redis")
    store.create_budget(BudgetSpec(scope="identity", target="rich", period="one_time", amount="9000000"))
    store.record("rich", cost="8999999.999999999")
    assert store.admit(AdmissionRequest("rich")).allowed
    store.record("rich", cost="0.000000001")
    assert not store.admit(AdmissionRequest("rich")).allowed


@pytest.mark.parametrize("kind", ["redis", "redis-cluster"])
def test_an_identity_alert_fires_once_across_store_instances(make_store: MakeStore, kind: str) -> None:
    events: list[dict[str, Any]] = []
    lock = threading.Lock()

    def notify(event: dict[str, Any]) -> None:
        with lock:
            events.append(event)

    stores = [make_store(kind, notifiers={"ops": notify})]
    stores.append(make_store(kind, prefix=stores[0].prefix, notifiers={"ops": notify}))  # type: ignore[attr-defined]
    stores[0].create_budget(BudgetSpec(scope="identity", target="u", period="daily", amount="1",
                                       alerts=[Alert(threshold_percent=50, notifier_ids=("ops",)),
                                               Alert(threshold_percent=90, notifier_ids=("ops",))]))
    threads = [threading.Thread(target=stores[i % 2].record, args=("u",), kwargs={"cost": "0.1"}) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.flush()
        assert store.alerts is not None and store.alerts.drain(10)
    assert sorted(event["threshold_percent"] for event in events) == [50, 90]


# -- the fast paths: cached records, merged settlements, the multiplexed admission connection ------
@pytest.mark.anyio
async def test_cached_record_sees_another_instances_update_and_delete(make_store: MakeStore) -> None:
    one = make_store("redis")
    other = make_store("redis", prefix=one.prefix)  # type: ignore[attr-defined]
    first = (await one.aadmit(AdmissionRequest("a"))).identity
    assert first is not None
    assert (await one.aadmit(AdmissionRequest("a"))).identity == first  # served from the cache
    await other.aupdate("a", display_name="Ada", tags=["x"])
    changed = (await one.aadmit(AdmissionRequest("a"))).identity
    assert changed is not None and changed.display_name == "Ada" and changed.tags == ["x"]
    assert changed.id == first.id and changed.updated > first.updated
    await other.adelete("a")
    assert (await one.aadmit(AdmissionRequest("a", create_missing=False))).identity is None
    again = (await one.aadmit(AdmissionRequest("a"))).identity  # the script asks for a new ULID
    assert again is not None and again.id != first.id
    assert (await other.aretrieve("a")).id == again.id
    await other.adelete("a")
    recreated = (await one.aadmit(AdmissionRequest("a"))).identity  # cached, but deleted meanwhile
    assert recreated is not None and recreated.id not in (first.id, again.id)
    assert [identity.id for identity in (await other.alist()).data] == [recreated.id]


@pytest.mark.anyio
async def test_one_flush_merges_an_identitys_settlements_and_releases_all_reservations(
    make_store: MakeStore,
) -> None:
    store = make_store("redis")
    assert isinstance(store, RedisStore)
    await store.acreate(IdentityInput(id="a"))
    await store.aset_budget("a", Budget(period=Period.DAILY, amount=Decimal("0.000010")))  # 10,000 nanos
    held = [await store.aadmit(AdmissionRequest("a", estimate=3000)) for _ in range(3)]
    assert all(admission.reservation is not None for admission in held)
    assert (await store.aadmit(AdmissionRequest("a", estimate=3000))).blocked is not None  # 9,000 held
    for number, admission in enumerate(held):
        assert admission.identity is not None
        usage = Usage(cost=1000, input_tokens=10, output_tokens=2, error=number == 0)
        usage.models["m"] = ModelUsage(1, 1000, 10, 2)
        await store.asettle(Settlement(admission.identity.id, usage, admission.reservation))
    await store.aflush()
    status = {s.period: s for s in await store.abudget_status("a")}[Period.DAILY]
    assert status.spent == Decimal("0.000003") and status.reserved == 0
    metrics = await store.ametrics("a")
    assert metrics.total_requests == 4 and metrics.total_errors == 2  # the blocked one counts too
    assert metrics.input_tokens == 30 and metrics.output_tokens == 6 and metrics.total_cost == Decimal("0.000003")
    assert [(m.model, m.requests, m.cost) for m in metrics.models] == [("m", 3, Decimal("0.000003"))]


@pytest.mark.anyio
async def test_admissions_survive_a_server_restart_and_time_out_when_it_hangs(tmp_path: Path) -> None:
    port = free_port()
    process = start_server(port, tmp_path)
    # Replies bounded by socket_timeout (0.5 s, what the hang below meets); a cold connection on this
    # shared 2-core machine may take longer than the production request bound, so that is raised.
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", prefix="mux", socket_timeout=0.5,
                                socket_connect_timeout=2.0, request_timeout=5.0)
    try:
        results = await asyncio.gather(*(store.aadmit(AdmissionRequest(f"u{n}")) for n in range(20)))
        assert all(result.identity is not None for result in results)
        assert store.accelerated  # the multiplexed path is the one tested here
        stop_servers([process])
        with pytest.raises(StoreUnavailable):
            await store.aadmit(AdmissionRequest("u1"))
        process = start_server(port, tmp_path)
        # A restarted server: the broken connection is replaced at once (one retry). Its data went
        # with it, so the cached record is not found (create_missing=False: no pooled ZADD here).
        assert (await store.aadmit(AdmissionRequest("u1", create_missing=False))).identity is None
        with frozen(process), pytest.raises(StoreUnavailable):  # no reply within socket_timeout
            await store.aadmit(AdmissionRequest("u2", create_missing=False))
        assert (await store.aadmit(AdmissionRequest("u2", create_missing=False))).identity is None
    finally:
        await store.aclose()
        stop_servers([process])


def test_sync_admissions_on_the_plain_socket_survive_a_restart_and_time_out_when_it_hangs(tmp_path: Path) -> None:
    port = free_port()
    process = start_server(port, tmp_path)
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", prefix="wire", socket_timeout=0.5,
                                socket_connect_timeout=0.5)
    try:
        threads = [threading.Thread(target=store.admit, args=(AdmissionRequest(f"u{n}"),)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert {identity.external_id for identity in store.list(limit=20).data} == {f"u{n}" for n in range(8)}
        assert store.accelerated  # script calls took the per-thread sockets
        stop_servers([process])
        with pytest.raises(StoreUnavailable):
            store.admit(AdmissionRequest("u1"))
        process = start_server(port, tmp_path)
        assert store.admit(AdmissionRequest("u1", create_missing=False)).identity is None  # a new connection
        with frozen(process):  # it never answers: without the socket timeout (0.5 s) the call hangs for ever
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                store.admit(AdmissionRequest("u2", create_missing=False))
            # A bound against hanging, 60 times the timeout: a loaded host does not come near it.
            assert time.monotonic() - started < 30
        # The timed-out connection was closed, not reused: the next reply is this call's own.
        assert store.admit(AdmissionRequest("u2", create_missing=False)).identity is None
        assert store.admit(AdmissionRequest("u3")).identity is not None
    finally:
        store.close()
        stop_servers([process])


@pytest.mark.anyio
async def test_a_cancelled_admission_leaves_the_connection_in_step(make_store: MakeStore) -> None:
    store = make_store("redis")
    await store.aadmit(AdmissionRequest("a"))
    tasks = [asyncio.ensure_future(store.aadmit(AdmissionRequest(f"c{n}"))) for n in range(10)]
    await asyncio.sleep(0)
    for task in tasks[::2]:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for n in range(1, 10, 2):
        admitted = (await store.aadmit(AdmissionRequest(f"c{n}"))).identity
        assert admitted is not None and admitted.external_id == f"c{n}"
    identity = await store.aretrieve("a")
    assert identity.external_id == "a"


@pytest.mark.anyio
async def test_scripts_are_reloaded_on_the_multiplexed_connection(make_store: MakeStore) -> None:
    store = make_store("redis")
    assert isinstance(store, RedisStore)
    admission = await store.aadmit(AdmissionRequest("a"))
    assert admission.identity is not None
    assert store.accelerated
    _redis(store).script_flush()
    for _ in range(3):
        await store.asettle(Settlement(admission.identity.id, Usage(cost=5), None))
    await store.aflush()  # the settle script is missing: loaded, and the batch sent again
    _redis(store).script_flush()
    assert (await store.aadmit(AdmissionRequest("a"))).identity == admission.identity
    metrics = await store.ametrics("a")
    assert metrics.total_requests == 3 and metrics.total_cost == Decimal("0.000000015")


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["memory", "redis", "redis-cluster"])
async def test_a_client_sees_its_own_previous_request_on_the_async_path(make_store: MakeStore, kind: str) -> None:
    """Once a response has ended, the next admission of that identity in the process counts its usage."""
    import httpx
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from identity_middleware import IdentityMiddleware, record_usage

    async def chat(request: Request) -> JSONResponse:
        record_usage("0.01")
        return JSONResponse({})

    store = make_store(kind)
    await store.acreate(IdentityInput(id="u"))
    await store.aset_budget("u", Budget(period="daily", amount="0.01"))
    app = Starlette(routes=[Route("/chat", chat, methods=["POST"])],
                    middleware=[Middleware(IdentityMiddleware, store=store)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
        statuses = [(await client.post("/chat", json={"identity": {"id": "u"}})).status_code for _ in range(5)]
    assert statuses == [200, 429, 429, 429, 429]
