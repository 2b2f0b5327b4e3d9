"""The request flow itself, without a framework: every outcome, driven sync and async by the same cases."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import anyio
import pytest

from identity_middleware import Budget, Config, IdentityInput, Period
from identity_middleware.context import Meter, Untracked
from identity_middleware.core.admission import Settlement, Usage
from identity_middleware.core.errors import ErrorResponse, StoreUnavailable
from identity_middleware.flow import ANONYMOUS, Flow, Mark, Refused, Request, Tracked
from identity_middleware.flow.steps import Plan, ViewReservation, view_entry
from identity_middleware.stores import MemoryStore, RedisStore, Store
from redis_servers import free_port

Drive = Callable[..., Any]


def _sync(flow: Flow, plan: Plan[Any], auth: Callable[[], object] | None = None) -> Any:
    return flow.run(plan, auth)


def _async(flow: Flow, plan: Plan[Any], auth: Callable[[], object] | None = None) -> Any:
    return anyio.run(flow.arun, plan, auth)


@pytest.fixture(params=["sync", "async"])
def drive(request: pytest.FixtureRequest) -> Drive:
    return _sync if request.param == "sync" else _async


def headers(**values: str) -> Callable[[str], str | None]:
    lowered = {name.lower().replace("_", "-"): value for name, value in values.items()}
    return lambda name: lowered.get(name.lower())


def admit(drive: Drive, flow: Flow, body: bytes | None = None, *, path: str = "/", mark: Mark | None = None,
          auth: Callable[[], object] | None = None, **header_values: str) -> Any:
    return drive(flow, flow.admission(Request(body, headers(**header_values), path, mark)), auth)


def error_of(outcome: object) -> dict[str, Any]:
    import json

    assert isinstance(outcome, Refused), outcome
    body: dict[str, Any] = json.loads(outcome.error.body)
    return {"status": outcome.error.status, **body["error"]}


def down_store() -> Store:
    """A real RedisStore whose server is not there (nothing listens on the port)."""
    return RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2,
                               socket_timeout=0.2, pool_timeout=0.2)


# -- resolution -----------------------------------------------------------------------------------
def test_body_identity_is_tracked_and_upserted(drive: Drive) -> None:
    flow = Flow(Config())
    outcome = admit(drive, flow, b'{"model": "m", "identity": {"id": "u1", "display_name": "Jane"}}')
    assert isinstance(outcome, Tracked) and outcome.meter.identity.external_id == "u1"
    assert flow.config.store.retrieve("u1").display_name == "Jane"


def test_header_identity_tags_only(drive: Drive) -> None:
    flow = Flow(Config())
    flow.config.store.create(IdentityInput(id="u1", display_name="Kept"))
    outcome = admit(drive, flow, b'{"model": "m"}', x_identity_id="u1")
    assert isinstance(outcome, Tracked) and outcome.meter.identity.display_name == "Kept"


def test_body_wins_over_header_and_auth_is_not_asked(drive: Drive) -> None:
    asked: list[bool] = []
    outcome = admit(drive, Flow(Config()), b'{"identity": {"id": "body"}}', x_identity_id="header",
                    auth=lambda: asked.append(True) or "auth")
    assert outcome.meter.identity.external_id == "body" and asked == []


def test_auth_is_asked_only_when_body_and_header_name_nobody(drive: Drive) -> None:
    outcome = admit(drive, Flow(Config()), b"not json", auth=lambda: "from-auth")
    assert isinstance(outcome, Tracked) and outcome.meter.identity.external_id == "from-auth"


def test_an_async_resolver_is_awaited_by_the_async_driver() -> None:
    async def resolver() -> str:
        return "async-user"

    outcome = admit(_async, Flow(Config()), auth=resolver)
    assert isinstance(outcome, Tracked) and outcome.meter.identity.external_id == "async-user"


def test_an_async_resolver_is_refused_by_the_sync_driver() -> None:
    async def resolver() -> str:
        return "async-user"

    with pytest.raises(TypeError, match="plain function"):
        admit(_sync, Flow(Config()), auth=resolver)


def test_nobody_passes_anonymous(drive: Drive) -> None:
    assert admit(drive, Flow(Config())) is ANONYMOUS


def test_nobody_is_refused_when_required(drive: Drive) -> None:
    assert error_of(admit(drive, Flow(Config(require_identity=True))))["type"] == "identity_required"


def test_a_view_mark_requires_an_identity(drive: Drive) -> None:
    assert error_of(admit(drive, Flow(Config()), mark=Mark(require_identity=True)))["status"] == 401


@pytest.mark.parametrize(("body", "header", "auth", "field"), [
    (b'{"identity": {"id": ""}}', None, None, "id"),
    (b'{"identity": "user_1"}', None, None, "identity"),
    (None, "bad\x01id", None, "X-Identity-Id"),
    (None, None, "x" * 256, "auth"),
])
def test_invalid_identity_from_any_source_is_refused_naming_the_field(
        drive: Drive, body: bytes | None, header: str | None, auth: str | None, field: str) -> None:
    found = error_of(admit(drive, Flow(Config()), body, auth=lambda: auth,
                           **({"x_identity_id": header} if header else {})))
    assert found["status"] == 400 and found["type"] == "invalid_identity" and found["field"] == field


# -- admission ------------------------------------------------------------------------------------
def test_a_spent_budget_refuses_and_counts_the_request(drive: Drive) -> None:
    flow = Flow(Config())
    store = flow.config.store
    store.create(IdentityInput(id="u1"))
    store.set_budget("u1", Budget(period=Period.DAILY, amount=Decimal("0.01")))
    store.record("u1", cost="0.01")
    found = error_of(admit(drive, flow, x_identity_id="u1"))
    assert found["status"] == 429 and found["type"] == "budget_exceeded" and found["period"] == "daily"
    metrics = store.metrics("u1")
    assert metrics.total_requests == 2 and metrics.error_rate == 0.5


def test_a_rate_limit_refuses_and_counts_the_request(drive: Drive) -> None:
    flow = Flow(Config(rate_limit="2/minute"))
    assert isinstance(admit(drive, flow, x_identity_id="u1"), Tracked)
    assert isinstance(admit(drive, flow, x_identity_id="u1"), Tracked)
    found = error_of(admit(drive, flow, x_identity_id="u1"))
    assert found["status"] == 429 and found["type"] == "rate_limited"
    assert flow.config.store.metrics("u1").total_requests == 1  # the refused one (tracked ones are unsettled)


def test_an_estimate_from_the_mark_is_reserved(drive: Drive) -> None:
    flow = Flow(Config())
    flow.config.store.create(IdentityInput(id="u1"))
    flow.config.store.set_budget("u1", Budget(period=Period.DAILY, amount=Decimal("1")))
    outcome = admit(drive, flow, x_identity_id="u1", mark=Mark(estimate=600_000_000))
    assert outcome.meter.budgeted and outcome.meter.reservation.amount == 600_000_000
    assert error_of(admit(drive, flow, x_identity_id="u1", mark=Mark(estimate=600_000_000)))["status"] == 429


def test_the_longest_configured_path_prefix_gives_the_estimate() -> None:
    flow = Flow(Config(estimates={"/v1": "0.01", "/v1/chat": "0.02"}))
    assert flow.estimate_for("/v1/chat/completions") == 20_000_000
    assert flow.estimate_for("/v1/embeddings") == 10_000_000
    assert flow.estimate_for("/other") == 0


def test_unknown_identity_not_created_passes_untracked(drive: Drive) -> None:
    assert admit(drive, Flow(Config(create_missing=False)), x_identity_id="ghost") == Untracked("ghost")


def test_unknown_identity_not_created_is_refused_when_required(drive: Drive) -> None:
    flow = Flow(Config(create_missing=False, require_identity=True))
    assert error_of(admit(drive, flow, x_identity_id="ghost"))["type"] == "identity_required"


def test_store_down_open_policy_passes_untracked(drive: Drive) -> None:
    flow = Flow(Config(store=down_store()))
    assert admit(drive, flow, x_identity_id="u1") == Untracked("u1")


def test_store_down_closed_policy_refuses_503(drive: Drive) -> None:
    flow = Flow(Config(store=down_store(), on_store_error="closed"))
    assert error_of(admit(drive, flow, x_identity_id="u1"))["type"] == "store_unavailable"


# -- settlement -----------------------------------------------------------------------------------
# The settlement plan driven sync and async, and Flow.settle / Flow.asettle (the same steps in one
# call, the shells' path through RequestLife): every case holds for all four.
Settle = Callable[[Flow, Meter, bool], None]


@pytest.fixture(params=["sync plan", "async plan", "Flow.settle", "Flow.asettle"])
def settle(request: pytest.FixtureRequest) -> Settle:
    if request.param == "Flow.settle":
        return lambda flow, meter, error: flow.settle(meter, error=error)
    if request.param == "Flow.asettle":
        return lambda flow, meter, error: asyncio.run(flow.asettle(meter, error=error))
    drive = _sync if request.param == "sync plan" else _async
    return lambda flow, meter, error: drive(flow, flow.settlement(meter, error=error))


def test_settlement_commits_once(settle: Settle) -> None:
    flow = Flow(Config())
    meter = admit(_sync, flow, x_identity_id="u1").meter
    meter.add(5_000, 10, 2, "gpt")
    for _ in range(3):
        settle(flow, meter, False)
    metrics = flow.config.store.metrics("u1")
    assert metrics.total_requests == 1 and metrics.total_cost == Decimal("0.000005")
    assert metrics.total_tokens == 12


def test_settlement_counts_an_error(settle: Settle) -> None:
    flow = Flow(Config())
    meter = admit(_sync, flow, x_identity_id="u1").meter
    settle(flow, meter, True)
    assert flow.config.store.metrics("u1").error_rate == 1.0


def test_settlement_while_the_store_is_down_does_not_raise(settle: Settle) -> None:
    live = Flow(Config())
    meter = admit(_sync, live, x_identity_id="u1").meter
    store = down_store()
    try:
        settle(Flow(Config(store=store)), meter, False)  # buffered by the store, not raised
        assert meter.counted
    finally:
        with contextlib.suppress(StoreUnavailable):  # what is buffered cannot be written at close
            store.close()


class FlakyStore(MemoryStore):
    """A store of the app's own whose ``settle`` fails while ``down`` (stores may raise StoreUnavailable)."""

    down = True

    def settle(self, settlement: Settlement) -> None:
        if self.down:
            raise StoreUnavailable("flaky")
        super().settle(settlement)


