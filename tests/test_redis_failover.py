"""Redis replies that mean "not now" (NOREPLICAS, READONLY, LOADING, ...) are outages: the outage policy
answers, settlements stay buffered and are written once when Redis serves again. Real redis-server
processes: a master with ``min-replicas-to-write 1`` and no replica, a replica addressed as the master."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from identity_middleware import IdentityMiddleware, budgeted, record_usage
from identity_middleware.core.admission import AdmissionRequest, Settlement, Usage
from identity_middleware.core.errors import StoreUnavailable
from identity_middleware.core.models import Budget, IdentityInput
from identity_middleware.core.money import to_nanos
from identity_middleware.stores import RedisStore
from identity_middleware.stores.redis.transport import UNSERVED, refused
from outages import asettlements_outlast, settlements_outlast
from redis_servers import own_server

CENT = to_nanos("0.01")


@pytest.fixture
def port(tmp_path: Path) -> Iterator[int]:
    """A private master this test may deny writes (``min-replicas-to-write``)."""
    with own_server(tmp_path) as found:
        yield found


def replicas_required(port: int, count: int) -> None:
    """``min-replicas-to-write count`` on the master at ``port`` (it has no replica: 1 refuses writes)."""
    with redis.Redis(port=port) as admin:
        admin.config_set("min-replicas-to-write", count)


@contextlib.contextmanager
def writes_refused(port: int) -> Iterator[None]:
    """The master at ``port`` refusing writes (NOREPLICAS) until the block ends."""
    replicas_required(port, 1)
    try:
        yield
    finally:
        replicas_required(port, 0)


def spent(store: RedisStore, identity: str) -> tuple[Decimal, int]:
    metrics = store.metrics(identity)
    return metrics.total_cost, metrics.total_requests


@pytest.mark.parametrize("code", UNSERVED)
def test_each_not_now_reply_is_an_outage_not_a_reply_for_the_plan(code: str) -> None:
    outage = refused(redis.exceptions.ResponseError(f"{code} the server cannot serve this now"))
    assert isinstance(outage, redis.exceptions.ConnectionError)
    inside_a_script = redis.exceptions.ResponseError(f"{code} words. script: 7e60, on @user_script:1.")
    assert refused(inside_a_script) is not None
    assert refused(redis.exceptions.ResponseError("WRONGTYPE Operation against a key")) is None


@pytest.mark.parametrize("multiplex", [False, True])
def test_sync_settlements_refused_with_noreplicas_stay_buffered_and_land_once(port: int, multiplex: bool) -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", multiplex=multiplex, linger=60.0)
    try:
        settlements_outlast(store, "u", writes_refused(port), refusal="NOREPLICAS")
        assert spent(store, "u") == (Decimal("0.03"), 3)
    finally:
        store.close()


@pytest.mark.parametrize("multiplex", [False, True])
def test_async_settlements_refused_with_noreplicas_stay_buffered_and_land_once(port: int, multiplex: bool) -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", multiplex=multiplex)

    async def main() -> None:
        await asettlements_outlast(store, "u", writes_refused(port), refusal="NOREPLICAS")
        await store.aclose()

    try:
        asyncio.run(main())
        assert spent(store, "u") == (Decimal("0.03"), 3)
    finally:
        store.close()


@budgeted(estimate="0.01")
async def llm(request: Request) -> Response:
    record_usage("0.01")
    return JSONResponse({"ok": True})


@pytest.mark.parametrize("policy", ["open", "closed"])
def test_budgeted_requests_while_the_master_lacks_replicas_follow_the_policy_and_log_once(
        port: int, policy: str, caplog: pytest.LogCaptureFixture) -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0")
    store.create(IdentityInput(id="u"))
    store.set_budget("u", Budget(period="daily", amount="1.00"))
    app = Starlette(routes=[Route("/llm", llm, methods=["POST"])],
                    middleware=[Middleware(IdentityMiddleware, store=store, on_store_error=policy)])
    body = {"identity": {"id": "u"}}
    try:
        with TestClient(app) as client, caplog.at_level(logging.WARNING):
            assert client.post("/llm", json=body).status_code == 200
            store.flush()
            replicas_required(port, 1)
            during = [client.post("/llm", json=body).status_code for _ in range(5)]
            assert during == ([200] * 5 if policy == "open" else [503] * 5)
            replicas_required(port, 0)
            assert client.post("/llm", json=body).status_code == 200
        assert spent(store, "u")[0] == Decimal("0.02")  # before and after; those let through are untracked
        messages = [record.getMessage() for record in caplog.records]
        assert not [each for each in messages if "never retrieved" in each or "refused" in each]
        assert len([each for each in messages if "unavailable" in each]) == 1
        assert len([each for each in messages if "available again" in each]) == 1
    finally:
        store.close()


@pytest.mark.parametrize("multiplex", [False, True])
def test_a_replica_addressed_as_the_master_is_an_outage_and_settlements_wait_for_a_master(
        tmp_path: Path, multiplex: bool) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "r").mkdir()
    with own_server(tmp_path / "m") as master, own_server(tmp_path / "r") as replica:
        with redis.Redis(port=replica) as admin:
            admin.replicaof("127.0.0.1", master)
        store = RedisStore.from_url(f"redis://127.0.0.1:{master}/0", multiplex=multiplex, linger=60.0)
        on_replica = RedisStore.from_url(f"redis://127.0.0.1:{replica}/0", multiplex=multiplex, linger=60.0)
        try:
            identity = store.create(IdentityInput(id="u")).id
            store.set_budget("u", Budget(period="daily", amount="1.00"))
            admission = store.admit(AdmissionRequest("u", estimate=CENT))
            with redis.Redis(port=master) as admin:
                assert admin.wait(1, 10_000) == 1  # the replica holds the identity and its reservation
            on_replica.settle(Settlement(identity, Usage(cost=CENT), admission.reservation,
                                         datetime.now(UTC)))
            with pytest.raises(StoreUnavailable, match="READONLY"):
                on_replica.flush()
            with pytest.raises(StoreUnavailable):
                on_replica.admit(AdmissionRequest("u", estimate=CENT))
            assert on_replica.buffered == 1
            with redis.Redis(port=replica) as admin:  # promoted: the store's address is a master now
                admin.replicaof("NO", "ONE")
            on_replica.flush()
            assert on_replica.buffered == 0
            assert spent(on_replica, "u") == (Decimal("0.01"), 1)
        finally:
            on_replica.close()
            store.close()


async def chat(request: Request) -> Response:
    record_usage("0.01")
    return JSONResponse({"ok": True})


def test_answers_that_write_nothing_do_not_end_an_outage_of_writes(port: int, caplog: pytest.LogCaptureFixture) -> None:
    """With writes refused (NOREPLICAS) an admission that writes nothing (no budget, no estimate) is
    answered while settlements stay buffered: the outage is not over until they land."""
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0")
    store.create(IdentityInput(id="u"))
    store.set_budget("u", Budget(period="daily", amount="1.00"))
    store.create(IdentityInput(id="reader"))
    app = Starlette(routes=[Route("/llm", llm, methods=["POST"]), Route("/chat", chat, methods=["POST"])],
                    middleware=[Middleware(IdentityMiddleware, store=store, on_store_error="open")])
    try:
        with TestClient(app) as client, caplog.at_level(logging.WARNING):
            assert client.post("/chat", json={"identity": {"id": "reader"}}).status_code == 200
            store.flush()
            replicas_required(port, 1)
            for _ in range(5):
                assert client.post("/llm", json={"identity": {"id": "u"}}).status_code == 200  # untracked
                assert client.post("/chat", json={"identity": {"id": "reader"}}).status_code == 200  # tracked
            replicas_required(port, 0)
            store.flush()
            assert client.post("/chat", json={"identity": {"id": "reader"}}).status_code == 200
        assert spent(store, "reader") == (Decimal("0.07"), 7)
        messages = [record.getMessage() for record in caplog.records]
        # Not a pair per answer (5 of each before): the outage is over only once the settlements it
        # left are written. One more pair is possible at its start, before the first of them fails.
        assert 1 <= len([each for each in messages if "store unavailable" in each]) <= 2
        assert 1 <= len([each for each in messages if "available again" in each]) <= 2
    finally:
        store.close()
