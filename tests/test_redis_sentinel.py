"""RedisStore through ``redis+sentinel://``: a real master and a real Sentinel, sync and async forms."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from identity_middleware import IdentityMiddleware, budgeted, record_usage
from identity_middleware.core.admission import AdmissionRequest, Settlement, Usage
from identity_middleware.core.models import Budget, IdentityInput
from identity_middleware.core.money import to_nanos
from identity_middleware.core.periods import Period
from identity_middleware.ratelimit import RateLimiter
from identity_middleware.stores import RedisStore
from redis_servers import redis_sentinel

CENT = to_nanos("0.01")
MakeSentinelStore = Callable[..., RedisStore]


@pytest.fixture(scope="module")
def sentinel_url() -> Iterator[str]:
    """``redis+sentinel://127.0.0.1:PORT/mymaster``: a private master and a Sentinel that reports it."""
    with redis_sentinel() as url:
        yield url


@pytest.fixture
def make_store(sentinel_url: str) -> Iterator[MakeSentinelStore]:
    made: list[RedisStore] = []

    def make(**options: Any) -> RedisStore:
        options.setdefault("prefix", f"s{uuid.uuid4().hex[:12]}")
        options.setdefault("request_timeout", 5.0)  # a loaded 2-core machine; the bound is tested elsewhere
        store = RedisStore.from_url(sentinel_url, **options)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def test_the_url_reaches_the_master_the_sentinel_names(make_store: MakeSentinelStore, sentinel_url: str) -> None:
    store = make_store()
    client = store.client
    assert client.ping() is True
    assert client.info("server")["redis_mode"] == "standalone"  # the master, not the sentinel
    assert client.info("replication")["role"] == "master"
    assert store.rate_limit_storage_uri == sentinel_url


def test_sync_store_behaviour(make_store: MakeSentinelStore) -> None:
    store = make_store()
    created = store.create(IdentityInput(id="user_1", display_name="Jane", tags=["beta"]))
    fetched = store.retrieve("user_1")
    assert (fetched.id, fetched.external_id, fetched.display_name, fetched.tags) == (
        created.id, "user_1", "Jane", ["beta"])

    store.set_budget("user_1", Budget(period=Period.DAILY, amount=Decimal("0.03")))
    admissions = [store.admit(AdmissionRequest("user_1", estimate=CENT)) for _ in range(3)]
    assert all(admission.allowed for admission in admissions)
    status = store.budget_status("user_1")[0]
    assert (status.spent, status.reserved) == (Decimal("0"), Decimal("0.03"))
    blocked = store.admit(AdmissionRequest("user_1", estimate=CENT))
    assert not blocked.allowed and blocked.blocked is not None  # at the limit: spent + reserved == amount

    for admission in admissions:
        assert admission.identity is not None
        usage = Usage()
        usage.add(CENT, 10, 5, "test-model")
        store.settle(Settlement(admission.identity.id, usage, admission.reservation))
    status = store.budget_status("user_1")[0]
    assert (status.spent, status.reserved) == (Decimal("0.03"), Decimal("0"))
    metrics = store.metrics("user_1")
    assert metrics.total_cost == Decimal("0.03")
    assert (metrics.total_requests, metrics.total_errors) == (4, 1)
    assert (metrics.input_tokens, metrics.output_tokens) == (30, 15)
    assert not store.admit(AdmissionRequest("user_1", estimate=1)).allowed  # spent to the cent


def test_async_store_behaviour(make_store: MakeSentinelStore) -> None:
    store = make_store()

    async def main() -> None:
        created = await store.acreate(IdentityInput(id="user_a", display_name="Async"))
        assert (await store.aretrieve("user_a")).id == created.id
        await store.aset_budget("user_a", Budget(period=Period.MONTHLY, amount=Decimal("0.50")))

        async def request() -> bool:
            admission = await store.aadmit(AdmissionRequest("user_a", estimate=CENT))
            if not admission.allowed:
                return False
            assert admission.identity is not None
            await asyncio.sleep(0)  # the "LLM call": others interleave while this one holds its reservation
            await store.asettle(Settlement(admission.identity.id, Usage(cost=CENT), admission.reservation))
            return True

        results = await asyncio.gather(*(request() for _ in range(80)))
        assert sum(results) == 50  # estimates equal costs: the budget is used to the cent, never beyond
        status = (await store.abudget_status("user_a"))[0]
        assert (status.spent, status.reserved) == (Decimal("0.50"), Decimal("0"))
        metrics = await store.ametrics("user_a")
        assert metrics.total_cost == Decimal("0.50")
        assert (metrics.total_requests, metrics.total_errors) == (80, 30)
        await store.aclose()

    asyncio.run(main())
    assert store.metrics("user_a").total_requests == 80  # the sync form sees the same data afterwards