def test_a_failing_settle_is_logged_once_per_outage(settle: Settle, caplog: pytest.LogCaptureFixture) -> None:
    store = FlakyStore()
    flow = Flow(Config(store=store))
    meters = [admit(_sync, flow, x_identity_id=f"u{n}").meter for n in range(4)]
    for meter in meters[:2]:
        settle(flow, meter, False)  # not raised: the policy is the store's (a RedisStore keeps and retries)
        assert meter.counted
    store.down = False
    for meter in meters[2:]:
        settle(flow, meter, False)
    messages = [record.getMessage() for record in caplog.records]
    assert sum(message.startswith("identity store unavailable") for message in messages) == 1
    assert messages.count("identity store available again") == 1
    assert [store.metrics(f"u{n}").total_requests for n in range(4)] == [0, 0, 1, 1]


# -- entering a @budgeted view --------------------------------------------------------------------
def meter_for(store: MemoryStore, flow: Flow | None, *, budgeted: bool = False) -> Meter:
    return Meter(store.create(IdentityInput(id="u1")), budgeted=budgeted, reserver=flow)


def test_view_entry_without_a_middleware_refuses_only_when_an_identity_is_needed() -> None:
    assert isinstance(view_entry(None, Mark(require_identity=True)), ErrorResponse)
    assert view_entry(None, Mark(require_identity=False)) is None
    assert isinstance(view_entry(ANONYMOUS, Mark(require_identity=True)), ErrorResponse)


