"""The store contract: one suite, run unchanged on MemoryStore and RedisStore (sync, async, Cluster)."""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import anyio.from_thread
import pytest

from alert_receiver import alert_receiver
from conftest import CONTRACT_KINDS
from fake_clock import Clock
from identity_middleware.config import InvalidOption
from identity_middleware.core.admission import AdmissionRequest, Settlement, Usage
from identity_middleware.core.budgets import (
    Alert,
    BudgetChanges,
    BudgetExists,
    BudgetNotFound,
    BudgetOrder,
    BudgetSpec,
    ScopedBudget,
)
from identity_middleware.core.errors import IdentityExists, IdentityNotFound
from identity_middleware.core.models import Budget, IdentityInput
from identity_middleware.core.periods import Period
from identity_middleware.core.signing import signature_problem
from identity_middleware.stores import Store


@pytest.fixture
def now() -> datetime:
    """The real clock, to the second: Redis applies EXPIREAT against it, so a test's instants
    must be near it (a pinned date makes the keys written "29 days ago" expire on arrival)."""
    return datetime.now(UTC).replace(microsecond=0)


class Api:
    """A store's operations, called through the sync forms or (``mode="async"``) the async twins."""

    def __init__(self, store: Store, portal: anyio.from_thread.BlockingPortal | None,
                 make: Callable[..., Store] | None = None, made: list[Store] | None = None) -> None:
        self.store = store
        self._portal = portal
        self._make = make
        self.made = [store] if made is None else made  # every store of the test, this one's included

    def built_with(self, **options: Any) -> Api:
        """The same operations on a new store of this configuration, built with ``options``
        (``providers=``, ``notifiers=``, ...): what a store is given where it is built."""
        assert self._make is not None
        store = self._make(**options)
        self.made.append(store)
        return Api(store, self._portal, self._make, self.made)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if self._portal is None:
            return getattr(self.store, name)  # type: ignore[no-any-return]
        method = getattr(self.store, "a" + name)
        portal = self._portal
        return lambda *args, **kwargs: portal.call(functools.partial(method, *args, **kwargs))


@pytest.fixture(params=CONTRACT_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    """Every store configuration (see conftest's ``CONTRACT_KINDS``)."""
    return str(request.param)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def stores(store_kind: str, make_store: Callable[..., Store], clock: Clock) -> Callable[..., Store]:
    """``stores(**options)``: a fresh, empty store of the configuration; Redis ones on the test's clock."""
    if store_kind == "memory":
        return functools.partial(make_store, store_kind)
    return functools.partial(make_store, store_kind, clock=clock)


@pytest.fixture
def store(stores: Callable[..., Store]) -> Store:
    return stores()


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest, store: Store, stores: Callable[..., Store]) -> Iterator[Api]:
    if request.param == "sync":
        yield Api(store, None, stores)
        return
    with anyio.from_thread.start_blocking_portal() as portal:
        api = Api(store, portal, stores)
        yield api
        for each in api.made:
            portal.call(each.aflush)


# For a behaviour leasing changes by design: a lease is headroom this process holds and admits from
# without asking Redis (see ``Lease``), so usage recorded by another path, and the lease's own
# reservation, show differently until it is renewed (tests/test_redis_lease.py covers leasing).
# Such tests run on every other configuration.
unleased = pytest.mark.parametrize("store_kind", [kind for kind in CONTRACT_KINDS if kind != "redis-leased"])


def admit(api: Api, external_id: str, **options: Any) -> Any:
    return api.admit(AdmissionRequest(external_id, **options))


def settle(api: Api, admission: Any, cost: str = "0", *, error: bool = False, now: datetime | None = None) -> None:
    usage = Usage(error=error)
    usage.add(int(Decimal(cost) * 1_000_000_000), 0, 0, None)
    api.settle(Settlement(admission.identity.id, usage, admission.reservation, now))


# -- identities ------------------------------------------------------------------------------------
def test_create_then_retrieve_by_external_id_and_ulid(api: Api) -> None:
    made = api.create(IdentityInput(id="user_1", display_name="Jane", email="jane@example.com",
                                    metadata={"plan": "pro"}, tags=["beta"]))
    assert made.external_id == "user_1" and made.display_name == "Jane" and made.tags == ["beta"]
    assert api.retrieve("user_1") == made
    assert api.retrieve(made.id) == made


def test_retrieve_unknown_raises_not_found(api: Api) -> None:
    with pytest.raises(IdentityNotFound):
        api.retrieve("nobody")
    with pytest.raises(LookupError):
        api.retrieve("01ARZ3NDEKTSV4RRFFQ69G5FAV")


def test_create_existing_external_id_raises(api: Api) -> None:
    api.create(IdentityInput(id="user_1"))
    with pytest.raises(IdentityExists):
        api.create(IdentityInput(id="user_1"))


def test_update_replaces_given_fields_only(api: Api) -> None:
    made = api.create(IdentityInput(id="user_1", display_name="Jane", email="jane@example.com", tags=["a"]))
    updated = api.update("user_1", display_name="Jane D", logo_url="https://x/a.png")
    assert updated.display_name == "Jane D" and updated.email == "jane@example.com"
    assert updated.avatar_url == "https://x/a.png" and updated.tags == ["a"]
    assert updated.updated >= made.updated and updated.created == made.created
    assert api.retrieve(made.id) == updated


def test_update_unknown_raises_not_found(api: Api) -> None:
    with pytest.raises(IdentityNotFound):
        api.update("ghost", display_name="x")


def test_delete_removes_record_budgets_and_counters(api: Api) -> None:
    api.create(IdentityInput(id="user_1"))
    api.set_budget("user_1", Budget(period=Period.DAILY, amount=Decimal("1")))
    api.record("user_1", cost=Decimal("0.5"))
    api.delete("user_1")
    with pytest.raises(IdentityNotFound):
        api.retrieve("user_1")
    assert api.list().data == []
    api.create(IdentityInput(id="user_1"))
    assert api.budget_status("user_1") == []
    assert api.metrics("user_1").total_requests == 0
    assert sum(hour.requests for hour in api.hourly_metrics("user_1")) == 0  # its hours went too
    api.set_budget("user_1", Budget(period=Period.DAILY, amount=Decimal("1")))
    assert api.budget_status("user_1")[0].spent == 0


