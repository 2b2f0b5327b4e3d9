"""RedisStore reaches the server it was given: unix sockets, and stores built from clients, rate limits included."""

from __future__ import annotations

import gc
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

from identity_middleware.core.admission import AdmissionRequest
from identity_middleware.core.errors import StoreUnavailable
from identity_middleware.core.models import IdentityInput
from identity_middleware.ratelimit import RateLimiter
from identity_middleware.stores import RedisOptions, RedisStore
from redis_servers import free_port, redis_unix_server, start_server, stop_servers
from waiting import wait_until


@pytest.fixture(scope="module")
def socket_path() -> Iterator[Path]:
    with redis_unix_server() as path:
        yield path


def _on_default_port(pattern: str) -> list[str]:
    """Keys matching ``pattern`` on 127.0.0.1:6379 (another server on this machine; only read)."""
    try:
        with redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1, decode_responses=True) as client:
            return list(client.scan_iter(match=pattern, count=1000))
    except redis.exceptions.ConnectionError:
        return []  # nothing listens there: nothing can have landed there


def _on_socket(path: Path, pattern: str) -> list[str]:
    with redis.Redis(unix_socket_path=str(path), decode_responses=True) as client:
        return list(client.scan_iter(match=pattern, count=1000))


def _limited(limiter: RateLimiter, external_id: str) -> list[bool]:
    return [limiter.hit(external_id) is not None for _ in range(3)]


@pytest.mark.parametrize("multiplex", [True, False])
@pytest.mark.anyio
async def test_a_unix_url_writes_to_that_socket_and_nowhere_else(socket_path: Path, multiplex: bool) -> None:
    prefix = f"unix-{uuid.uuid4().hex[:12]}"
    store = RedisStore.from_url(f"unix://{socket_path}", prefix=prefix, multiplex=multiplex)
    try:
        store.create(IdentityInput(id="sync"))
        assert (await store.aadmit(AdmissionRequest("async"))).identity is not None
        assert store.accelerated is multiplex  # both async paths take the socket
        assert {identity.external_id for identity in (await store.alist()).data} == {"sync", "async"}
    finally:
        await store.aclose()
    assert f"{prefix}:identities" in _on_socket(socket_path, f"{prefix}:*")
    assert _on_default_port(f"{prefix}:*") == []


def test_a_unix_store_rate_limits_on_that_socket(socket_path: Path) -> None:
    store = RedisStore.from_url(f"unix://{socket_path}?db=0")
    assert store.rate_limit_storage_uri == f"redis+unix://{socket_path}?db=0"  # the scheme limits knows
    external_id = f"unix-limit-{uuid.uuid4().hex[:12]}"
    assert _limited(RateLimiter("2/minute", storage_uri=store.rate_limit_storage_uri), external_id) == [
        False, False, True]
    assert _on_socket(socket_path, f"*{external_id}*")
    assert _on_default_port(f"*{external_id}*") == []
    store.close()


def _client_store(url: str, **options: Any) -> RedisStore:
    return RedisStore(client=redis.Redis.from_url(url, decode_responses=True, **options),
                      async_client_factory=lambda: redis.asyncio.Redis.from_url(url, decode_responses=True, **options),
                      options=RedisOptions(prefix=f"given-{uuid.uuid4().hex[:12]}"))


@pytest.mark.anyio
async def test_a_store_built_from_clients_names_their_server_for_rate_limits(redis_url: str) -> None:
    store = _client_store(redis_url)
    assert store.rate_limit_storage_uri == redis_url
    assert (await store.aadmit(AdmissionRequest("a"))).identity is not None
    limiter = RateLimiter("2/minute", storage_uri=store.rate_limit_storage_uri)
    assert [await limiter.ahit("a") is not None for _ in range(3)] == [False, False, True]
    assert _limited(limiter, "b") == [False, False, True]
    assert any("identity-middleware/a/" in key for key in store.client.scan_iter(match="LIMITS*"))
    await store.aclose()


def test_a_store_built_from_clients_passes_their_password_to_rate_limits(tmp_path: Path) -> None:
    port = free_port()
    password = "p@ss:w/rd"  # characters a URL must quote
    process = start_server(port, tmp_path)
    try:
        with redis.Redis(port=port) as client:  # set after start: the start-up PING sends no password
            client.config_set("requirepass", password)
        store = _client_store(f"redis://127.0.0.1:{port}/2", password=password)
        assert store.rate_limit_storage_uri == f"redis://:p%40ss%3Aw%2Frd@127.0.0.1:{port}/2"
        assert _limited(RateLimiter("2/minute", storage_uri=store.rate_limit_storage_uri), "a") == [
            False, False, True]
        store.close()
    finally:
        stop_servers([process])