def test_view_entry_lets_an_identified_untracked_request_through() -> None:
    assert view_entry(Untracked("u1"), Mark(estimate=5, require_identity=True)) is None


def test_view_entry_reserves_only_what_admission_did_not() -> None:
    store = MemoryStore()
    flow = Flow(Config(store=store))
    assert view_entry(meter_for(store, flow, budgeted=True), Mark(estimate=5)) is None
    assert view_entry(Meter(store.retrieve("u1"), reserver=flow), Mark()) is None
    pending = view_entry(Meter(store.retrieve("u1"), reserver=flow), Mark(estimate=5))
    assert isinstance(pending, ViewReservation) and pending.estimate == 5


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_view_reservation_that_does_not_fit_is_refused_and_counted(mode: str) -> None:
    store = MemoryStore()
    flow = Flow(Config(store=store))
    meter = meter_for(store, flow)
    store.set_budget("u1", Budget(period=Period.DAILY, amount=Decimal("0.01")))
    pending = view_entry(meter, Mark(estimate=20_000_000))
    assert isinstance(pending, ViewReservation)
    refusal = pending.make() if mode == "sync" else anyio.run(pending.amake)
    assert refusal is not None and refusal.status == 429
    assert meter.counted and store.metrics("u1").total_requests == 1
    assert meter.take(False) is None  # already counted: the settlement adds nothing