def test_rate_limit_storage_uri_drives_the_sync_rate_limiter(make_store: MakeSentinelStore) -> None:
    store = make_store()
    limiter = RateLimiter("2/minute", storage_uri=store.rate_limit_storage_uri)
    key = f"sync-{uuid.uuid4().hex}"
    assert limiter.hit(key) is None
    assert limiter.hit(key) is None
    exceeded = limiter.hit(key)
    assert exceeded is not None and 1 <= exceeded.retry_after <= 60
    # The count lives on the master the sentinel names: a second limiter (another app instance) shares it.
    assert RateLimiter("2/minute", storage_uri=store.rate_limit_storage_uri).hit(key) is not None
    assert any("identity-middleware" in key for key in store.client.scan_iter(match="LIMITS*"))


def test_rate_limit_storage_uri_drives_the_async_rate_limiter(make_store: MakeSentinelStore) -> None:
    store = make_store()
    limiter = RateLimiter("2/minute", storage_uri=store.rate_limit_storage_uri)
    key = f"async-{uuid.uuid4().hex}"

    async def main() -> list[bool]:
        return [await limiter.ahit(key) is None for _ in range(3)]

    assert asyncio.run(main()) == [True, True, False]
    assert limiter.hit(key) is not None  # the sync form counts on the same server


@budgeted(estimate="0.05")
async def llm(request: Request) -> Response:
    record_usage("0.04", input_tokens=100, output_tokens=50, model="gpt-4o")
    return JSONResponse({"ok": True})


def test_starlette_app_answers_429_when_the_budget_is_spent(make_store: MakeSentinelStore) -> None:
    store = make_store()
    store.create(IdentityInput(id="u"))
    store.set_budget("u", Budget(period="daily", amount="0.10"))
    app = Starlette(routes=[Route("/llm", llm, methods=["POST"])],
                    middleware=[Middleware(IdentityMiddleware, store=store)])
    with TestClient(app) as client:
        codes = [client.post("/llm", json={"identity": {"id": "u"}}).status_code for _ in range(3)]
        assert codes == [200, 200, 429]  # 0.08 spent + 0.05 estimated > 0.10
        response = client.post("/llm", json={"identity": {"id": "u"}})
        assert response.status_code == 429
        error = response.json()["error"]
        assert (error["type"], error["identity"], error["period"], error["amount"], error["spent"]) == (
            "budget_exceeded", "u", "daily", "0.10", "0.08")
        assert 1 <= int(response.headers["retry-after"]) <= 86400
    metrics = store.metrics("u")
    assert metrics.total_cost == Decimal("0.08")
    assert (metrics.total_requests, metrics.total_errors) == (4, 2)
    assert (metrics.input_tokens, metrics.output_tokens) == (200, 100)


def test_starlette_app_rate_limits_on_the_sentinel_master(make_store: MakeSentinelStore) -> None:
    store = make_store()
    app = Starlette(routes=[Route("/llm", llm, methods=["POST"])],
                    middleware=[Middleware(IdentityMiddleware, store=store, rate_limit="2/minute")])
    identity = f"r{uuid.uuid4().hex[:8]}"
    with TestClient(app) as client:
        codes = [client.post("/llm", json={"identity": {"id": identity}}).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        response = client.post("/llm", json={"identity": {"id": identity}})
        assert response.json()["error"]["type"] == "rate_limited"
        assert 1 <= int(response.headers["retry-after"]) <= 60
