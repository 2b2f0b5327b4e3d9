"""The Redis plans without a server: each is driven by feeding it the replies Redis would give."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis.exceptions

from identity_middleware.core.admission import AdmissionRequest, Reservation, Settlement, Usage
from identity_middleware.core.errors import IdentityExists, IdentityNotFound, StoreUnavailable
from identity_middleware.core.ids import new_ulid
from identity_middleware.core.models import IdentityInput
from identity_middleware.core.periods import Period
from identity_middleware.stores.redis.buffer import SettlementBuffer
from identity_middleware.stores.redis.keys import identity_tag
from identity_middleware.stores.redis.plans import Charge, Plans
from identity_middleware.stores.redis.scripts import ADMIT, METRICS, SETTLE
from identity_middleware.stores.redis.steps import Batch, Call, Eval, Plan, Step

NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
ULID = new_ulid()
NANOS_PER_USD = 1_000_000_000


def drive(plan: Plan[Any], replies: Sequence[Any]) -> tuple[list[Step], Any]:
    """Send ``replies`` one per step (an exception is thrown in instead, a callable is given the
    step and answers it); the steps seen and the result."""
    steps: list[Step] = []
    try:
        step = next(plan)
        for reply in replies:
            steps.append(step)
            if callable(reply):
                reply = reply(step)
            step = plan.throw(reply) if isinstance(reply, BaseException) else plan.send(reply)
        steps.append(step)
    except StopIteration as stop:
        return steps, stop.value
    raise AssertionError(f"the plan wants more replies; its last step: {steps[-1]}")


def record(external_id: str = "user_1", ulid: str = ULID, **fields: str) -> list[str]:
    """A record hash as the scripts return it (a flat list)."""
    values = {"u": ulid, "x": external_id, "c": NOW.isoformat(), "t": NOW.isoformat(), "display_name": "null",
              "email": "null", "avatar_url": "null", "tags": "[]", "metadata": "{}", **fields}
    return [item for pair in values.items() for item in pair]


def daily(amount: str, spent: str = "0", reserved: str = "0") -> list[int | str]:
    """A budget row of a script reply (lib.lua): period index (1 = daily), amount, spent, reserved
    (nano-USD), tokens, token limit, requests in the last minute, requests per minute, live."""
    return [1, int(Decimal(amount) * NANOS_PER_USD), int(Decimal(spent) * NANOS_PER_USD),
            int(Decimal(reserved) * NANOS_PER_USD), 0, "", 0, "", 1]


@pytest.fixture
def plans() -> Plans:
    return Plans("t", UTC, reservation_ttl=30)


# -- admission -----------------------------------------------------------------------------------
def test_admitting_a_new_identity_reserves_the_estimate_and_lists_it(plans: Plans) -> None:
    (admit, listed), admission = drive(plans.requests.admit(AdmissionRequest("user_1", estimate=500, now=NOW)),
                                       [[1, 1, record(), [daily("1")], 0, 1], 1])
    assert isinstance(admit, Eval) and admit.script is ADMIT
    assert admit.keys[0] == f"t:{{{identity_tag('user_1')}}}:id" and len(admit.keys) == 19
    assert admit.keys[18] == f"t:{{{identity_tag('user_1')}}}:h:{NOW:%Y-%m-%dT%H}"  # this UTC hour's metrics
    mode, external_id, ulid, _, _, may_create, refused, estimate, reservation_id = admit.args[:9]
    assert (mode, external_id, may_create, refused, estimate) == ("admit", "user_1", 1, 0, 500)
    assert ulid and reservation_id  # a ULID for a record this process has not seen
    assert listed == Call("zadd", ("t:identities", {f"{ULID}:{identity_tag('user_1')}": 0}))
    assert admission.identity.id == ULID and admission.allowed
    assert admission.reservation == Reservation(str(reservation_id), ULID, 500, NOW + timedelta(seconds=30), ("daily",))


def test_an_unchanged_cached_record_is_not_sent_again(plans: Plans) -> None:
    _, first = drive(plans.requests.admit(AdmissionRequest("user_1", now=NOW)), [[1, 1, record(), [], 0, 0], 1])
    (again,), second = drive(plans.requests.admit(AdmissionRequest("user_1", now=NOW)), [[1, 0, 0, [], 0, 0]])
    assert isinstance(again, Eval)
    assert again.args[2] == "" and again.args[11] == f"{ULID} {NOW.isoformat()}"  # no ULID, the known version
    assert second.identity is first.identity and second.reservation is None


def test_a_cached_identity_deleted_elsewhere_is_recreated_with_a_new_ulid(plans: Plans) -> None:
    drive(plans.requests.admit(AdmissionRequest("user_1", now=NOW)), [[1, 1, record(), [], 0, 0], 1])
    other = new_ulid()
    (asked, again, _), admission = drive(plans.requests.admit(AdmissionRequest("user_1", now=NOW)),
                                         [[3], [1, 1, record(ulid=other), [], 0, 0], 1])
    assert isinstance(asked, Eval) and isinstance(again, Eval)
    assert asked.args[2] == "" and again.args[2] not in ("", ULID)
    assert admission.identity.id == other


def test_a_blocked_admission_names_the_budget_and_reserves_nothing(plans: Plans) -> None:
    (_, logged), admission = drive(plans.requests.admit(AdmissionRequest("user_1", estimate=500, now=NOW)),
                                   [[1, 0, record(), [daily("0.20", spent="0.20")], 1, 0], [1, "OK", 1]])
    assert isinstance(logged, Batch) and [step.method for step in logged.steps if isinstance(step, Call)] == [
        "lpush", "ltrim", "expire"]  # the plan logs its refusal (store.recent_refusals reads the log)
    assert admission.blocked is not None and admission.reservation is None
    assert admission.blocked.period is Period.DAILY and admission.blocked.spent == Decimal("0.20")
    assert admission.blocked.retry_after == 12 * 3600  # NOW is noon UTC: the day resets at midnight


def test_an_unknown_identity_is_not_created_when_creation_is_off(plans: Plans) -> None:
    (admit,), admission = drive(plans.requests.admit(AdmissionRequest("ghost", create_missing=False, now=NOW)), [[0]])
    assert isinstance(admit, Eval) and admit.args[5] == 0
    assert admission.identity is None


# -- settlement ----------------------------------------------------------------------------------
def test_settlements_are_summed_per_identity_in_one_batch(plans: Plans) -> None:
    other = new_ulid()
    reservation = Reservation("r1", ULID, 700, NOW + timedelta(seconds=30), ("daily",))
    gpt = Usage()
    gpt.add(100, 10, 1, "gpt", unpriced=False)
    settlements = [Settlement(ULID, gpt, reservation, NOW),
                   Settlement(ULID, Usage(cost=50, output_tokens=2, error=True), None, NOW),
                   Settlement(other, Usage(cost=7), None, NOW)]
    members = {ULID: f"{ULID}:{identity_tag('a')}", other: f"{other}:{identity_tag('b')}"}

    def lookups_answered(step: Batch) -> list[list[str]]:  # ZRANGEBYLEX "[<ULID>:" per unknown ULID
        return [[members[lookup.args[1][1:-1]]] for lookup in step.steps if isinstance(lookup, Call)]

    charges = plans.requests.seal(settlements)
    (lookups, batch), charged = drive(plans.requests.settle(charges), [lookups_answered, [1, 1]])
    assert isinstance(lookups, Batch) and all(isinstance(each, Call) for each in lookups.steps)
    assert isinstance(batch, Batch) and len(batch.steps) == 2  # one script call per identity
    first, second = sorted(batch.steps, key=lambda each: each.args[0] != ULID)  # type: ignore[union-attr]
    assert isinstance(first, Eval) and first.script is SETTLE and first.keys[0] == f"t:{{{identity_tag('a')}}}:id"
    assert list(first.args[:6]) == [ULID, 150, 10, 3, 2, 1]  # cost, tokens in/out, requests, errors
    assert first.args[7] == "700:r1"  # then the marker's TTL, no leases, then the day hash's per-model field/increments
    assert list(first.args[9:11]) == ["", ""]
    assert list(first.args[11:]) == ["m:gpt", 1, "mc:gpt", 100, "mi:gpt", 10, "mo:gpt", 1]
    assert isinstance(second, Eval) and list(second.args[:6]) == [other, 7, 0, 0, 1, 0]
    assert charged == 3


def test_known_tags_are_not_looked_up_and_deleted_identities_are_not_charged(plans: Plans) -> None:
    drive(plans.requests.admit(AdmissionRequest("a", now=NOW)), [[1, 1, record("a"), [], 0, 0], 1])
    gone = new_ulid()
    settlements = [Settlement(ULID, Usage(cost=1), None, NOW), Settlement(gone, Usage(cost=1), None, NOW)]
    (lookup, call), charged = drive(plans.requests.settle(plans.requests.seal(settlements)), [[[]], 0])
    assert isinstance(lookup, Batch) and len(lookup.steps) == 1  # only the unknown ULID
    assert isinstance(call, Eval) and call.args[0] == ULID  # the known identity's charge alone
    assert charged == 0  # the script answered 0: deleted meanwhile


def test_each_charge_carries_a_marker_key_of_its_identitys_hash_tag(plans: Plans) -> None:
    tag = identity_tag("a")
    settlements = [Settlement(ULID, Usage(cost=1), None, NOW), Settlement(ULID, Usage(cost=2), None, NOW)]
    (charge,) = plans.requests.seal(settlements)  # one identity, one window: one charge
    (_, call), charged = drive(plans.requests.settle([charge]), [[[f"{ULID}:{tag}"]], 1])
    assert isinstance(call, Eval) and len(call.keys) == 21
    assert call.keys[19] == f"t:{{{tag}}}:c:{charge.id}"  # the same {tag}: the same Cluster slot
    assert call.keys[20] == f"t:{{{tag}}}:d:{(NOW - timedelta(days=1)).date()}"  # the day before's, for forecasts
    assert call.args[8] == plans.records.settle_id_ttl and charged == 2
    assert call.packed_keys.endswith("".join(f"${len(key)}\r\n{key}\r\n" for key in call.keys[19:]).encode())


def test_a_retried_charge_is_sent_as_it_was_and_counts_once(plans: Plans) -> None:
    drive(plans.requests.admit(AdmissionRequest("a", now=NOW)), [[1, 1, record("a"), [], 0, 0], 1])  # tag cached
    charges = plans.requests.seal([Settlement(ULID, Usage(cost=5), None, NOW)])
    plan = plans.requests.settle(charges)
    sent = next(plan)
    with pytest.raises(redis.exceptions.TimeoutError):
        plan.throw(redis.exceptions.TimeoutError("no reply"))  # the runner's view: outcome unknown
    (again,), charged = drive(plans.requests.settle(charges), [2])  # the script: applied before, a no-op
    assert isinstance(sent, Eval) and isinstance(again, Eval)
    assert again.keys == sent.keys and again.args == sent.args
    assert charged == 1  # charged once, by the first attempt


def test_charges_have_distinct_ids_per_identity_and_window(plans: Plans) -> None:
    other = new_ulid()
    tomorrow = NOW + timedelta(days=1)
    charges = plans.requests.seal([Settlement(ULID, Usage(cost=1), None, NOW),
                                   Settlement(other, Usage(cost=1), None, NOW),
                          Settlement(ULID, Usage(cost=1), None, tomorrow), Settlement(ULID, Usage(cost=1), None, NOW)])
    assert [(charge.identity_id, charge.count) for charge in charges] == [(ULID, 2), (other, 1), (ULID, 1)]
    assert len({charge.id for charge in charges}) == 3 and all(len(charge.id) > 16 for charge in charges)


def test_a_batch_that_met_an_outage_is_retried_as_the_same_charges(plans: Plans) -> None:
    buffer = SettlementBuffer(100, plans.records.window_of)
    buffer.add(Settlement(ULID, Usage(cost=1), None, NOW))
    sent: list[list[Charge]] = []

    def timed_out(batch: list[Charge]) -> None:
        sent.append(list(batch))
        raise StoreUnavailable("redis: Timeout reading from socket")

    with pytest.raises(StoreUnavailable):
        buffer.drain(timed_out)
    buffer.add(Settlement(ULID, Usage(cost=2), None, NOW))  # the same identity, after the timeout
    buffer.drain(lambda batch: sent.append(list(batch)))
    (first,), (again, fresh) = sent
    assert again is first and [again.count, fresh.count] == [1, 1]  # not regrouped
    assert fresh.id != first.id and len(buffer) == 0


# -- reads and records ---------------------------------------------------------------------------
def test_metrics_sum_each_days_counters(plans: Plans) -> None:
    days = [["c", "100", "i", "3", "o", "4", "n", "2", "e", "1", "m:gpt", "2", "mc:gpt", "90", "mi:gpt", "3"],
            ["c", "50", "n", "1", "u", "1", "m:gpt", "1", "mc:gpt", "10", "mo:gpt", "4"], *([[]] * 28)]
    (_, metrics_eval), metrics = drive(plans.budgets.metrics("user_1", NOW), [record(), days])
    assert isinstance(metrics_eval, Eval) and metrics_eval.script is METRICS and len(metrics_eval.keys) == 30
    assert metrics.total_cost == Decimal("0.00000015") and metrics.total_requests == 3
    assert metrics.total_tokens == 7 and metrics.error_rate == pytest.approx(1 / 3)
    assert metrics.unpriced_requests == 1
    [gpt] = metrics.models
    assert (gpt.model, gpt.requests, gpt.cost, gpt.input_tokens, gpt.output_tokens) == (
        "gpt", 3, Decimal("0.0000001"), 3, 4)


def test_an_identity_is_found_by_ulid_when_not_by_external_id(plans: Plans) -> None:
    steps, identity = drive(plans.identities.retrieve(ULID), [[], [[f"{ULID}:{identity_tag('user_1')}"]], record()])
    assert steps[0] == Call("hgetall", (f"t:{{{identity_tag(ULID)}}}:id",))
    assert steps[2] == Call("hgetall", (f"t:{{{identity_tag('user_1')}}}:id",))
    assert identity.external_id == "user_1"


def test_an_unknown_id_is_not_found(plans: Plans) -> None:
    with pytest.raises(IdentityNotFound):
        drive(plans.identities.retrieve("nobody"), [[]])


def test_creating_an_existing_identity_is_refused(plans: Plans) -> None:
    with pytest.raises(IdentityExists):
        drive(plans.identities.create(IdentityInput(id="user_1")), [[2]])