def test_meter_take_answers_once_with_the_usage() -> None:
    meter = meter_for(MemoryStore(), None)
    meter.add(7, 1, 2, None)
    first = meter.take(True)
    assert first is not None and first.usage == Usage(cost=7, input_tokens=1, output_tokens=2, error=True)
    assert meter.take(False) is None


# -- OpenAI/Anthropic end-user fields, and estimates priced from the body ---------------------------
@pytest.mark.parametrize(("body", "expected"), [
    (b'{"model": "gpt-4o", "safety_identifier": "u-safe", "user": "u-user"}', "u-safe"),
    (b'{"model": "gpt-4o", "user": "u-user"}', "u-user"),
    (b'{"model": "claude", "metadata": {"user_id": "u-anthropic"}}', "u-anthropic"),
])
def test_the_user_field_source_reads_provider_end_user_fields(drive: Drive, body: bytes, expected: str) -> None:
    outcome = admit(drive, Flow(Config(sources=("body", "user_field", "header"))), body, x_identity_id="header")
    assert isinstance(outcome, Tracked) and outcome.meter.identity.external_id == expected
    assert outcome.meter.identity.last_source == "user_field"


def test_the_user_field_source_is_off_by_default(drive: Drive) -> None:
    assert admit(drive, Flow(Config()), b'{"user": "u-user"}') is ANONYMOUS


def test_an_auto_estimate_reserves_what_the_body_could_cost(drive: Drive) -> None:
    flow = Flow(Config(prices={"my-model": ("1000", "2000")}))  # USD per 1M tokens: $0.002 an output token
    flow.config.store.create(IdentityInput(id="u1"))
    flow.config.store.set_budget("u1", Budget(period=Period.DAILY, amount=Decimal("1")))
    body = b'{"model": "my-model", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}'
    outcome = admit(drive, flow, body, x_identity_id="u1", mark=Mark(auto=True))
    assert outcome.meter.reservation is not None and outcome.meter.reservation.amount >= 200_000_000
    too_big = b'{"model": "my-model", "max_tokens": 1000, "messages": []}'  # up to $2 on a $1 budget
    assert error_of(admit(drive, flow, too_big, x_identity_id="u1", mark=Mark(auto=True)))["status"] == 429


def test_auto_estimates_by_path_and_unknowable_bodies_reserve_nothing(drive: Drive) -> None:
    flow = Flow(Config(estimates={"/v1/chat": "auto"}, prices={"my-model": ("1", "1")}))
    assert flow.estimate_for("/v1/chat/completions") < 0  # "auto", priced per request
    outcome = admit(drive, flow, b'{"model": "my-model", "messages": []}', x_identity_id="u1",
                    path="/v1/chat/completions")  # no max_tokens: the most it could cost is unknown
    assert isinstance(outcome, Tracked) and outcome.meter.reservation is None