def test_list_pages_forward_and_backward_without_gap_or_repeat(api: Api) -> None:
    ids = [api.create(IdentityInput(id=f"user_{n:03}")).id for n in range(250)]
    forward: list[str] = []
    cursor = None
    while True:
        page = api.list(limit=37, starting_after=cursor)
        forward += [identity.id for identity in page.data]
        if not page.has_more:
            break
        cursor = page.data[-1].id
    assert forward == ids
    backward: list[str] = []
    cursor = None
    first = api.list(limit=200)
    assert first.has_more and [i.id for i in first.data] == ids[:200]
    cursor = ids[-1]
    backward = [ids[-1]]
    while True:
        page = api.list(limit=37, ending_before=cursor)
        backward = [identity.id for identity in page.data] + backward
        if not page.has_more:
            break
        cursor = page.data[0].id
    assert backward == ids
    between = api.list(limit=10, starting_after=ids[10], ending_before=ids[15])
    assert [i.id for i in between.data] == ids[11:15] and not between.has_more


def test_list_search_is_case_insensitive_on_id_name_and_email(api: Api) -> None:
    api.create(IdentityInput(id="alpha", display_name="Ann Smith"))
    api.create(IdentityInput(id="beta", email="BOB@Example.com"))
    api.create(IdentityInput(id="gamma"))
    assert [i.external_id for i in api.list(search="SMITH").data] == ["alpha"]
    assert [i.external_id for i in api.list(search="example").data] == ["beta"]
    assert [i.external_id for i in api.list(search="AMM").data] == ["gamma"]


def test_list_tags_keep_any_of(api: Api) -> None:
    api.create(IdentityInput(id="a", tags=["x"]))
    api.create(IdentityInput(id="b", tags=["y", "z"]))
    api.create(IdentityInput(id="c", tags=["w"]))
    assert [i.external_id for i in api.list(tags=["x", "z"]).data] == ["a", "b"]


def test_list_all_tags_keep_identities_having_every_one(api: Api) -> None:
    api.create(IdentityInput(id="a", tags=["x"]))
    api.create(IdentityInput(id="b", tags=["y", "x", "z"]))
    api.create(IdentityInput(id="c", tags=["x", "y"]))
    assert [i.external_id for i in api.list(all_tags=["x", "y"]).data] == ["b", "c"]
    assert [i.external_id for i in api.list(all_tags=["x", "y"], tags=["z"]).data] == ["b"]
    assert [i.external_id for i in api.list(all_tags=["x", "w"]).data] == []


def test_list_by_display_name_is_a_to_z_case_insensitive_nameless_last(api: Api) -> None:
    for external_id, name in [("u1", "bob"), ("u2", None), ("u3", "Alice"), ("u4", "carol"), ("u5", "alice")]:
        api.create(IdentityInput(id=external_id, display_name=name))
    page = api.list(order="display_name")
    assert [i.external_id for i in page.data] == ["u3", "u5", "u1", "u4", "u2"] and not page.has_more


def test_list_in_another_order_pages_forward_and_backward_without_gap_or_repeat(api: Api) -> None:
    names = [f"name {n:02}" for n in range(23)]
    for n, name in enumerate(reversed(names)):
        api.create(IdentityInput(id=f"user_{n:02}", display_name=name, tags=["even"] if n % 2 == 0 else []))
    seen: list[str] = []
    cursor = None
    while True:
        page = api.list(limit=5, starting_after=cursor, order="display_name")
        seen += [identity.display_name or "" for identity in page.data]
        if not page.has_more:
            break
        cursor = page.data[-1].id
    assert seen == names
    last = api.retrieve("user_00").id  # "name 22", the last by name
    back = api.list(limit=5, ending_before=last, order="display_name")
    assert [i.display_name for i in back.data] == names[17:22] and back.has_more
    evens = api.list(limit=3, order="display_name", all_tags=["even"], starting_after=api.retrieve("user_21").id)
    assert [i.display_name for i in evens.data] == ["name 02", "name 04", "name 06"] and evens.has_more


def test_list_by_updated_is_newest_first(api: Api, now: datetime) -> None:
    for n in range(4):  # created a second apart (an admission takes its instant), a minute ago
        admit(api, f"user_{n}", now=now - timedelta(seconds=60 - n))
    api.update("user_1", display_name="touched")  # now: the newest
    page = api.list(order="updated")
    assert page.data[0].external_id == "user_1"
    instants = [identity.updated for identity in page.data]
    assert instants == sorted(instants, reverse=True) and len(page.data) == 4


def test_list_in_another_order_refuses_a_cursor_naming_no_identity(api: Api) -> None:
    api.create(IdentityInput(id="a"))
    with pytest.raises(IdentityNotFound):
        api.list(order="updated", starting_after="01ARZ3NDEKTSV4RRFFQ69G5FAV")


def test_list_includes_metrics_and_budgets_when_asked(api: Api) -> None:
    api.create(IdentityInput(id="a"))
    api.set_budget("a", Budget(period=Period.DAILY, amount=Decimal("2")))
    api.record("a", cost=Decimal("0.25"), input_tokens=3, output_tokens=4)
    plain = api.list().data[0]
    assert plain.metrics is None and plain.budgets is None
    full = api.list(include_metrics=True, include_budgets=True).data[0]
    assert full.metrics is not None and full.metrics.total_cost == Decimal("0.25") and full.metrics.total_tokens == 7
    assert full.budgets is not None and full.budgets[0].spent == Decimal("0.25")


