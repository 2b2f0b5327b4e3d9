"""A store that cannot work is said at startup, in words (the URL, its password masked, and the cause);
at run time the same errors meet the outage policy, never a 500."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from flask import Flask
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from identity_middleware import IdentityMiddleware, IdentityWSGIMiddleware, current_identity
from identity_middleware.core.admission import AdmissionRequest
from identity_middleware.core.errors import StoreMisconfigured, StoreUnavailable
from identity_middleware.stores import RedisStore, store_from_url
from identity_middleware.stores.redis import RedisOptions
from identity_middleware.stores.urls import check_url, masked
from redis_servers import free_port, own_server

PASSWORD = "s3cret-pw"
BODY = {"identity": {"id": "u"}, "messages": []}


@pytest.fixture
def port(tmp_path: Path) -> Iterator[int]:
    """A private redis-server that requires ``PASSWORD``."""
    with own_server(tmp_path) as port:
        redis.Redis(port=port).config_set("requirepass", PASSWORD)
        yield port


async def whoami(request: Request) -> Response:
    identity = current_identity()  # None: the request was let through untracked (on_store_error="open")
    return JSONResponse({"identity": identity.external_id if identity else None})


def asgi_app(store: RedisStore, policy: str = "open") -> Starlette:
    return Starlette(routes=[Route("/whoami", whoami, methods=["POST"])],
                     middleware=[Middleware(IdentityMiddleware, store=store, on_store_error=policy)])


# -- URLs refused where the store is built ------------------------------------------------------------
@pytest.mark.parametrize(("url", "words"), [
    ("http://:pw@redis:6379/0", "http:// is not a store"),
    ("localhost:6379", "has no scheme"),
    ("127.0.0.1:6379", "has no scheme"),
    ("redis://:pw@host:6379/zero", "the database is a number"),
    ("redis://host:6379/0?db=x", "the database is a number"),
    ("redis+cluster://host:7000/2", "only database 0"),
    ("redis+sentinel://host:26379", "names no service"),
    ("redis:///0", "names no host"),
    ("redis://host:70000/0", "cannot be read"),
    ("redis+sentinel://:pw@s1:26379,:26380/mymaster", "names no host"),
    ("redis+sentinel://s1:26379,s2:70000/mymaster", "cannot be read"),
])
def test_a_url_that_names_no_store_is_refused_in_words(url: str, words: str) -> None:
    with pytest.raises(StoreMisconfigured) as raised:
        store_from_url(url)
    assert words in str(raised.value)
    assert masked(url) in str(raised.value)
    assert ":pw@" not in str(raised.value)


def test_a_sentinel_url_may_list_every_sentinel() -> None:
    url = "redis+sentinel://:pw@s1:26379,s2:26380,s3:26381/mymaster"
    assert check_url(url) == url


def test_a_redis_store_refuses_a_memory_url() -> None:
    with pytest.raises(StoreMisconfigured, match="not a Redis URL"):
        RedisStore.from_url("memory://")


@pytest.mark.parametrize(("fields", "words"), [
    ({"socket_timout": 1}, "'socket_timout' (did you mean 'socket_timeout'?)"),
    ({"lingr": 1.0}, "'lingr' (did you mean 'linger'?)"),
    ({"client_options": {"retry_on_timeout_": True}}, "'retry_on_timeout_' (did you mean 'retry_on_timeout'?)"),
])
def test_an_option_no_client_takes_is_refused_at_construction(fields: dict[str, object], words: str) -> None:
    # redis-py itself would refuse it only when opening its first connection: inside a request.
    with pytest.raises(StoreMisconfigured) as raised:
        RedisStore.from_url("redis://127.0.0.1:1/0", **fields)
    assert words in str(raised.value)


def test_the_options_object_may_be_passed_by_name_or_position() -> None:
    by_name = RedisStore.from_url("redis://127.0.0.1:1/0", options=RedisOptions(prefix="named"))
    by_position = RedisStore.from_url("redis://127.0.0.1:1/0", RedisOptions(prefix="placed"), linger=0.5)
    assert (by_name.prefix, by_position.prefix, by_position.options.linger) == ("named", "placed", 0.5)
    assert by_name.options.client_options == {}


def test_cluster_client_options_are_those_of_the_cluster_client() -> None:
    store = RedisStore.from_url("redis+cluster://127.0.0.1:1", read_from_replicas=False)
    assert store.options.client_options == {"read_from_replicas": False}
    with pytest.raises(StoreMisconfigured, match="'read_from_replicas'"):
        RedisStore.from_url("redis://127.0.0.1:1/0", read_from_replicas=False)


def test_masking_hides_the_password_in_the_userinfo_and_the_query() -> None:
    assert masked("redis://user:pw@host:6379/0?password=pw2&db=1") == "redis://user:***@host:6379/0?password=***&db=1"
    assert masked("rediss://host:6379/0") == "rediss://host:6379/0"


# -- at startup ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("auth", "db", "cause"), [
    (":wrong@", "0", "invalid username-password pair"),
    ("", "0", "authenticat"),  # no password given
    (f":{PASSWORD}@", "99", "DB index is out of range"),
])
def test_an_asgi_app_does_not_start_on_a_store_that_refuses_it(port: int, auth: str, db: str, cause: str) -> None:
    url = f"redis://{auth}127.0.0.1:{port}/{db}"
    store = RedisStore.from_url(url)
    try:
        with pytest.raises(BaseException) as raised, TestClient(asgi_app(store)):
            pass
        said = str(raised.value)
        assert masked(url) in said and cause.lower() in said.lower()
        assert PASSWORD not in said and "wrong" not in said
    finally:
        store.close()


def test_an_asgi_app_starts_on_an_unreachable_store_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    store = RedisStore.from_url(url, socket_connect_timeout=0.5)
    try:
        with caplog.at_level(logging.ERROR, logger="identity_middleware"), TestClient(asgi_app(store)) as client:
            said = [r.getMessage() for r in caplog.records if "at startup" in r.getMessage()]
            assert len(said) == 1 and masked(url) in said[0] and "Error 111 connecting" in said[0]
            assert PASSWORD not in said[0]
            assert client.post("/whoami", json=BODY).json() == {"identity": None}  # the open policy
    finally:
        store.close()


def test_a_wsgi_app_is_not_built_on_a_store_that_refuses_it(port: int) -> None:
    url = f"redis://:wrong@127.0.0.1:{port}/0"
    store = RedisStore.from_url(url)
    try:
        with pytest.raises(StoreMisconfigured) as raised:
            IdentityWSGIMiddleware(Flask(__name__).wsgi_app, store=store)
        assert masked(url) in str(raised.value) and "password" in str(raised.value)
    finally:
        store.close()


def test_a_good_store_passes_the_startup_check(port: int) -> None:
    store = RedisStore.from_url(f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
    try:
        store.check_ready()
        with TestClient(asgi_app(store)) as client:
            assert client.post("/whoami", json=BODY).json() == {"identity": "u"}
    finally:
        store.close()


# -- at run time: the outage policy, never a 500 --------------------------------------------------------
@pytest.mark.parametrize(("policy", "status"), [("open", 200), ("closed", 503)])
def test_a_password_changed_under_a_running_asgi_app_meets_the_outage_policy(
    port: int, policy: str, status: int
) -> None:
    store = RedisStore.from_url(f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
    try:
        with TestClient(asgi_app(store, policy)) as client:
            assert client.post("/whoami", json=BODY).json() == {"identity": "u"}
            redis.Redis(port=port, password=PASSWORD).config_set("requirepass", "rotated")
            redis.Redis(port=port, password="rotated").client_kill_filter(_type="normal", skipme=True)
            responses = [client.post("/whoami", json=BODY) for _ in range(3)]
        assert [r.status_code for r in responses] == [status] * 3
        if policy == "open":
            assert all(r.json() == {"identity": None} for r in responses)
    finally:
        store.close()


@pytest.mark.parametrize("multiplex", [True, False])
def test_a_database_that_does_not_exist_is_an_outage_to_a_request(port: int, multiplex: bool) -> None:
    store = RedisStore.from_url(f"redis://:{PASSWORD}@127.0.0.1:{port}/99", multiplex=multiplex)
    try:
        with pytest.raises(StoreUnavailable):
            store.admit(AdmissionRequest("u"))
        client = TestClient(asgi_app(store, "closed"))  # no lifespan: the first requests meet it
        assert client.post("/whoami", json=BODY).status_code == 503
    finally:
        store.close()


def test_a_wsgi_request_on_a_refused_password_meets_the_outage_policy(port: int) -> None:
    store = RedisStore.from_url(f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
    flask = Flask(__name__)

    @flask.post("/whoami")
    def flask_whoami() -> dict[str, str | None]:
        identity = current_identity()
        return {"identity": identity.external_id if identity else None}

    try:
        flask.wsgi_app = IdentityWSGIMiddleware(flask.wsgi_app, store=store)  # type: ignore[method-assign]
        client = flask.test_client()
        assert client.post("/whoami", json=BODY).json == {"identity": "u"}
        redis.Redis(port=port, password=PASSWORD).config_set("requirepass", "rotated")
        redis.Redis(port=port, password="rotated").client_kill_filter(_type="normal", skipme=True)
        responses = [client.post("/whoami", json=BODY) for _ in range(3)]
        assert [(r.status_code, r.json) for r in responses] == [(200, {"identity": None})] * 3
    finally:
        with contextlib.suppress(StoreUnavailable):  # the first request's usage cannot be written
            store.close()
