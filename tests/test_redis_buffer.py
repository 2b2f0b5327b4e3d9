"""The settlement buffer sums settlements into charges as they arrive: what it holds, what it sends, what it drops."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import threading
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection

import pytest

from identity_middleware.core.admission import ModelUsage, Reservation, Settlement, Usage
from identity_middleware.core.ids import new_ulid
from identity_middleware.stores.redis.buffer import SettlementBuffer
from identity_middleware.stores.redis.keys import identity_tag
from identity_middleware.stores.redis.plans import Charge, Plans
from identity_middleware.stores.redis.plans.charges import charge_id
from identity_middleware.stores.redis.steps import Eval

NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
FAR = datetime(9999, 12, 30, tzinfo=UTC)


@pytest.fixture
def plans() -> Plans:
    return Plans("t", UTC, 60.0, 3600)


def usage(cost: int, model: str = "gpt-4o", *, error: bool = False) -> Usage:
    return Usage(cost=cost, input_tokens=2, output_tokens=1, models={model: ModelUsage(1, cost, 2, 1)}, error=error)


def held(identity_id: str, reservation_id: str, amount: int) -> Reservation:
    return Reservation(reservation_id, identity_id, amount, FAR)


def test_a_buffer_holds_one_charge_per_identity_and_window_however_many_requests(plans: Plans) -> None:
    identity = new_ulid()
    buffer = SettlementBuffer(10, plans.records.window_of)
    for index in range(1000):
        buffer.add(Settlement(identity, usage(3, error=index % 10 == 0), None, NOW))
    buffer.add(Settlement(identity, usage(5, "claude-sonnet-4"), None, NOW + timedelta(days=1)))  # another day
    (today, tomorrow) = buffer.charges()
    assert len(buffer) == 1001  # settlements, though the limit of 10 bounds the charges kept
    assert (today.count, today.errors, today.usage.cost, today.usage.input_tokens) == (1000, 100, 3000, 2000)
    assert today.usage.models == {"gpt-4o": ModelUsage(1000, 3000, 2000, 1000)}
    assert (tomorrow.count, tomorrow.usage.cost, list(tomorrow.usage.models)) == (1, 5, ["claude-sonnet-4"])
    assert today.now == NOW and tomorrow.now == NOW + timedelta(days=1)
    assert buffer.holds(identity)  # open until a flush takes it
    # Its id from the start: a sync admission that counts it looks for its marker.
    assert today.id and tomorrow.id and today.id != tomorrow.id


def test_a_flush_seals_what_it_takes_and_later_settlements_open_a_new_charge(plans: Plans) -> None:
    identity = new_ulid()
    buffer = SettlementBuffer(100, plans.records.window_of)
    buffer.add(Settlement(identity, usage(1), None, NOW))
    sent: list[list[Charge]] = []
    buffer.drain(lambda batch: sent.append(list(batch)))
    buffer.add(Settlement(identity, usage(2), None, NOW))
    buffer.drain(lambda batch: sent.append(list(batch)))
    (first,), (second,) = sent
    assert first.id[:16] == second.id[:16] and first.id != second.id  # this process's part, then a serial
    assert (first.usage.cost, second.usage.cost) == (1, 2) and len(buffer) == 0 and not buffer.holds(identity)


def test_the_settle_call_carries_the_sums_and_every_reservation_released(plans: Plans) -> None:
    identity = new_ulid()
    buffer = SettlementBuffer(100, plans.records.window_of)
    buffer.add(Settlement(identity, usage(3), held(identity, "r1", 5), NOW))
    buffer.add(Settlement(identity, usage(4, error=True), held(identity, "r2", 7), NOW))
    buffer.add(Settlement(identity, Usage(cost=2, unpriced=1), None, NOW))
    (charge,) = buffer.charges()
    tag = identity_tag("a")
    plan = plans.requests.settle([charge])
    next(plan)  # the identity's hash tag looked up
    call = plan.send([[f"{identity}:{tag}"]])  # one charge: a plain script call, not a batch of one
    with pytest.raises(StopIteration) as answered:
        plan.send(1)
    charged = answered.value.value
    assert isinstance(call, Eval)
    assert call.args[:6] == [identity, 9, 4, 2, 3, 1]  # cost, input and output tokens, requests, errors
    assert call.args[7] == "5:r1 7:r2"
    assert call.args[11:] == ["u", 1, "m:gpt-4o", 2, "mc:gpt-4o", 7, "mi:gpt-4o", 4, "mo:gpt-4o", 2]
    assert charged == 3


def test_leased_costs_are_summed_per_lease_and_release_no_reservation(plans: Plans) -> None:
    identity = new_ulid()
    buffer = SettlementBuffer(100, plans.records.window_of)
    for cost, lease in ((3, "L1"), (4, "L1"), (5, "L2")):
        buffer.add(Settlement(identity, usage(cost), Reservation("", identity, 0, FAR, lease=lease), NOW))
    (charge,) = buffer.charges()
    assert charge.leased == {"L1": 7, "L2": 5} and charge.held == [] and charge.usage.cost == 12


def test_past_the_limit_the_oldest_charges_are_dropped_and_logged(plans: Plans,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    first, second, third = new_ulid(), new_ulid(), new_ulid()
    buffer = SettlementBuffer(3, plans.records.window_of)  # charges plus the reservations they release
    buffer.add(Settlement(first, usage(5), held(first, "r1", 5), NOW))  # 2
    buffer.add(Settlement(second, usage(1), None, NOW))  # 3
    for _ in range(50):
        buffer.add(Settlement(second, usage(1), None, NOW))  # summed: still 3
    assert [charge.identity_id for charge in buffer.charges()] == [first, second]
    with caplog.at_level(logging.ERROR, logger="identity_middleware.stores.redis"):
        buffer.add(Settlement(third, usage(2), None, NOW))  # 4: the oldest charge goes
    assert [(charge.identity_id, charge.count) for charge in buffer.charges()] == [(second, 51), (third, 1)]
    assert len(buffer) == 52
    assert f"dropped the usage of 1 requests of {first} (cost 5 nano-USD)" in caplog.text


def _child_ids(pipe: Connection) -> None:
    pipe.send([charge_id(), charge_id()])


def test_a_forked_worker_makes_charge_ids_of_its_own() -> None:
    mine = charge_id()  # the parent's serial is past where a child would start if it copied it
    parent, child = multiprocessing.get_context("fork").Pipe()
    worker = multiprocessing.get_context("fork").Process(target=_child_ids, args=(child,))
    worker.start()
    theirs = parent.recv()
    worker.join(10)
    assert worker.exitcode == 0 and len(set(theirs)) == 2
    assert all(len(each) > 16 and each[:16] != mine[:16] for each in theirs)  # not the parent's 96 bits
    assert mine not in theirs and charge_id()[:16] == mine[:16]


@pytest.mark.parametrize("wait", ["thread", "loop"])
def test_a_read_waits_for_the_batch_another_flush_is_writing(plans: Plans, wait: str) -> None:
    identity = new_ulid()
    buffer = SettlementBuffer(100, plans.records.window_of)
    buffer.add(Settlement(identity, usage(1), None, NOW))
    writing, release, waited = threading.Event(), threading.Event(), threading.Event()

    def slow_write(batch: list[Charge]) -> None:
        writing.set()
        assert release.wait(10)

    def read() -> None:
        buffer.wait_others() if wait == "thread" else asyncio.run(buffer.others_written())
        waited.set()

    writer = threading.Thread(target=buffer.drain, args=(slow_write,))
    writer.start()
    assert writing.wait(10)
    assert len(buffer) == 0 and buffer.busy and buffer.holds(identity)  # taken, not yet written
    reader = threading.Thread(target=read)
    reader.start()
    assert not waited.wait(0.2)  # still waiting while the write is not over
    release.set()
    writer.join(10)
    reader.join(10)
    assert waited.is_set() and not buffer.busy and not buffer.holds(identity)
    buffer.wait_others()  # nothing in flight: returns at once