# -- budgets ---------------------------------------------------------------------------------------
def test_set_status_remove_budget(api: Api) -> None:
    api.create(IdentityInput(id="a"))
    api.set_budget("a", Budget(period=Period.MONTHLY, amount=Decimal("10")))
    api.set_budget("a", Budget(period=Period.DAILY, amount=Decimal("0.20")))
    api.record("a", cost=Decimal("0.05"))
    daily, monthly = api.budget_status("a")
    assert daily.period is Period.DAILY and monthly.period is Period.MONTHLY
    assert daily.amount == Decimal("0.2") and daily.spent == Decimal("0.05")
    assert daily.remaining == Decimal("0.15") and daily.percent == 25.0 and daily.reserved == 0
    api.remove_budget("a", "daily")
    assert [s.period for s in api.budget_status("a")] == [Period.MONTHLY]


def test_spend_before_a_budget_counts(api: Api) -> None:
    api.create(IdentityInput(id="a"))
    api.record("a", cost=Decimal("0.30"))
    api.set_budget("a", Budget(period=Period.WEEKLY, amount=Decimal("1")))
    assert api.budget_status("a")[0].spent == Decimal("0.3")


def test_reset_zeroes_the_period_spend(api: Api) -> None:
    api.create(IdentityInput(id="a"))
    api.set_budget("a", Budget(period=Period.DAILY, amount=Decimal("1")))
    api.set_budget("a", Budget(period=Period.YEARLY, amount=Decimal("100")))
    api.record("a", cost=Decimal("0.40"))
    api.reset_budget("a", Period.DAILY)
    daily, yearly = api.budget_status("a")
    assert daily.spent == 0 and yearly.spent == Decimal("0.4")


def test_budget_of_unknown_identity_raises(api: Api) -> None:
    with pytest.raises(IdentityNotFound):
        api.set_budget("ghost", Budget(period=Period.DAILY, amount=Decimal("1")))


# -- usage -----------------------------------------------------------------------------------------
def test_record_adds_to_metrics(api: Api) -> None:
    api.create(IdentityInput(id="a"))
    api.record("a", cost=Decimal("0.0000001"), input_tokens=10, output_tokens=5, model="gpt")
    api.record("a", cost="0.1", error=True)
    metrics = api.metrics("a")
    assert metrics.total_cost == Decimal("0.1000001")
    assert metrics.total_tokens == 15 and metrics.total_requests == 2 and metrics.error_rate == 0.5


def test_metrics_cover_30_utc_days(api: Api, now: datetime) -> None:
    made = api.create(IdentityInput(id="a"))
    for days_ago in (0, 29, 30):
        usage = Usage()
        usage.add(1_000_000_000, 0, 0, None)
        api.settle(Settlement(made.id, usage, None, now - timedelta(days=days_ago)))
    assert api.metrics("a", now=now).total_cost == 2


def test_daily_metrics_list_30_utc_days_oldest_first_with_zeros(api: Api, now: datetime) -> None:
    made = api.create(IdentityInput(id="a"))
    for days_ago, cost in ((0, 250_000_000), (0, 1), (3, 1_000_000_000), (30, 7)):
        usage = Usage(error=days_ago == 3)
        usage.add(cost, 2, 3, None)
        api.settle(Settlement(made.id, usage, None, now - timedelta(days=days_ago)))
    days = api.daily_metrics("a", now=now)
    today = now.astimezone(UTC).date()
    assert [day.day for day in days] == [today - timedelta(days=n) for n in range(29, -1, -1)]
    assert days[-1].cost == Decimal("0.250000001") and days[-1].requests == 2
    assert days[-1].input_tokens == 4 and days[-1].output_tokens == 6 and days[-1].errors == 0
    assert days[-4].cost == 1 and days[-4].errors == 1
    assert sum(day.requests for day in days) == 3 and days[0].requests == 0


def test_daily_metrics_window_is_1_to_30_days(api: Api, now: datetime) -> None:
    api.create(IdentityInput(id="a"))
    assert len(api.daily_metrics("a", days=7, now=now)) == 7
    with pytest.raises(ValueError):
        api.daily_metrics("a", days=31)
    with pytest.raises(IdentityNotFound):
        api.daily_metrics("ghost")


def test_hourly_metrics_list_24_utc_hours_oldest_first_with_zeros(api: Api, now: datetime) -> None:
    made = api.create(IdentityInput(id="a"))
    for hours_ago, cost in ((0, 250_000_000), (0, 1), (5, 1_000_000_000), (24, 7)):
        usage = Usage(error=hours_ago == 5)
        usage.add(cost, 2, 3, "gpt")
        api.settle(Settlement(made.id, usage, None, now - timedelta(hours=hours_ago)))
    assert api.admit(AdmissionRequest("a", refused=True, now=now - timedelta(hours=5))).identity is not None
    hours = api.hourly_metrics("a", now=now)
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    assert [hour.hour for hour in hours] == [current - timedelta(hours=n) for n in range(23, -1, -1)]
    assert (hours[-1].cost, hours[-1].requests, hours[-1].errors) == (Decimal("0.250000001"), 2, 0)
    assert (hours[-1].input_tokens, hours[-1].output_tokens) == (4, 6)
    assert (hours[-6].cost, hours[-6].requests, hours[-6].errors) == (1, 2, 2)  # a refused request counts too
    assert sum(hour.requests for hour in hours) == 4 and hours[0].requests == 0  # 24 hours ago: left
    assert len(api.hourly_metrics("a", hours=1, now=now)) == 1
    with pytest.raises(ValueError):
        api.hourly_metrics("a", hours=25)
    with pytest.raises(IdentityNotFound):
        api.hourly_metrics("ghost")
    day = api.recent_metrics("a", hours=24, now=now)  # the same hours summed, per model too
    assert (day.total_cost, day.total_requests, day.total_errors) == (Decimal("1.250000001"), 4, 2)
    assert [(m.model, m.requests, m.cost, m.input_tokens) for m in day.models] == [
        ("gpt", 3, Decimal("1.250000001"), 6)]
    assert api.recent_metrics("a", hours=1, now=now).total_requests == 2
    for wrong in ({"hours": 25}, {"hours": 0}, {}, {"hours": 1, "days": 1}):
        with pytest.raises(ValueError):
            api.recent_metrics("a", **wrong)