def test_a_store_built_from_a_unix_client_names_its_socket(socket_path: Path) -> None:
    store = RedisStore(client=redis.Redis(unix_socket_path=str(socket_path), db=1, decode_responses=True),
                       async_client_factory=lambda: redis.asyncio.Redis(unix_socket_path=str(socket_path), db=1,
                                                                        decode_responses=True))
    assert store.rate_limit_storage_uri == f"redis+unix://{socket_path}?db=1"
    external_id = f"unix-given-{uuid.uuid4().hex[:12]}"
    assert _limited(RateLimiter("2/minute", storage_uri=store.rate_limit_storage_uri), external_id) == [
        False, False, True]
    with redis.Redis(unix_socket_path=str(socket_path), db=1, decode_responses=True) as client:
        assert list(client.scan_iter(match=f"*{external_id}*"))



@pytest.mark.parametrize("rate_limit", [None, "2/minute"])
def test_a_store_built_from_clients_serves_the_middlewares(redis_url: str, rate_limit: str | None) -> None:
    """The documented ``RedisStore(client=..., async_client_factory=...)`` behind the ASGI and WSGI
    middlewares, with and without a rate limit (it used to raise in any middleware)."""
    from flask import Flask
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from identity_middleware import IdentityMiddleware, IdentityWSGIMiddleware, current_identity, record_usage

    store = _client_store(redis_url)

    async def chat(request: Request) -> JSONResponse:
        record_usage("0.001")
        identity = current_identity()
        return JSONResponse({"identity": identity.external_id if identity else None})

    asgi_app = Starlette(routes=[Route("/chat", chat, methods=["POST"])])
    asgi_app.add_middleware(IdentityMiddleware, store=store, rate_limit=rate_limit)
    flask_app = Flask(__name__)

    @flask_app.post("/chat")
    def flask_chat() -> dict[str, Any]:
        record_usage("0.001")
        identity = current_identity()
        return {"identity": identity.external_id if identity else None}

    flask_app.wsgi_app = IdentityWSGIMiddleware(flask_app.wsgi_app, store=store,  # type: ignore[method-assign]
                                                rate_limit=rate_limit)
    with TestClient(asgi_app) as client:
        answers = [client.post("/chat", headers={"X-Identity-Id": "asgi-user"}) for _ in range(3)]
    flask = flask_app.test_client()
    wsgi_answers = [flask.post("/chat", headers={"X-Identity-Id": "wsgi-user"}, buffered=True) for _ in range(3)]
    expected = [200, 200, 429] if rate_limit else [200, 200, 200]
    assert [answer.status_code for answer in answers] == expected
    assert [answer.status_code for answer in wsgi_answers] == expected
    assert answers[0].json() == {"identity": "asgi-user"} and wsgi_answers[0].json == {"identity": "wsgi-user"}
    spent = Decimal("0.002") if rate_limit else Decimal("0.003")  # a refused request runs no view
    assert store.metrics("asgi-user").total_cost == store.metrics("wsgi-user").total_cost == spent
    store.close()


@pytest.mark.anyio
async def test_the_direct_paths_authenticate_and_select_the_urls_db(tmp_path: Path) -> None:
    port = free_port()
    process = start_server(port, tmp_path)
    try:
        with redis.Redis(port=port) as client:
            client.config_set("requirepass", "secret")
        # A cold connection (AUTH, SELECT) on this shared machine may take longer than the 0.25 s
        # production bound: what is tested here is where it goes.
        store = RedisStore.from_url(f"redis://:secret@127.0.0.1:{port}/3", prefix="auth", request_timeout=5.0)
        try:
            assert store.admit(AdmissionRequest("sync")).identity is not None  # a thread's plain socket
            assert (await store.aadmit(AdmissionRequest("async"))).identity is not None  # the multiplexed one
            assert store.accelerated
        finally:
            await store.aclose()
        with redis.Redis(port=port, password="secret", db=3, decode_responses=True) as client:
            assert client.exists("auth:identities") and client.zcard("auth:identities") == 2
        with redis.Redis(port=port, password="secret", db=0) as client:
            assert client.dbsize() == 0
        bad = RedisStore.from_url(f"redis://:wrong@127.0.0.1:{port}/3", prefix="auth")
        with pytest.raises(StoreUnavailable):  # refused: an outage to the middleware, as through redis-py
            bad.admit(AdmissionRequest("sync"))
        bad.close()
    finally:
        stop_servers([process])


def test_a_thread_that_ends_closes_its_direct_connection(redis_url: str) -> None:
    store = RedisStore.from_url(redis_url, prefix=f"threads-{uuid.uuid4().hex[:8]}")
    try:
        with redis.Redis.from_url(redis_url) as client:
            before = client.info("clients")["connected_clients"]
            for n in range(20):  # a thread per request, as some servers do
                thread = threading.Thread(target=store.admit, args=(AdmissionRequest(f"t{n}"),))
                thread.start()
                thread.join()
            gc.collect()
            wait_until(lambda: client.info("clients")["connected_clients"] <= before + 3,  # not 20 more
                       "the ended threads' connections closed", every=0.05)
    finally:
        store.close()
