"""The local half of leasing (stores/redis/lease.py), with no Redis: the lease arithmetic and its calls."""

from __future__ import annotations

import os

import pytest

from fake_clock import Clock
from identity_middleware.stores.redis import Lease
from identity_middleware.stores.redis.lease import Leases, covers


@pytest.fixture
def clock() -> Clock:
    return Clock()


def granted(leases: Leases, amount: int, tag: str = "t") -> str:
    ask = leases.ask(tag)
    assert ask is not None and ask.create
    leases.answered(ask, True, amount)
    return ask.lease_id


def test_covers_blocks_at_the_limit_and_an_estimate_must_fit() -> None:
    assert covers(100, 99, 0)
    assert not covers(100, 100, 0)  # >=: used exactly at the lease blocks
    assert covers(100, 90, 10)
    assert not covers(100, 90, 11)
    assert not covers(0, 0, 0)


def test_lease_options_are_checked() -> None:
    with pytest.raises(ValueError):
        Lease(fraction=0)
    with pytest.raises(ValueError):
        Lease(fraction=1.5)
    with pytest.raises(ValueError):
        Lease(ttl=0)
    assert Lease(ttl=2.5).ttl_ms == 2500


def test_no_lease_admits_nothing_until_redis_grants_one(clock: Clock) -> None:
    leases = Leases(Lease(ttl=10), clock)
    assert leases.take("t", 0) is None
    lease_id = granted(leases, 100)
    held = leases.take("t", 60)
    assert held is not None and held.id == lease_id and held.inflight == 60
    assert leases.take("t", 41) is None  # 60 + 41 > 100
    assert leases.take("t", 40) is not None
    assert leases.take("t", 0) is None  # 100 in flight: >= blocks


def test_a_settled_request_releases_its_estimate_and_takes_its_cost(clock: Clock) -> None:
    leases = Leases(Lease(ttl=10), clock)
    lease_id = granted(leases, 100)
    assert leases.take("t", 50) is not None
    leases.settled(lease_id, 50, 30)
    held = leases.held("t")
    assert held is not None and (held.amount, held.inflight) == (70, 0)


def test_what_redis_did_not_cover_is_given_back_and_a_gone_lease_is_dropped(clock: Clock) -> None:
    leases = Leases(Lease(ttl=10), clock)
    lease_id = granted(leases, 100)
    leases.settled(lease_id, 0, 130)  # cost beyond the lease (no estimate): -30 here, 0 in Redis
    leases.covered(lease_id, 130, 100)
    held = leases.held("t")
    assert held is not None and held.amount == 0
    leases.covered(lease_id, 0, -1)
    assert leases.held("t") is None


def test_admission_stops_with_half_the_ttl_left_and_the_lease_is_dropped_at_its_end(clock: Clock) -> None:
    leases = Leases(Lease(ttl=10), clock)
    granted(leases, 100)
    clock.now += 4.9
    assert leases.take("t", 1) is not None
    clock.now += 0.1  # 5 s of 10 left: a request admitted now would be covered for less than ttl/2
    assert leases.take("t", 1) is None
    clock.now += 5
    ask = leases.ask("t")  # expired: a new lease is taken, under a new id
    assert ask is not None and ask.create and leases.held("t") is None


def test_one_lease_call_at_a_time_per_identity_until_it_is_stale(clock: Clock) -> None:
    leases = Leases(Lease(ttl=8), clock)
    first = leases.ask("t")
    assert first is not None
    assert leases.ask("t") is None
    assert leases.ask("other") is not None
    clock.now += 2  # ttl/4: the first call is taken as lost
    second = leases.ask("t")
    assert second is not None
    leases.answered(first, True, 100)  # a stale answer is ignored
    assert leases.held("t") is None
    leases.failed(second)
    assert leases.ask("t") is not None


def test_growing_a_held_lease_gives_back_first_what_requests_in_flight_do_not_use(clock: Clock) -> None:
    leases = Leases(Lease(ttl=10), clock)
    lease_id = granted(leases, 100)
    assert leases.take("t", 70) is not None
    ask = leases.ask("t")
    assert ask is not None and not ask.create and ask.lease_id == lease_id and ask.give == 30
    held = leases.held("t")
    assert held is not None and held.amount == 70  # taken off here before Redis hears of it
    leases.answered(ask, True, 25)
    assert held.amount == 95 and held.grant == 25


def test_a_settle_call_renews_only_a_used_lease_that_is_low_or_ageing(clock: Clock) -> None:
    leases = Leases(Lease(ttl=8), clock)
    granted(leases, 100)
    assert leases.ask("t", for_settle=True) is None  # unused: left to expire
    assert leases.take("t", 10) is not None
    assert leases.ask("t", for_settle=True) is None  # used, but neither low nor ageing
    clock.now += 2  # a quarter of the ttl
    ask = leases.ask("t", for_settle=True)
    assert ask is not None and not ask.grow and ask.give == 0  # extended only
    leases.answered(ask, True, 0)
    held = leases.held("t")
    assert held is not None and held.deadline == clock.now + 8
    assert leases.take("t", 45) is not None  # 55 of 100 in flight: below half the last grant
    ask = leases.ask("t", for_settle=True)
    assert ask is not None and ask.grow


def test_a_forked_child_starts_with_no_lease(clock: Clock) -> None:
    leases = Leases(Lease(ttl=10), clock)
    granted(leases, 100)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's lease must not admit here too
        os.write(write, b"1" if leases.take("t", 0) is None and leases.held("t") is None else b"0")
        os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.waitpid(pid, 0)
    os.close(read)
    assert leases.take("t", 0) is not None  # the parent keeps it