def test_usage_over_hours_or_days_is_the_buckets_and_their_sums(api: Api, now: datetime) -> None:
    made = api.create(IdentityInput(id="a"))
    for hours_ago, model in ((0, "m1"), (3, "m2"), (30, "m1")):
        usage = Usage()
        usage.add(1_000, 2, 3, model)
        api.settle(Settlement(made.id, usage, None, now - timedelta(hours=hours_ago)))
    by_hour = api.usage_over("a", hours=24, now=now)
    assert list(by_hour.points) == api.hourly_metrics("a", now=now)
    assert by_hour.totals == api.recent_metrics("a", hours=24, now=now) and by_hour.totals.total_requests == 2
    by_day = api.usage_over("a", days=7, now=now)
    assert list(by_day.points) == api.daily_metrics("a", days=7, now=now)
    assert by_day.totals == api.recent_metrics("a", days=7, now=now) and by_day.totals.total_requests == 3
    assert [m.model for m in by_day.totals.models] == ["m1", "m2"]
    with pytest.raises(ValueError):
        api.usage_over("a")
    with pytest.raises(IdentityNotFound):
        api.usage_over("ghost", days=1)


def test_metrics_break_usage_down_per_model(api: Api) -> None:
    made = api.create(IdentityInput(id="a"))
    usage = Usage()
    usage.add(2_000, 100, 10, "gpt-4o-mini")
    usage.add(3_000, 200, 20, "gpt-4o-mini")
    usage.add(50_000, 7, 3, "claude-sonnet-4-5")
    api.settle(Settlement(made.id, usage, None))
    api.record("a", cost="0.000000001", input_tokens=1, output_tokens=1, model="gpt-4o-mini")
    metrics = api.metrics("a")
    assert [(m.model, m.cost, m.input_tokens, m.output_tokens, m.requests) for m in metrics.models] == [
        ("claude-sonnet-4-5", Decimal("0.00005"), 7, 3, 1),
        ("gpt-4o-mini", Decimal("0.000005001"), 301, 31, 3),
    ]
    assert metrics.total_requests == 2 and metrics.total_cost == Decimal("0.000055001")


def test_per_model_metrics_sum_over_30_utc_days_only(api: Api, now: datetime) -> None:
    made = api.create(IdentityInput(id="a"))
    for days_ago in (0, 29, 30):
        usage = Usage()
        usage.add(1_000_000_000, 5, 1, "m")
        api.settle(Settlement(made.id, usage, None, now - timedelta(days=days_ago)))
    (only,) = api.metrics("a", now=now).models
    assert (only.model, only.cost, only.input_tokens, only.output_tokens, only.requests) == ("m", 2, 10, 2, 2)


def test_unpriced_calls_are_counted(api: Api) -> None:
    made = api.create(IdentityInput(id="a"))
    usage = Usage()
    usage.add(0, 10, 5, "unknown-model", unpriced=True)
    usage.add(0, 10, 5, "unknown-model", unpriced=True)
    api.settle(Settlement(made.id, usage, None))
    metrics = api.metrics("a")
    assert metrics.unpriced_requests == 2 and metrics.models[0].requests == 2 and metrics.total_requests == 1


def test_model_names_with_separators_stay_apart(api: Api) -> None:
    made = api.create(IdentityInput(id="a"))
    usage = Usage()
    usage.add(1, 1, 0, "openai/gpt-4o:2024 c")
    usage.add(2, 0, 1, "mc:x")
    api.settle(Settlement(made.id, usage, None))
    assert sorted((m.model, m.requests) for m in api.metrics("a").models) == [("mc:x", 1), ("openai/gpt-4o:2024 c", 1)]


def test_list_metrics_include_the_model_breakdown(api: Api) -> None:
    api.create(IdentityInput(id="a"))
    api.record("a", cost="0.25", input_tokens=3, output_tokens=4, model="gpt-4o")
    (row,) = api.list(include_metrics=True).data
    assert row.metrics is not None and [m.model for m in row.metrics.models] == ["gpt-4o"]


# -- admission -------------------------------------------------------------------------------------
def test_admit_creates_a_bare_identity(api: Api) -> None:
    admission = admit(api, "new_user")
    assert admission.allowed and admission.identity.external_id == "new_user"
    assert api.retrieve("new_user").id == admission.identity.id
    assert [i.external_id for i in api.list().data] == ["new_user"]


def test_admit_without_create_missing_returns_none(api: Api) -> None:
    admission = admit(api, "ghost", create_missing=False)
    assert admission.identity is None
    with pytest.raises(IdentityNotFound):
        api.retrieve("ghost")


def test_admit_upserts_partially(api: Api) -> None:
    api.create(IdentityInput(id="a", display_name="Ann", email="ann@example.com"))
    admission = admit(api, "a", upsert=IdentityInput(id="a", display_name="Ann B"), create_missing=False)
    assert admission.identity.display_name == "Ann B" and admission.identity.email == "ann@example.com"
    assert api.retrieve("a").display_name == "Ann B"


def test_admit_unchanged_upsert_keeps_updated(api: Api) -> None:
    made = api.create(IdentityInput(id="a", display_name="Ann", metadata={"k": 1, "j": [1, 2]}))
    same = admit(api, "a", upsert=IdentityInput(id="a", display_name="Ann", metadata={"j": [1, 2], "k": 1}),
                 now=made.updated + timedelta(minutes=1))  # a change would have moved it a minute
    assert same.identity.updated == made.updated


