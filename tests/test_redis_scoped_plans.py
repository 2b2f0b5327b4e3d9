"""The Redis plans of the default ``global_budgets=True`` path, without a server: replies are fed in.

Admission reads the registry of model, provider and workspace budgets (at most once a second), then
checks and reserves each matching one in its own slot, undoing what it took if one refuses;
settlement reloads a stale registry in the identity charges' round trip and fires alerts.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from identity_middleware.core.admission import AdmissionRequest, Reservation, Settlement, Usage
from identity_middleware.core.budgets import Alert, BudgetSpec, ScopedBudget
from identity_middleware.core.ids import new_ulid
from identity_middleware.stores.redis.keys import identity_tag
from identity_middleware.stores.redis.plans import Plans
from identity_middleware.stores.redis.scripts import ADMIT, SCOPED, SETTLE
from identity_middleware.stores.redis.steps import Batch, Call, Eval
from test_redis_plans import NOW, ULID, drive, record

TAG = identity_tag("user_1")


def stored(spec: BudgetSpec) -> ScopedBudget:
    return ScopedBudget(**spec.model_dump(), id=f"bg_{new_ulid()}", created_at=NOW, updated_at=NOW)


MODEL = stored(BudgetSpec(scope="model", target="openai/gpt-4o", period="daily", amount="1"))
# A TOKENS alert is refused on writes now (orq's rule); one an earlier version stored still fires.
WORKSPACE = ScopedBudget.from_record(json.dumps({
    "scope": "workspace", "period": "monthly", "token_limit": 100, "id": f"bg_{new_ulid()}",
    "alerts": [{"threshold_percent": 50, "dimension": "tokens", "notifier_ids": ["ops"]}],
    "created_at": NOW.isoformat(), "updated_at": NOW.isoformat()}))


def registry(*budgets: ScopedBudget) -> dict[str, str]:
    return {budget.id: budget.to_record() for budget in budgets}


def identity_row(period: int, amount: int | str) -> list[Any]:
    """A lib.lua budget row: live, nothing spent, reserved, counted."""
    return [period, amount, 0, 0, 0, "", 0, "", 1]


@pytest.fixture
def plans() -> Plans:
    return Plans("t", UTC, reservation_ttl=30, global_budgets=True)  # RedisStore's default


def test_admission_reads_the_registry_once_a_second_and_skips_when_nothing_matches(plans: Plans) -> None:
    request = AdmissionRequest("user_1", model="anthropic/claude", now=NOW)
    (admit, listed, defs), first = drive(plans.requests.admit(request),
                                         [[1, 1, record(), [], 0, 0], 1, registry(MODEL)])
    assert isinstance(admit, Eval) and admit.script is ADMIT
    assert defs == Call("hgetall", ("t:{budgets}:defs",))
    assert listed == Call("zadd", ("t:identities", {f"{ULID}:{TAG}": 0}))
    assert first.allowed and first.reservation is None
    (again,), second = drive(plans.requests.admit(request), [[1, 0, 0, [], 0, 0]])  # the registry is fresh: one call
    assert isinstance(again, Eval) and second.allowed


def test_a_matching_model_budget_is_checked_and_holds_the_estimate(plans: Plans) -> None:
    request = AdmissionRequest("user_1", model="openai/gpt-4o", estimate=500, now=NOW)
    rows = [identity_row(1, 10_000)]
    steps, admission = drive(plans.requests.admit(request),
                             [[1, 1, record(), rows, 0, 1], 1, registry(MODEL, WORKSPACE),
                              [[0, "0", 0, "0", 0], [0, "0", 0, "0", 0]]])
    batch = steps[-1]
    assert isinstance(batch, Batch) and len(batch.steps) == 2  # the model's and the workspace's, one round trip
    by_budget = {step.keys[1]: step for step in batch.steps if isinstance(step, Eval)}
    model = by_budget[f"t:{{{MODEL.id}}}:r"]
    assert model.script is SCOPED and model.args[0] == "admit" and model.args[3] == ""  # no token limit
    reservation = admission.reservation
    assert reservation is not None and model.args[6] == f"500:{reservation.id}"
    assert by_budget[f"t:{{{WORKSPACE.id}}}:r"].args[6] == ""  # a token-only budget holds no money
    assert reservation.periods == ("daily",) and reservation.budgets == (MODEL.id,)
    assert reservation.expires_at == NOW + timedelta(seconds=30)


def test_a_refusing_global_budget_undoes_the_identitys_admission(plans: Plans) -> None:
    request = AdmissionRequest("user_1", model="openai/gpt-4o", estimate=500, now=NOW)
    rows = [identity_row(1, 10_000), identity_row(5, 10_000)]
    full = [1, str(10**9), 0, "0", 0]  # blocked: spent the whole amount
    steps, admission = drive(plans.requests.admit(request),
                             [[1, 1, record(), rows, 0, 1], 1, registry(MODEL), [full], [1, 1], [1, "OK", 1]])
    undo, logged = steps[-2:]
    assert isinstance(logged, Batch) and isinstance(push := logged.steps[0], Call)  # the refusal, logged
    assert push.method == "lpush" and push.args[0] == "t:refusals" and json.loads(push.args[1])["scope"] == "model"
    assert isinstance(undo, Batch)
    member = next(step.args[1] for step in undo.steps if isinstance(step, Call))
    assert [step for step in undo.steps if isinstance(step, Call)] == [
        Call("zrem", (f"t:{{{TAG}}}:r:daily", member)), Call("zrem", (f"t:{{{TAG}}}:r:one_time", member))]
    (taken_back,) = [step for step in undo.steps if isinstance(step, Eval)]
    assert taken_back.script is ADMIT and taken_back.args[6] == 2  # refused after admission: uncounted
    blocked = admission.blocked
    assert blocked is not None and blocked.budget_id == MODEL.id and blocked.scope == "model"
    assert admission.reservation is None


def test_settlement_reloads_a_stale_registry_with_the_charges_and_fires_alerts(plans: Plans) -> None:
    events: list[dict[str, Any]] = []
    plans.registry.notify = events.extend
    # caches the tag
    drive(plans.requests.admit(AdmissionRequest("user_1", now=NOW)), [[1, 1, record(), [], 0, 0], 1, {}])
    plans.registry.forget()  # as a second later: stale
    usage = Usage()
    usage.add(100, 40, 20, "openai/gpt-4o")
    reservation = Reservation("r1", ULID, 700, NOW + timedelta(seconds=30), ("daily",), (MODEL.id,))
    steps, charged = drive(plans.requests.settle(plans.requests.seal([Settlement(ULID, usage, reservation, NOW)])),
                           [[1, registry(MODEL, WORKSPACE)], [[1, 100, 60], [1, 100, 60, "50:t"]]])
    first, second = steps
    assert isinstance(first, Batch) and isinstance(first.steps[0], Eval) and first.steps[0].script is SETTLE
    assert first.steps[1] == Call("hgetall", ("t:{budgets}:defs",))
    assert isinstance(second, Batch)
    settles = {step.keys[0].split("}")[0][3:]: step for step in second.steps if isinstance(step, Eval)}
    assert set(settles) == {MODEL.id, WORKSPACE.id}
    model, workspace = settles[MODEL.id], settles[WORKSPACE.id]
    assert model.args[:4] == ["settle", 100, 60, "700:r1"]  # cost, tokens, the reservation released
    assert workspace.args[3] == "" and workspace.args[8] == "50:t:50"  # threshold: 50% of 100 tokens
    assert charged == 1
    (event,) = events
    assert (event["budget_id"], event["dimension"], event["consumed"], event["limit"]) == (
        WORKSPACE.id, "tokens", 60, 100)
    assert event["notifier_ids"] == ["ops"] and event["identity"] == "user_1"


def test_an_identity_budgets_alert_comes_back_from_the_settle_script(plans: Plans) -> None:
    events: list[dict[str, Any]] = []
    plans.registry.notify = events.extend
    drive(plans.requests.admit(AdmissionRequest("user_1", now=NOW)), [[1, 1, record(), [], 0, 0], 1, {}])
    budget = ScopedBudget(id=f"bi_{ULID}_daily", scope="identity", target="user_1", period="daily", amount="1",
                          alerts=[Alert(threshold_percent=80)], created_at=NOW, updated_at=NOW)
    fired = [1, "user_1", 1, "80", "c", 800_000_000, 0, budget.to_record()]
    charges = plans.requests.seal([Settlement(ULID, Usage(cost=800_000_000), None, NOW)])
    _, charged = drive(plans.requests.settle(charges), [fired])
    assert charged == 1
    (event,) = events
    assert (event["budget_id"], event["scope"], event["consumed"], event["limit"]) == (
        budget.id, {"kind": "identity", "target": "user_1"}, "0.80", "1.00")
    start = datetime(NOW.year, NOW.month, NOW.day, tzinfo=UTC)
    assert event["period_start"] == start.isoformat() and json.loads(budget.to_record())["period"] == "daily"
