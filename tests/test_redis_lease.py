"""RedisStore with leasing on (``lease=Lease()``), on a real Redis and the real Cluster: the budget
rules hold as without it, metrics stay exact, and leases expire, are given back, and stay per process."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import redis
import redis.cluster
from starlette.middleware import Middleware

from fake_clock import Clock
from identity_middleware.core.admission import Admission, AdmissionRequest, Settlement, Usage
from identity_middleware.core.budgets import BudgetSpec
from identity_middleware.core.errors import budget_exceeded
from identity_middleware.core.models import Budget, IdentityInput
from identity_middleware.stores import Lease, RedisStore, Store
from waiting import wait_until

MakeStore = Callable[..., Store]
KINDS = ["redis", "redis-cluster"]
AMOUNT = Decimal("0.000001")  # 1000 nano-USD
COST = 10


def leased(make_store: MakeStore, kind: str, amount: Decimal | None = AMOUNT, **options: Any) -> RedisStore:
    """A leasing store, with identity "u" on a daily budget of ``amount`` (none: not created)."""
    options.setdefault("lease", Lease(fraction=0.5))
    store = make_store(kind, **options)
    assert isinstance(store, RedisStore)
    if amount is not None:
        store.create(IdentityInput(id="u"))
        store.set_budget("u", Budget(period="daily", amount=amount))
    return store


def spend_all(store: RedisStore, external_id: str) -> tuple[int, Admission]:
    """Admit and settle requests of COST until one is refused: how many passed, and the refusal."""
    admitted = 0
    while True:
        admission = store.admit(AdmissionRequest(external_id, estimate=COST))
        if not admission.allowed:
            return admitted, admission
        assert admission.identity is not None
        store.settle(Settlement(admission.identity.id, Usage(cost=COST), admission.reservation))
        admitted += 1


def held_in_redis(store: RedisStore, external_id: str) -> Decimal:
    (status,) = store.budget_status(external_id)
    return status.reserved


@pytest.mark.parametrize("kind", KINDS)
def test_spend_stops_at_the_limit_and_the_429_is_the_one_without_leasing(make_store: MakeStore, kind: str) -> None:
    store = leased(make_store, kind)
    admitted, refused = spend_all(store, "u")
    assert admitted == 100  # every nano-USD of the budget, not one request more
    (status,) = store.budget_status("u")
    assert status.spent == AMOUNT and status.reserved == 0
    plain = make_store(kind, prefix=store.prefix)
    without = plain.admit(AdmissionRequest("u", estimate=COST))
    assert refused.blocked is not None and without.blocked is not None
    assert budget_exceeded("u", refused.blocked).body == budget_exceeded("u", without.blocked).body


@pytest.mark.parametrize("kind", KINDS)
def test_covered_admissions_make_no_round_trip(make_store: MakeStore, kind: str,
                                               request: pytest.FixtureRequest) -> None:
    store = leased(make_store, kind, amount=Decimal("1"))
    first = store.admit(AdmissionRequest("u", estimate=COST))  # takes the lease in its own admit call
    assert first.reservation is not None and not first.reservation.lease
    url = request.getfixturevalue("redis_url" if kind == "redis" else "redis_cluster_url")
    before = script_calls(url)
    admissions = [store.admit(AdmissionRequest("u", estimate=COST)) for _ in range(50)]
    assert script_calls(url) == before
    assert all(admission.reservation is not None and admission.reservation.lease for admission in admissions)


def script_calls(url: str) -> int:
    """EVALSHA calls the server (every primary of a Cluster) has answered."""
    return command_calls(url, "evalsha")


def command_calls(url: str, command: str) -> int:
    """Calls of ``command`` (lower case; those scripts make included) the server, or every primary
    of a Cluster, has answered."""
    if url.startswith("redis+cluster://"):
        cluster: Any = redis.cluster.RedisCluster.from_url(url.replace("redis+cluster://", "redis://"))
        nodes = cluster.info("commandstats", target_nodes=redis.cluster.RedisCluster.PRIMARIES).values()
        cluster.close()
    else:
        with redis.Redis.from_url(url) as client:
            nodes = [client.info("commandstats")]
    return sum(int(node.get(f"cmdstat_{command}", {}).get("calls", 0)) for node in nodes)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
async def test_metrics_are_exact_after_a_flush(make_store: MakeStore, kind: str) -> None:
    store = leased(make_store, kind, amount=None)
    await store.acreate(IdentityInput(id="u"))
    await store.aset_budget("u", Budget(period="daily", amount=AMOUNT))

    async def one(n: int) -> bool:
        admission = await store.aadmit(AdmissionRequest("u", estimate=COST))
        if not admission.allowed:
            return False
        assert admission.identity is not None
        await asyncio.sleep(0)
        await store.asettle(Settlement(admission.identity.id, Usage(cost=COST, input_tokens=2, output_tokens=1,
                                                                    error=n % 4 == 0), admission.reservation))
        return True

    results = await asyncio.gather(*(one(n) for n in range(150)))
    await store.aflush()
    admitted = sum(results)
    failed = sum(1 for n, ok in enumerate(results) if ok and n % 4 == 0)
    metrics = await store.ametrics("u")
    assert admitted <= 100
    assert metrics.total_requests == 150
    assert metrics.total_errors == failed + (150 - admitted)
    assert metrics.total_cost == Decimal("0.00000001") * admitted
    assert metrics.total_tokens == 3 * admitted
    (status,) = await store.abudget_status("u")
    assert status.spent == metrics.total_cost and status.spent + status.reserved <= AMOUNT


@pytest.mark.parametrize("kind", KINDS)
def test_a_lease_expires_by_itself(make_store: MakeStore, kind: str) -> None:
    # Redis expires the lease on its own clock (PEXPIRE): waited for. The store's copy runs on the
    # test's clock, moved past the TTL once Redis has let go. 2 s: long enough that a loaded host
    # does not see it expire before the first look (at 0.5 s it once did), short enough to wait for.
    clock = Clock()
    store = leased(make_store, kind, lease=Lease(fraction=0.5, ttl=2.0), clock=clock)
    store.admit(AdmissionRequest("u"))  # takes a lease, never used or renewed: as if the process died
    observer = make_store(kind, prefix=store.prefix)
    assert isinstance(observer, RedisStore)
    assert held_in_redis(observer, "u") == AMOUNT / 2
    wait_until(lambda: held_in_redis(observer, "u") == 0, "the lease expired in Redis", every=0.05)
    clock.now += 2.0
    assert store.admit(AdmissionRequest("u")).reservation is None  # expired here too: asks Redis again


@pytest.mark.parametrize("kind", KINDS)
def test_close_gives_back_what_the_lease_holds(make_store: MakeStore, kind: str) -> None:
    store = leased(make_store, kind)
    observer = make_store(kind, prefix=store.prefix)
    assert isinstance(observer, RedisStore)
    for _ in range(5):
        admission = store.admit(AdmissionRequest("u", estimate=COST))
        assert admission.identity is not None
        store.settle(Settlement(admission.identity.id, Usage(cost=COST), admission.reservation))
    assert held_in_redis(observer, "u") > 0
    store.close()
    (status,) = observer.budget_status("u")
    assert status.reserved == 0 and status.spent == Decimal("0.00000005")


@pytest.mark.parametrize("kind", KINDS)
def test_what_settles_while_the_writer_lingers_is_one_call_per_identity(make_store: MakeStore, kind: str,
                                                                        request: pytest.FixtureRequest) -> None:
    # A linger no test outlives: nothing is written until the flush below, however slow the machine.
    store = leased(make_store, kind, amount=None, lease=Lease(fraction=0.5, ttl=600.0), linger=150.0)
    names = [f"linger-{n}" for n in range(4)]
    for name in names:
        store.create(IdentityInput(id=name))
        store.set_budget(name, Budget(period="daily", amount=Decimal("1")))
        first = store.admit(AdmissionRequest(name, estimate=COST))  # takes the lease: what follows is local
        assert first.identity is not None
        store.settle(Settlement(first.identity.id, Usage(cost=COST, input_tokens=3), first.reservation))
    store.flush()
    url = request.getfixturevalue("redis_url" if kind == "redis" else "redis_cluster_url")
    before = script_calls(url)
    for _ in range(25):  # a sync worker's requests: admitted from the lease, settled to the writer thread
        for name in names:
            admission = store.admit(AdmissionRequest(name, estimate=COST))
            assert admission.identity is not None and admission.reservation is not None
            assert admission.reservation.lease
            store.settle(Settlement(admission.identity.id, Usage(cost=COST, input_tokens=3), admission.reservation))
    assert script_calls(url) == before  # all lingering
    store.flush()
    assert script_calls(url) == before + len(names)  # 100 settlements, summed: one settle call per identity
    observer = make_store(kind, prefix=store.prefix)
    for name in names:
        metrics = observer.metrics(name)
        assert metrics.total_requests == 26 and metrics.total_cost == Decimal("0.00000026")
        assert metrics.total_tokens == 78


def test_close_cuts_the_writer_linger_short(make_store: MakeStore) -> None:
    store = leased(make_store, "redis", amount=None, lease=Lease(ttl=600.0), linger=3600.0)
    identity = store.create(IdentityInput(id="linger-close"))
    store.settle(Settlement(identity.id, Usage(cost=COST)))  # the writer thread starts, and lingers an hour
    started = time.monotonic()
    store.close()
    # Not the linger: a bound 60 times under it, and far above a close's milliseconds on any host.
    # (Had close given up on the thread instead, after the 10 s a stop waits, nothing would be written.)
    assert time.monotonic() - started < 60
    observer = make_store("redis", prefix=store.prefix)
    assert observer.metrics("linger-close").total_requests == 1


def _child_admits(store: RedisStore, answer: Any) -> None:
    reservation = store.admit(AdmissionRequest("u", estimate=COST)).reservation
    answer.put(None if reservation is None else reservation.lease)


@pytest.mark.parametrize("kind", KINDS)
def test_a_process_forked_with_the_store_starts_with_no_lease(make_store: MakeStore, kind: str) -> None:
    store = leased(make_store, kind, amount=Decimal("1"))
    store.admit(AdmissionRequest("u"))
    parent = store.admit(AdmissionRequest("u", estimate=COST)).reservation
    assert parent is not None and parent.lease
    context = multiprocessing.get_context("fork")
    answer = context.Queue()
    child = context.Process(target=_child_admits, args=(store, answer))
    child.start()
    child_lease = answer.get(timeout=20)
    child.join(20)
    assert child_lease == ""  # not admitted on the parent's lease: the child's first admission asked Redis
    covered = store.admit(AdmissionRequest("u", estimate=COST)).reservation
    assert covered is not None and covered.lease == parent.lease  # the parent's lease is still its own


def test_threads_share_one_lease_exactly(make_store: MakeStore) -> None:
    store = leased(make_store, "redis", lease=Lease(fraction=0.2))
    counts: list[int] = []

    def worker() -> None:
        counts.append(spend_all(store, "u")[0])

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (status,) = store.budget_status("u")
    assert sum(counts) == 100 and status.spent == AMOUNT
    assert store.metrics("u").total_requests == 108  # 100 admitted, one refusal per thread


@pytest.mark.parametrize("kind", KINDS)
def test_profile_changes_and_global_budgets_take_the_admit_script(make_store: MakeStore, kind: str) -> None:
    store = leased(make_store, kind, amount=Decimal("1"))
    store.admit(AdmissionRequest("u"))
    assert store.admit(AdmissionRequest("u", upsert=IdentityInput(id="u"))).reservation is not None
    changed = store.admit(AdmissionRequest("u", upsert=IdentityInput(id="u", display_name="U")))
    assert changed.reservation is None and changed.identity is not None and changed.identity.display_name == "U"
    store.create_budget(BudgetSpec(scope="workspace", period="daily", amount="5"))
    store.admit(AdmissionRequest("u"))  # reads the registry again
    workspace = store.admit(AdmissionRequest("u", estimate=COST)).reservation
    assert workspace is not None and not workspace.lease and workspace.budgets


@pytest.mark.anyio
async def test_the_asgi_middleware_admits_known_body_identities_with_no_round_trip(
        make_store: MakeStore, redis_url: str) -> None:
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from identity_middleware import IdentityMiddleware, record_usage

    async def chat(request: Request) -> JSONResponse:
        record_usage("0.00000001", input_tokens=2, output_tokens=1)
        return JSONResponse({})

    store = leased(make_store, "redis", amount=Decimal("1"))  # created by the API: no source yet
    app = Starlette(routes=[Route("/chat", chat, methods=["POST"])],
                    middleware=[Middleware(IdentityMiddleware, store=store)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
        for _ in range(3):  # the first takes the lease and reads the registry of global budgets
            assert (await client.post("/chat", json={"identity": {"id": "u"}})).status_code == 200
        await store.aflush()
        before = script_calls(redis_url)
        statuses = [(await client.post("/chat", json={"identity": {"id": "u"}})).status_code for _ in range(50)]
        calls = script_calls(redis_url) - before
    await store.aflush()
    assert statuses == [200] * 50
    assert calls <= 5  # settlement batches (and a renewal), no admission
    metrics = await store.ametrics("u")
    assert metrics.total_requests == 53 and metrics.total_tokens == 3 * 53