def test_admit_keeps_the_last_source_without_moving_updated(api: Api) -> None:
    made = admit(api, "a", last_source="header").identity
    assert api.retrieve("a").last_source == "header"
    admit(api, "a", last_source="body", now=made.updated + timedelta(minutes=1))  # a change would move it
    admit(api, "a", now=made.updated + timedelta(minutes=2))  # no source given: the last one stays
    record = api.retrieve("a")
    assert record.last_source == "body" and record.updated == made.updated
    assert api.list().data[0].last_source == "body"


def test_an_identity_never_admitted_has_no_last_source(api: Api) -> None:
    api.create(IdentityInput(id="a"))
    assert api.retrieve("a").last_source is None
    assert "last_source" not in api.retrieve("a").to_json()


def test_admit_sets_default_budgets_on_new_identities(api: Api) -> None:
    budget = Budget(period=Period.DAILY, amount=Decimal("0.5"))
    admit(api, "a", default_budgets=(budget,))
    assert api.budget_status("a")[0].amount == Decimal("0.5")
    api.create(IdentityInput(id="b"))
    admit(api, "b", default_budgets=(budget,))
    assert api.budget_status("b") == []


@unleased
def test_spend_at_the_limit_blocks(api: Api) -> None:
    api.create(IdentityInput(id="a"))
    api.set_budget("a", Budget(period=Period.DAILY, amount=Decimal("0.10")))
    assert admit(api, "a").allowed
    api.record("a", cost=Decimal("0.0999"))
    assert admit(api, "a").allowed
    api.record("a", cost=Decimal("0.0001"))
    blocked = admit(api, "a")
    assert not blocked.allowed and blocked.blocked.period is Period.DAILY
    assert blocked.blocked.spent == Decimal("0.1") and blocked.blocked.retry_after >= 1


def test_estimate_that_would_overshoot_blocks(api: Api) -> None:
    api.create(IdentityInput(id="a"))
    api.set_budget("a", Budget(period=Period.DAILY, amount=Decimal("1")))
    api.record("a", cost=Decimal("0.95"))
    assert not admit(api, "a", estimate=60_000_000).allowed
    assert admit(api, "a", estimate=50_000_000).allowed


def test_blocked_admission_counts_a_request_and_an_error(api: Api) -> None:
    api.create(IdentityInput(id="a"))
    api.set_budget("a", Budget(period=Period.DAILY, amount=Decimal("0.01")))
    api.record("a", cost=Decimal("0.01"))
    assert not admit(api, "a").allowed
    metrics = api.metrics("a")
    assert metrics.total_requests == 2 and metrics.total_errors == 1


def test_refused_admission_counts_without_budget_check(api: Api) -> None:
    admission = admit(api, "a", refused=True)
    assert admission.allowed and admission.reservation is None
    assert api.metrics("a").total_errors == 1


@unleased
def test_reservation_shows_in_status_and_is_released_on_settle(api: Api) -> None:
    api.create(IdentityInput(id="a"))
    api.set_budget("a", Budget(period=Period.DAILY, amount=Decimal("1")))
    first = admit(api, "a", estimate=400_000_000)
    second = admit(api, "a", estimate=400_000_000)
    assert first.reservation is not None and second.reservation is not None
    assert api.budget_status("a")[0].reserved == Decimal("0.8")
    assert not admit(api, "a", estimate=400_000_000).allowed
    settle(api, first, "0.1")
    status = api.budget_status("a")[0]
    assert status.reserved == Decimal("0.4") and status.spent == Decimal("0.1")


def test_no_reservation_without_budget_or_estimate(api: Api) -> None:
    assert admit(api, "a", estimate=10).reservation is None
    api.set_budget("a", Budget(period=Period.DAILY, amount=Decimal("1")))
    assert admit(api, "a").reservation is None


def test_reset_clears_the_period_reservations(api: Api) -> None:
    api.create(IdentityInput(id="a"))
    api.set_budget("a", Budget(period=Period.DAILY, amount=Decimal("1")))
    admit(api, "a", estimate=500_000_000)
    api.reset_budget("a", "daily")
    assert api.budget_status("a")[0].reserved == 0


def test_reservation_expires(api: Api, now: datetime) -> None:
    api.create(IdentityInput(id="a"))
    api.set_budget("a", Budget(period=Period.DAILY, amount=Decimal("1")))
    admission = admit(api, "a", estimate=900_000_000, now=now)
    assert admission.reservation.expires_at == now + timedelta(seconds=api.store.reservation_ttl)
    assert not admit(api, "a", estimate=900_000_000, now=now).allowed
    later = now + timedelta(seconds=api.store.reservation_ttl + 1)
    assert api.budget_status("a", now=later)[0].reserved == 0
    assert admit(api, "a", estimate=900_000_000, now=later).allowed


def test_period_rollover_starts_at_zero(api: Api, now: datetime) -> None:
    made = api.create(IdentityInput(id="a"))
    api.set_budget("a", Budget(period=Period.DAILY, amount=Decimal("1")))
    usage = Usage()
    usage.add(1_000_000_000, 0, 0, None)
    api.settle(Settlement(made.id, usage, None, now))
    assert not admit(api, "a", now=now).allowed
    tomorrow = now + timedelta(days=1)
    assert admit(api, "a", now=tomorrow).allowed
    status = api.budget_status("a", now=tomorrow)[0]
    assert status.spent == 0
    assert status.period_start == datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=UTC)


def test_settle_after_delete_charges_nothing(api: Api) -> None:
    admission = admit(api, "a")
    api.delete("a")
    settle(api, admission, "0.5")
    api.create(IdentityInput(id="a"))
    assert api.metrics("a").total_requests == 0


# -- scoped budgets (orq's Budgets API) --------------------------------------------------------------
def spend(api: Api, external_id: str, cost: str, model: str | None = None, tokens: int = 0) -> None:
    admission = admit(api, external_id, model=model)
    assert admission.allowed, admission.blocked
    usage = Usage()
    usage.add(int(Decimal(cost) * 1_000_000_000), tokens, 0, model)
    api.settle(Settlement(admission.identity.id, usage, admission.reservation))
    api.flush()


