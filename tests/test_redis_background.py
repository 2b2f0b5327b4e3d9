"""The sync settle path: ``settle`` returns at once and a writer thread lands it; nothing is lost or doubled."""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal

import pytest

from identity_middleware.core.admission import AdmissionRequest, Settlement, Usage
from identity_middleware.core.models import Budget, IdentityInput
from identity_middleware.stores import RedisStore, Store
from waiting import wait_until

MakeStore = Callable[..., Store]


def _redis(make_store: MakeStore, **options: object) -> RedisStore:
    store = make_store("redis", **options)
    assert isinstance(store, RedisStore)
    return store


def writer_threads() -> list[threading.Thread]:
    """The Redis stores' writer threads alive in this process (by the name they are given)."""
    return [thread for thread in threading.enumerate() if thread.name == "identity-middleware-redis-writer"]


def test_a_sync_settle_lands_without_a_read_that_flushes(make_store: MakeStore) -> None:
    app = _redis(make_store)
    other = _redis(make_store, prefix=app.prefix)  # another app instance: it never sees app's buffer
    identity = app.create(IdentityInput(id="bg-1"))
    app.settle(Settlement(identity.id, Usage(cost=1_000, input_tokens=3, output_tokens=4)))
    wait_until(lambda: other.metrics("bg-1").total_requests == 1, "the settlement in Redis")
    metrics = other.metrics("bg-1")
    assert metrics.total_cost == Decimal("0.000001") and metrics.total_tokens == 7


def test_without_the_writer_thread_a_sync_settle_is_written_before_it_returns(make_store: MakeStore) -> None:
    app = _redis(make_store, writer_thread=False)
    other = _redis(make_store, prefix=app.prefix)
    identity = app.create(IdentityInput(id="bg-off"))
    before = writer_threads()
    for _ in range(3):
        app.settle(Settlement(identity.id, Usage(cost=1_000, input_tokens=3, output_tokens=4)))
        assert app.buffered == 0  # written by this thread, not held for another
    metrics = other.metrics("bg-off")  # another instance reads it at once: nothing left to land later
    assert metrics.total_requests == 3 and metrics.total_cost == Decimal("0.000003")
    assert writer_threads() == before  # none started


def test_many_threads_settling_are_each_counted_once(make_store: MakeStore) -> None:
    app = _redis(make_store)
    other = _redis(make_store, prefix=app.prefix)
    identity = app.create(IdentityInput(id="bg-2"))

    def settle_many() -> None:
        for _ in range(200):
            app.settle(Settlement(identity.id, Usage(cost=7)))

    threads = [threading.Thread(target=settle_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_until(lambda: other.metrics("bg-2").total_requests == 800, "the 800 settlements in Redis")
    app.close()  # nothing left to arrive later: close() waits for whatever is still being written
    metrics = other.metrics("bg-2")
    assert metrics.total_requests == 800 and metrics.total_cost == Decimal("0.0000056")


def test_a_sync_admission_sees_the_usage_settled_before_it(make_store: MakeStore) -> None:
    app = _redis(make_store)
    identity = app.create(IdentityInput(id="bg-3"))
    app.set_budget("bg-3", Budget(period="daily", amount=Decimal("0.01")))
    request = AdmissionRequest("bg-3", create_missing=False)
    for _ in range(20):  # each settle is followed at once by the next admission, as a sync worker does
        assert app.admit(request).blocked is None
        app.settle(Settlement(identity.id, Usage(cost=500_000)))  # $0.0005: 20 of them reach $0.01
    blocked = app.admit(request).blocked
    assert blocked is not None and blocked.spent == Decimal("0.01")


def test_close_writes_what_is_buffered(make_store: MakeStore) -> None:
    app = _redis(make_store)
    other = _redis(make_store, prefix=app.prefix)
    identity = app.create(IdentityInput(id="bg-4"))
    for _ in range(50):
        app.settle(Settlement(identity.id, Usage(cost=1)))
    app.close()
    assert other.metrics("bg-4").total_requests == 50  # at once: close() waited for the writes


def test_the_writer_thread_ends_when_idle_and_comes_back(make_store: MakeStore,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from identity_middleware.stores.redis import background

    app = _redis(make_store)
    other = _redis(make_store, prefix=app.prefix)
    identity = app.create(IdentityInput(id="bg-5"))
    monkeypatch.setattr(background, "IDLE", 0.05)
    before = set(writer_threads())
    app.settle(Settlement(identity.id, Usage(cost=1)))
    started = set(writer_threads()) - before
    assert started  # this settle started the store's writer thread
    wait_until(lambda: other.metrics("bg-5").total_requests == 1, "the first settlement in Redis")
    wait_until(lambda: not any(thread.is_alive() for thread in started), "the idle writer thread ended")
    app.settle(Settlement(identity.id, Usage(cost=1)))  # a new thread starts
    wait_until(lambda: other.metrics("bg-5").total_requests == 2, "the second settlement in Redis")
