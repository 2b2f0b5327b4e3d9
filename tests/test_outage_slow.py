"""A slow process is not an outage: a late reply refuses its request (503), never lets it through
unmetered; the outage policy applies once the store's breaker says Redis is down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from identity_middleware import IdentityMiddleware, current_identity, record_usage
from identity_middleware.core.admission import AdmissionRequest
from identity_middleware.core.errors import StoreLate, StoreUnavailable
from identity_middleware.stores import RedisStore
from identity_middleware.stores.health import Failure, Health, State
from redis_servers import free_port, own_server, stalled

BODY = {"identity": {"id": "u"}, "messages": []}


@pytest.fixture
def port(tmp_path: Path) -> Iterator[int]:
    """A private redis-server that may be stalled (its own, so no other test waits on it)."""
    with own_server(tmp_path) as port:
        yield port


async def chat(request: Request) -> Response:
    record_usage("0.001")
    identity = current_identity()  # None: let through untracked (see on_store_error)
    return JSONResponse({"identity": identity.external_id if identity else None})


def app(store: RedisStore, policy: str) -> Starlette:
    return Starlette(routes=[Route("/chat", chat, methods=["POST"])],
                     middleware=[Middleware(IdentityMiddleware, store=store, on_store_error=policy)])


@pytest.mark.parametrize("policy", ["open", "closed"])
def test_a_late_admission_is_refused_not_let_through_while_redis_is_not_known_down(
        port: int, policy: str, caplog: pytest.LogCaptureFixture) -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", prefix="slow", request_timeout=0.3)
    try:
        with TestClient(app(store, policy)) as client:
            assert client.post("/chat", json=BODY).json() == {"identity": "u"}
            with stalled(port, 1.5):
                response = client.post("/chat", json=BODY)
            assert response.status_code == 503
            assert response.json()["error"]["type"] == "store_unavailable"
            assert response.headers["retry-after"] == "1"
            assert store.health.state is State.CLOSED  # one late reply: not an outage
            assert "is not known to be down: such requests are refused (503)" in caplog.text
            assert client.post("/chat", json=BODY).json() == {"identity": "u"}
    finally:
        store.close()


@pytest.mark.parametrize(("policy", "status", "identity"), [("open", 200, None), ("closed", 503, None)])
def test_a_stall_is_an_outage_after_a_run_of_timeouts_and_then_follows_the_policy(
    port: int, policy: str, status: int, identity: str | None
) -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", prefix="slow", request_timeout=0.3,
                                breaker=lambda: Health(timeouts=3, run=0.5, cooldown=30.0))  # no probe meanwhile
    health = store.health
    try:
        with TestClient(app(store, policy)) as client:
            assert client.post("/chat", json=BODY).json() == {"identity": "u"}
            with stalled(port, 3):
                late = [client.post("/chat", json=BODY).status_code for _ in range(2)]
                tripping = client.post("/chat", json=BODY)  # the third timeout, 0.6 s after the first
            assert late == [503, 503]
            assert health.state is State.OPEN and health.cause is Failure.TIMEOUT
            # Redis answers again, but the breaker is open (no probe for 30 s): the store does not
            # ask it, and the request follows the policy, as it would with Redis still stalled. Had
            # Redis been asked, the request would be served tracked ({"identity": "u"}).
            during = client.post("/chat", json=BODY)
            assert health.state is State.OPEN
            for response in (tripping, during):
                assert response.status_code == status
                if status == 200:
                    assert response.json() == {"identity": identity}  # served, untracked
    finally:
        store.close()


def test_after_a_stall_the_probe_is_tracked_and_closes_the_breaker(port: int) -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", prefix="slow", request_timeout=0.3,
                                breaker=lambda: Health(timeouts=1, run=0.0, cooldown=0.0))
    health = store.health
    try:
        with TestClient(app(store, "open")) as client:
            with stalled(port, 1):
                assert client.post("/chat", json=BODY).json() == {"identity": None}
            assert health.down
            assert client.post("/chat", json=BODY).json() == {"identity": "u"}  # the probe, answered
            assert health.state is State.CLOSED
    finally:
        store.close()


def test_a_refused_connection_is_an_outage_at_once(tmp_path: Path) -> None:
    port = free_port()
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", prefix="slow", socket_connect_timeout=0.5)
    try:
        with pytest.raises(StoreUnavailable) as raised:
            store.admit(AdmissionRequest("u"))
        assert not isinstance(raised.value, StoreLate)
        assert store.health.state is State.OPEN and store.health.cause is Failure.REFUSED
    finally:
        store.close()


@pytest.mark.anyio
async def test_a_starved_loop_never_lets_an_admission_through_unmetered(port: int) -> None:
    """The loop is blocked past the admission's deadline while Redis answers: the admission is
    either counted (the reply was read first) or late (503), never an outage."""
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", prefix="slow", request_timeout=0.2)
    try:
        await store.aadmit(AdmissionRequest("u"))  # connected
        outcomes = []
        for _ in range(5):
            admission = asyncio.ensure_future(store.aadmit(AdmissionRequest("u")))
            await asyncio.sleep(0)  # sent
            time.sleep(0.4)  # the loop starved past the deadline  # noqa: ASYNC251
            try:
                outcomes.append((await admission).identity is not None)
            except StoreLate:
                outcomes.append(False)
        assert store.health.state is State.CLOSED
        assert len(outcomes) == 5
    finally:
        await store.aclose()