def test_a_model_budget_blocks_that_model_only_and_names_itself(api: Api) -> None:
    budget = api.create_budget(BudgetSpec(scope="model", target="openai/gpt-4o", period="daily", amount="0.10"))
    spend(api, "a", "0.10", "openai/gpt-4o")
    blocked = admit(api, "b", model="openai/gpt-4o")
    assert not blocked.allowed
    assert blocked.blocked.budget_id == budget.id and blocked.blocked.scope == "model"
    assert admit(api, "b", model="anthropic/claude").allowed
    assert admit(api, "b").allowed
    assert api.budget_usage(budget.id).amount == Decimal("0.1")


def test_a_provider_budget_counts_models_by_prefix_or_the_configured_map(api: Api) -> None:
    api = api.built_with(providers={"gpt-4o": "openai"})
    api.create_budget(BudgetSpec(scope="provider", target="openai", period="monthly", amount="0.05"))
    spend(api, "a", "0.03", "gpt-4o")
    spend(api, "a", "0.02", "openai/o3")
    assert not admit(api, "c", model="gpt-4o").allowed
    assert not admit(api, "c", model="openai/gpt-4o-mini").allowed
    assert admit(api, "c", model="claude-3").allowed


def test_a_workspace_token_limit_blocks_everyone_at_the_limit(api: Api) -> None:
    budget = api.create_budget(BudgetSpec(scope="workspace", period="weekly", token_limit=10))
    spend(api, "a", "0", "m", tokens=9)
    assert admit(api, "b").allowed
    spend(api, "a", "0", "m", tokens=1)
    blocked = admit(api, "b")
    assert not blocked.allowed and blocked.blocked.scope == "workspace" and blocked.blocked.token_limit == 10
    assert api.budget_usage(budget.id).tokens == 10
    api.reset_budget_consumption(budget.id)
    assert admit(api, "b").allowed


def test_inactive_and_expired_budgets_do_not_block(api: Api, now: datetime, clock: Clock) -> None:
    budget = api.create_budget(BudgetSpec(scope="workspace", period="one_time", amount="0.01"))
    spend(api, "a", "0.01", "m")
    assert not admit(api, "a").allowed
    api.update_budget(budget.id, BudgetChanges(is_active=False))
    clock.now += 1.1  # a RedisStore re-reads its registry of global budgets each second (its clock)
    assert admit(api, "a").allowed
    api.update_budget(budget.id, BudgetChanges(is_active=True, expires_at=now - timedelta(seconds=1)))
    clock.now += 1.1
    assert admit(api, "a").allowed


def test_an_estimate_is_held_on_a_workspace_budget_until_settled(api: Api) -> None:
    api.create_budget(BudgetSpec(scope="workspace", period="daily", amount="1"))
    first = admit(api, "a", estimate=600_000_000)
    assert first.allowed
    assert not admit(api, "b", estimate=600_000_000).allowed
    settle(api, first, "0.1")
    api.flush()
    assert admit(api, "b", estimate=600_000_000).allowed


@pytest.mark.parametrize("scope", ["identity", "model", "provider", "workspace"])
def test_one_budget_per_scope_target_and_period(api: Api, scope: str) -> None:
    target = None if scope == "workspace" else "t"
    first = api.create_budget(BudgetSpec(scope=scope, target=target, period="daily", amount="1"))
    with pytest.raises(BudgetExists) as raised:
        api.create_budget(BudgetSpec(scope=scope, target=target, period="daily", amount="2"))
    assert raised.value.args[0] == first.id
    assert api.retrieve_budget(first.id).amount == Decimal("1")  # the first stays as it was
    api.create_budget(BudgetSpec(scope=scope, target=target, period="monthly", amount="2"))
    assert len(api.list_budgets().data) == 2


def _in_order(budgets: list[ScopedBudget], order: BudgetOrder) -> list[str]:
    """The documented orders: by id; created/updated newest first; expiry soonest first, never last. Ties by id."""
    def key(budget: ScopedBudget) -> tuple[Any, ...]:
        if order is BudgetOrder.CREATED_AT:
            return (-budget.created_at.timestamp(), budget.id)
        if order is BudgetOrder.UPDATED_AT:
            return (-budget.updated_at.timestamp(), budget.id)
        if order is BudgetOrder.EXPIRES_AT:
            return (budget.expires_at is None, budget.expires_at.timestamp() if budget.expires_at else 0, budget.id)
        return (budget.id,)

    return [budget.id for budget in sorted(budgets, key=key)]


@pytest.mark.parametrize("order", list(BudgetOrder))
def test_budgets_list_in_every_order_and_page_without_gap_or_repeat(api: Api, order: BudgetOrder) -> None:
    far = datetime(2999, 1, 1, tzinfo=UTC)
    made = [api.create_budget(BudgetSpec(scope="identity", target="u", period="monthly", amount="5")),
            api.create_budget(BudgetSpec(scope="model", target="m", period="daily", amount="1", expires_at=far)),
            api.create_budget(BudgetSpec(scope="provider", target="p", period="daily", amount="1",
                                         expires_at=far - timedelta(days=9))),
            api.create_budget(BudgetSpec(scope="workspace", period="yearly", amount="9")),
            api.create_budget(BudgetSpec(scope="identity", target="v", period="one_time", token_limit=3,
                                         expires_at=far - timedelta(days=9)))]
    api.update_budget(made[0].id, BudgetChanges(amount="6"))
    budgets = [api.retrieve_budget(budget.id) for budget in made]
    expected = _in_order(budgets, order)
    assert [budget.id for budget, _ in api.list_budgets(limit=200, order=order).data] == expected
    seen: list[str] = []
    after = None
    while True:
        page = api.list_budgets(limit=2, starting_after=after, order=order)
        seen += [budget.id for budget, _ in page.data]
        if not page.has_more:
            break
        after = page.data[-1][0].id
    assert seen == expected
    back = api.list_budgets(limit=2, ending_before=expected[3], order=order)
    assert [budget.id for budget, _ in back.data] == expected[1:3] and back.has_more
    identities = api.list_budgets(limit=200, order=order.value, scope_kinds=["identity"])
    assert [budget.id for budget, _ in identities.data] == [i for i in expected if i in (made[0].id, made[4].id)]
    if order is BudgetOrder.EXPIRES_AT:
        assert expected[:3] == [*sorted([made[2].id, made[4].id]), made[1].id]


