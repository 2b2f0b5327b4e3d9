"""Shared fixtures: private Redis servers (standalone and Cluster) and fresh stores of every kind."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import settings

from identity_middleware.context import Meter, bind, unbind
from identity_middleware.core.models import Identity
from identity_middleware.stores import MemoryStore, Store
from redis_servers import redis_cluster, redis_server

STORE_KINDS = ("memory", "redis", "redis-cluster")
# Every configuration the store contract runs on: Redis through redis-py alone, with the accelerated
# transports (the default where the URL allows them), with leasing, and the Cluster (redis-py).
CONTRACT_KINDS = ("memory", "redis", "redis-plain", "redis-leased", "redis-cluster")

MakeStore = Callable[..., Store]

# Property tests judge what is computed, never how fast: Hypothesis's per-example deadline (200 ms)
# fails them on a loaded 2-core host for no fault of the code.
settings.register_profile("no-deadline", deadline=None)
settings.load_profile("no-deadline")


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``redis://127.0.0.1:PORT/0`` of a private redis-server (or ``$REDIS_URL``)."""
    if url := os.environ.get("REDIS_URL"):
        yield url
        return
    with redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """``redis+cluster://127.0.0.1:PORT`` of a private 3-master Redis Cluster (or ``$REDIS_CLUSTER_URL``)."""
    if url := os.environ.get("REDIS_CLUSTER_URL"):
        yield url
        return
    with redis_cluster() as url:
        yield url


@pytest.fixture
def make_store(request: pytest.FixtureRequest) -> Iterator[MakeStore]:
    """``make_store(kind, **options)``: a fresh store; Redis ones get a key prefix unique to the test.

    Every store made is closed when the test ends. Pass ``prefix=`` to make two store objects
    share data (e.g. two "app instances" on one Redis).
    """
    made: list[Store] = []

    def make(kind: str = "memory", **options: Any) -> Store:
        if kind == "memory":
            store: Store = MemoryStore(**options)
        elif kind in ("redis", "redis-plain", "redis-leased", "redis-cluster"):
            from identity_middleware.stores import Lease, RedisStore

            url = request.getfixturevalue("redis_cluster_url" if kind == "redis-cluster" else "redis_url")
            if kind == "redis-plain":
                options.setdefault("multiplex", False)
            if kind == "redis-leased":
                options.setdefault("lease", Lease())
            options.setdefault("prefix", f"t{uuid.uuid4().hex[:12]}")
            # The suite shares a 2-core machine with its own Redis Cluster: a cold connection can take
            # longer than the production bound. Tests of that bound (test_redis_stall.py) set their own.
            options.setdefault("request_timeout", 5.0)
            store = RedisStore.from_url(url, **options)
        else:
            raise ValueError(f"unknown store kind {kind!r}; one of {STORE_KINDS}")
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(store_kind: str, make_store: MakeStore) -> Store:
    """A fresh, empty store of each kind (memory, redis, redis-cluster)."""
    return make_store(store_kind)


@pytest.fixture
def meter() -> Iterator[Meter]:
    """A tracked request's meter, bound as the current one (identity ``user_1``)."""
    now = datetime(2026, 11, 22, tzinfo=UTC)
    tracked = Meter(Identity(_id="01JD000000000000000000TEST", external_id="user_1", created=now, updated=now))
    token = bind(tracked)
    try:
        yield tracked
    finally:
        unbind(token)
