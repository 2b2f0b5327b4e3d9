"""A sync admission counts this process's buffered usage of its identity itself, without writing it
first, on a real Redis and the real Cluster: exactly once, whether or not the writer thread lands it
meanwhile; usage it cannot count that way (another time window, reservations to release) is
written first."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from identity_middleware.core.admission import AdmissionRequest, Settlement, Usage
from identity_middleware.core.budgets import BudgetSpec
from identity_middleware.core.models import IdentityInput
from identity_middleware.core.periods import UTC
from identity_middleware.stores import RedisStore, Store
from identity_middleware.stores.redis import unwritten as buffered
from identity_middleware.stores.redis.plans import Plans
from identity_middleware.stores.redis.runner import Runner
from identity_middleware.stores.redis.transport import RedisPy
from test_redis_lease import command_calls, script_calls

MakeStore = Callable[..., Store]
KINDS = ["redis", "redis-cluster"]
CENT = 10_000_000  # nano-USD
LONG = 600.0  # a linger no test waits out: the writer thread never writes on its own here


def store_with(make_store: MakeStore, kind: str, external_id: str, **budget: Any) -> tuple[RedisStore, str]:
    """A store whose writer lingers, with ``external_id`` on the budget given, and its ULID."""
    store = make_store(kind, linger=LONG)
    assert isinstance(store, RedisStore)
    identity = store.create(IdentityInput(id=external_id))
    store.create_budget(BudgetSpec(scope="identity", target=external_id, **budget))
    assert store.admit(AdmissionRequest(external_id)).allowed  # its record is cached from here on
    return store, identity.id


def url_of(request: pytest.FixtureRequest, kind: str) -> str:
    return str(request.getfixturevalue("redis_url" if kind == "redis" else "redis_cluster_url"))


@pytest.mark.parametrize("kind", KINDS)
def test_buffered_usage_is_counted_by_the_admission_without_a_write(make_store: MakeStore, kind: str,
                                                                    request: pytest.FixtureRequest) -> None:
    store, ulid = store_with(make_store, kind, "uw-1", period="daily", amount="0.01")
    url = url_of(request, kind)
    for _ in range(4):
        store.settle(Settlement(ulid, Usage(cost=CENT // 4)))  # buffered: the writer lingers
    before = script_calls(url)
    blocked = store.admit(AdmissionRequest("uw-1")).blocked
    # The admission alone, nothing written first: its total blocks and the recorded spend alone
    # would not, so the script asks for the charges' markers once ({4}) and decides with them.
    assert script_calls(url) == before + 2
    assert blocked is not None and blocked.spent == Decimal("0.01")  # the 429 counts it too
    observer = make_store(kind, prefix=store.prefix)
    (status,) = observer.budget_status("uw-1")
    assert status.spent == 0  # still only in this process's buffer
    store.flush()
    (status,) = observer.budget_status("uw-1")
    assert status.spent == Decimal("0.01")


@pytest.mark.parametrize("kind", KINDS)
def test_usage_applied_while_the_admission_was_on_its_way_is_counted_once(make_store: MakeStore,
                                                                          kind: str) -> None:
    """The race driven step by step, with the store's plans over redis-py: the admission was built
    with the open charge's usage, and the charge lands before the admission reaches Redis."""
    store, ulid = store_with(make_store, kind, "uw-2", period="daily", amount="0.01")
    plans = Plans(store.prefix, UTC, store.reservation_ttl)
    runner = Runner(lambda: RedisPy(store.client), owned=False)
    assert runner.run(plans.requests.admit(AdmissionRequest("uw-2"))).allowed  # the record cached here too
    now = datetime.now(UTC)
    (charge,) = plans.requests.seal([Settlement(ulid, Usage(cost=6 * CENT // 10), None, now)])  # $0.006
    unwritten = buffered.charge(charge.usage.cost, 0, charge.id)  # what the admission counts itself
    assert runner.run(plans.requests.settle([charge])) == 1  # ... and the charge lands first
    asked = AdmissionRequest("uw-2", estimate=3 * CENT // 10, now=now)  # $0.006 + $0.003 fit in $0.01
    assert runner.run(plans.requests.admit(asked, unwritten=unwritten)).allowed  # twice, $0.015 would not
    counted = AdmissionRequest("uw-2", estimate=5 * CENT // 10, now=now)  # $0.006 + $0.003 held + $0.005
    assert runner.run(plans.requests.admit(counted, unwritten=unwritten)).blocked is not None


@pytest.mark.parametrize("kind", KINDS)
def test_buffered_usage_far_from_the_limit_costs_one_call_and_no_marker(make_store: MakeStore, kind: str,
                                                                       request: pytest.FixtureRequest) -> None:
    store, ulid = store_with(make_store, kind, "uw-7", period="daily", amount="1")
    url = url_of(request, kind)
    store.settle(Settlement(ulid, Usage(cost=CENT)))  # buffered: $0.01 of $1
    store.settle(Settlement(ulid, Usage(cost=CENT)))
    before, exists = script_calls(url), command_calls(url, "exists")
    assert store.admit(AdmissionRequest("uw-7", estimate=97 * CENT)).allowed  # $0.02 + $0.97 fits in $1
    assert script_calls(url) == before + 1 and command_calls(url, "exists") == exists  # no marker asked
    before = script_calls(url)
    blocked = store.admit(AdmissionRequest("uw-7", estimate=2 * CENT)).blocked  # $0.02 + $0.97 held + $0.02
    assert blocked is not None and blocked.spent == Decimal("0.02")  # counted, exactly once
    assert script_calls(url) == before + 2  # near the limit: asked again with the markers


@pytest.mark.parametrize("kind", KINDS)
def test_each_charge_counted_unless_its_own_marker_says_it_landed(make_store: MakeStore, kind: str) -> None:
    """An admission counting two charges (one being written, one open): the one that landed
    meanwhile is in the spend already, the other is counted by the admission, neither twice."""
    store, ulid = store_with(make_store, kind, "uw-6", period="daily", amount="0.01")
    plans = Plans(store.prefix, UTC, store.reservation_ttl)
    runner = Runner(lambda: RedisPy(store.client), owned=False)
    assert runner.run(plans.requests.admit(AdmissionRequest("uw-6"))).allowed
    now = datetime.now(UTC)
    (landed,) = plans.requests.seal([Settlement(ulid, Usage(cost=4 * CENT // 10), None, now)])  # $0.004
    (open_,) = plans.requests.seal([Settlement(ulid, Usage(cost=3 * CENT // 10), None, now)])  # $0.003
    assert runner.run(plans.requests.settle([landed])) == 1
    landed_part = buffered.charge(landed.usage.cost, 0, landed.id)
    both = f"{landed_part} {buffered.charge(open_.usage.cost, 0, open_.id)}"
    fits = AdmissionRequest("uw-6", estimate=29 * CENT // 100, now=now)  # $0.004 + $0.003 + $0.0029 < $0.01
    assert runner.run(plans.requests.admit(fits, unwritten=both)).allowed
    # $0.004 spent + $0.0029 held + $0.003 counted: $0.0099; $0.0002 more would pass the limit
    last = AdmissionRequest("uw-6", estimate=2 * CENT // 100, now=now)
    blocked = runner.run(plans.requests.admit(last, unwritten=both)).blocked
    assert blocked is not None and blocked.spent == Decimal("0.007")
    assert runner.run(plans.requests.admit(last, unwritten=landed_part)).allowed  # the open one left out: fits


@pytest.mark.parametrize("kind", KINDS)
def test_buffered_tokens_count_against_a_token_limit(make_store: MakeStore, kind: str) -> None:
    store, ulid = store_with(make_store, kind, "uw-3", period="daily", token_limit=100)
    store.settle(Settlement(ulid, Usage(cost=1, input_tokens=60, output_tokens=39)))
    assert store.admit(AdmissionRequest("uw-3")).allowed  # 99 tokens: under the limit
    store.settle(Settlement(ulid, Usage(cost=1, input_tokens=1)))
    blocked = store.admit(AdmissionRequest("uw-3")).blocked  # 100: the limit blocks (>=)
    assert blocked is not None and blocked.tokens == 100


@pytest.mark.parametrize("kind", KINDS)
def test_usage_of_an_earlier_time_window_is_written_first(make_store: MakeStore, kind: str,
                                                          request: pytest.FixtureRequest) -> None:
    store, ulid = store_with(make_store, kind, "uw-4", period="one_time", amount="0.01")
    yesterday = datetime.now(UTC) - timedelta(days=1)  # another window, whatever the date
    store.settle(Settlement(ulid, Usage(cost=CENT), None, yesterday))
    url = url_of(request, kind)
    before = script_calls(url)
    blocked = store.admit(AdmissionRequest("uw-4")).blocked
    assert blocked is not None and blocked.spent == Decimal("0.01")  # the one-time budget has all of it
    assert script_calls(url) == before + 2  # the charge written, then the admission


@pytest.mark.parametrize("kind", KINDS)
def test_usage_that_releases_a_reservation_is_written_first(make_store: MakeStore, kind: str) -> None:
    store, _ = store_with(make_store, kind, "uw-5", period="daily", amount="0.01")
    first = store.admit(AdmissionRequest("uw-5", estimate=4 * CENT // 10))  # holds $0.004
    assert first.identity is not None and first.reservation is not None
    store.settle(Settlement(first.identity.id, Usage(cost=4 * CENT // 10), first.reservation))
    # $0.004 spent and $0.004 more fit in $0.01; the settled cost counted beside the reservation it
    # releases (still held in Redis until the charge is written) would not: $0.012.
    second = store.admit(AdmissionRequest("uw-5", estimate=4 * CENT // 10))
    assert second.allowed
    (status,) = store.budget_status("uw-5")
    assert status.spent == Decimal("0.004") and status.reserved == Decimal("0.004")


def test_linger_is_checked(make_store: MakeStore) -> None:
    for linger in (-0.001, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            make_store("redis", linger=linger)