def test_a_sorted_budget_list_refuses_a_cursor_naming_no_budget(api: Api) -> None:
    api.create_budget(BudgetSpec(scope="workspace", period="daily", amount="1"))
    with pytest.raises(BudgetNotFound):
        api.list_budgets(starting_after="bg_gone", order=BudgetOrder.UPDATED_AT)
    assert len(api.list_budgets(starting_after="bg_0").data) == 1  # by id, any id is a position


def test_a_scope_kind_without_budgets_lists_nothing(api: Api) -> None:
    api.create_budget(BudgetSpec(scope="workspace", period="daily", amount="1"))
    for kinds in (["project"], ["api_key"], ["model", "provider"]):
        assert api.list_budgets(scope_kinds=kinds).data == []


def test_identity_budgets_are_the_per_identity_budgets(api: Api) -> None:
    budget = api.create_budget(BudgetSpec(scope="identity", target="u", period="daily", amount="0.5"))
    assert [status.amount for status in api.budget_status("u")] == [Decimal("0.5")]
    api.set_budget("u", Budget(period=Period.DAILY, amount=Decimal("0.7")))
    assert api.retrieve_budget(budget.id).amount == Decimal("0.7")
    page = api.list_budgets(scope_kinds=["identity"], target="u")
    assert [item.id for item, _ in page.data] == [budget.id]
    ulid = budget.id.removeprefix("bi_").partition("_")[0]
    assert budget.id == f"bi_{ulid}_daily" and ulid == api.retrieve("u").id
    older = f"{ulid}.daily"  # the id an identity's budget showed in earlier versions is still read
    assert api.retrieve_budget(older).id == budget.id
    assert api.update_budget(older, BudgetChanges(amount="0.8")).amount == Decimal("0.8")
    assert api.budget_usage(older) == api.budget_usage(budget.id)
    api.reset_budget_consumption(older)
    api.delete_budget(budget.id)
    assert api.budget_status("u") == []
    with pytest.raises(BudgetNotFound):
        api.retrieve_budget(budget.id)


class Notifier:
    """A notifier (a callable one) of a store's ``notifiers``: the alerts delivered to it."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def received(self, api: Api) -> list[dict[str, Any]]:
        """What reached it once the store delivered everything its settlements fired."""
        assert api.store.alerts is not None and api.store.alerts.drain(10)
        return list(self.events)


def alerting(api: Api) -> tuple[Api, Notifier]:
    """``api`` over a store whose alerts go to notifier "ops"."""
    ops = Notifier()
    return api.built_with(notifiers={"ops": ops}), ops


def test_a_threshold_alert_fires_once_per_period(api: Api) -> None:
    api, ops = alerting(api)
    budget = api.create_budget(BudgetSpec(scope="workspace", period="monthly", amount="1",
                                          alerts=[Alert(threshold_percent=50, notifier_ids=("ops",))]))
    spend(api, "a", "0.3", "m")
    assert ops.received(api) == []
    spend(api, "b", "0.3", "m")
    spend(api, "a", "0.3", "m")
    events = ops.received(api)
    assert len(events) == 1
    event = events[0]
    assert event["type"] == "budget.threshold_reached" and event["budget_id"] == budget.id
    assert event["threshold_percent"] == 50 and event["consumed"] == "0.60" and event["limit"] == "1.00"


# -- identity budgets: tokens, one-time, requests per minute, alerts ----------------------------------
def test_an_identity_token_limit_blocks_that_identity_at_the_limit(api: Api) -> None:
    budget = api.create_budget(BudgetSpec(scope="identity", target="u", period="daily", token_limit=10))
    spend(api, "u", "0", "m", tokens=9)
    assert admit(api, "u").allowed
    spend(api, "u", "0", "m", tokens=1)
    blocked = admit(api, "u")
    assert not blocked.allowed and blocked.blocked.budget_id == budget.id and blocked.blocked.scope == "identity"
    assert blocked.blocked.token_limit == 10 and blocked.blocked.tokens == 10
    assert admit(api, "v").allowed
    assert api.budget_usage(budget.id).tokens == 10
    api.reset_budget_consumption(budget.id)
    assert admit(api, "u").allowed and api.budget_usage(budget.id).tokens == 0


@unleased
def test_an_identity_one_time_budget_never_resets(api: Api, now: datetime) -> None:
    budget = api.create_budget(BudgetSpec(scope="identity", target="u", period="one_time", amount="0.10"))
    spend(api, "u", "0.10", "m")
    blocked = admit(api, "u")
    assert not blocked.allowed and blocked.blocked.budget_id == budget.id and blocked.blocked.resets_at is None
    assert not admit(api, "u", now=now + timedelta(days=400)).allowed
    assert api.budget_usage(budget.id).amount == Decimal("0.1")
    assert api.budget_status("u") == []  # the per-identity view shows calendar budgets only
    api.reset_budget_consumption(budget.id)
    assert admit(api, "u").allowed and api.budget_usage(budget.id).amount == 0


def test_an_estimate_is_held_on_an_identity_one_time_budget_until_settled(api: Api) -> None:
    api.create_budget(BudgetSpec(scope="identity", target="u", period="one_time", amount="1"))
    first = admit(api, "u", estimate=600_000_000)
    assert first.allowed and first.reservation is not None
    assert not admit(api, "u", estimate=600_000_000).allowed
    settle(api, first, "0.1")
    api.flush()
    assert admit(api, "u", estimate=600_000_000).allowed


def test_identity_requests_per_minute_block_the_next_request(api: Api) -> None:
    budget = api.create_budget(BudgetSpec(scope="identity", target="u", period="daily", requests_per_minute=2))
    assert admit(api, "u").allowed and admit(api, "u").allowed
    blocked = admit(api, "u")
    assert not blocked.allowed and blocked.blocked.budget_id == budget.id and blocked.blocked.retry_after == 60
    assert admit(api, "v").allowed
    assert api.budget_usage(budget.id).requests == 2  # the refused request is not an admission


def test_requests_per_minute_count_the_current_10_second_bucket_and_the_five_before(api: Api) -> None:
    api.create_budget(BudgetSpec(scope="identity", target="u", period="daily", requests_per_minute=3))
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    start = datetime.fromtimestamp(now_ms // 10_000 * 10, UTC)  # a bucket's first instant
    for _ in range(3):
        assert admit(api, "u", now=start + timedelta(seconds=1)).allowed
    assert not admit(api, "u", now=start + timedelta(seconds=59.9)).allowed  # the sixth bucket: all three count
    assert admit(api, "u", now=start + timedelta(seconds=60)).allowed  # the seventh: the first bucket left
    assert admit(api, "u", now=start + timedelta(seconds=61)).allowed
    assert admit(api, "u", now=start + timedelta(seconds=69)).allowed
    assert not admit(api, "u", now=start + timedelta(seconds=69.9)).allowed  # three in the last six buckets
    api.create_budget(BudgetSpec(scope="identity", target="w", period="daily", requests_per_minute=3))
    assert admit(api, "w", now=start + timedelta(seconds=1)).allowed
    assert admit(api, "w", now=start + timedelta(seconds=51)).allowed
    assert admit(api, "w", now=start + timedelta(seconds=51)).allowed
    assert admit(api, "w", now=start + timedelta(seconds=41)).allowed  # a later bucket counts for no earlier instant


@unleased
def test_identity_budget_usage_reports_tokens_and_requests(api: Api) -> None:
    budget = api.create_budget(BudgetSpec(scope="identity", target="u", period="monthly", amount="5"))
    spend(api, "u", "0.25", "m", tokens=7)
    spend(api, "u", "0.25", "m", tokens=3)
    spend(api, "v", "1", "m", tokens=100)
    usage = api.budget_usage(budget.id)
    assert (usage.amount, usage.tokens, usage.requests) == (Decimal("0.5"), 10, 2)
    (listed,) = api.list_budgets(scope_kinds=["identity"], target="u").data
    assert dataclasses.replace(listed[1], forecast=None) == dataclasses.replace(usage, forecast=None)


def test_an_identity_threshold_alert_fires_once_per_period(api: Api) -> None:
    ops, other = Notifier(), Notifier()
    api = api.built_with(notifiers={"ops": ops, "other": other})
    budget = api.create_budget(BudgetSpec(scope="identity", target="u", period="monthly", amount="1",
                                          alerts=[Alert(threshold_percent=50, notifier_ids=("ops",))]))
    spend(api, "u", "0.3", "m")
    spend(api, "v", "0.9", "m")
    assert ops.received(api) == []
    spend(api, "u", "0.3", "m")
    spend(api, "u", "0.3", "m")
    events = ops.received(api)
    assert len(events) == 1 and other.received(api) == []  # to the notifiers the alert names only
    event = events[0]
    assert event["budget_id"] == budget.id and event["scope"] == {"kind": "identity", "target": "u"}
    assert event["threshold_percent"] == 50 and event["consumed"] == "0.60" and event["limit"] == "1.00"
    assert event["identity"] == "u" and event["dimension"] == "cost" and "notifier_ids" not in event


def test_an_identity_alert_fires_again_after_a_reset(api: Api) -> None:
    api, ops = alerting(api)
    budget = api.create_budget(BudgetSpec(scope="identity", target="u", period="one_time", amount="1",
                                          alerts=[Alert(threshold_percent=80, notifier_ids=("ops",))]))
    spend(api, "u", "0.8", "m")
    spend(api, "u", "0.1", "m")
    assert [(e["dimension"], e["consumed"], e["limit"]) for e in ops.received(api)] == [("cost", "0.80", "1.00")]
    api.reset_budget_consumption(budget.id)
    spend(api, "u", "0.9", "m")
    events = ops.received(api)
    assert len(events) == 2 and events[1]["consumed"] == "0.90"


def test_an_alert_to_a_url_is_a_post_signed_with_the_notifier_secret(api: Api) -> None:
    with alert_receiver() as (url, received):
        api = api.built_with(notifiers={"ops": url}, notifier_secret="alert-secret")
        budget = api.create_budget(BudgetSpec(scope="workspace", period="monthly", amount="1",
                                              alerts=[Alert(threshold_percent=50, notifier_ids=("ops",))]))
        spend(api, "u", "0.5", "m")
        assert api.store.alerts is not None and api.store.alerts.drain(10)
    ((event, signature),) = received
    assert event["type"] == "budget.threshold_reached" and event["budget_id"] == budget.id
    body = json.dumps(event, separators=(",", ":"))
    assert signature_problem("alert-secret", body, signature, time.time()) is None
    assert signature_problem("another-secret", body, signature, time.time()) is not None


def test_invalid_store_options_are_refused_where_the_store_is_built(api: Api) -> None:
    with pytest.raises(InvalidOption) as raised:
        api.built_with(providers={"gpt-4o": 4}, notifiers={"ops": "ftp://hooks"}, notifier_secret="")
    assert [(problem.option, problem.where) for problem in raised.value.problems] == [
        ("providers", ""), ("notifiers", "['ops']"), ("notifier_secret", "")]
    assert "notifiers['ops']: an http(s) URL or a callable" in str(raised.value)

