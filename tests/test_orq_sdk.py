"""orq's official SDK (orq-ai-sdk) drives the admin API unchanged: every ``orq.identities.*`` method,
sync and async, against a real uvicorn server (standalone and mounted), on every store kind."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anyio.from_thread
import pytest
from orq_ai_sdk import Orq, models
from starlette.applications import Starlette
from starlette.routing import Mount

from browser import live_server
from conftest import MakeStore
from identity_middleware.admin import create_admin_app
from identity_middleware.core.models import Budget
from identity_middleware.stores import Store
from sdk_calls import SdkCalls

TOKEN = "orq-admin-token"


Identities = SdkCalls  # ``orq.identities``, sync or async


@pytest.fixture(params=["standalone", "mounted"])
def server(request: pytest.FixtureRequest, store_kind: str, make_store: MakeStore) -> Iterator[tuple[str, Store]]:
    """``(server_url, store)``: the admin app under uvicorn, alone or at ``/admin`` of a bigger app."""
    store = make_store(store_kind)
    admin = create_admin_app(store, token=TOKEN, workspace_id="ws_test")
    app = admin if request.param == "standalone" else Starlette(routes=[Mount("/admin", app=admin)])
    with live_server(app) as base:
        yield (base if request.param == "standalone" else f"{base}/admin"), store


@pytest.fixture(params=["sync", "async"])
def identities(request: pytest.FixtureRequest, server: tuple[str, Store]) -> Iterator[Identities]:
    orq = Orq(api_key=TOKEN, server_url=server[0])
    if request.param == "sync":
        yield Identities(orq.identities, None)
        return
    with anyio.from_thread.start_blocking_portal() as portal:
        yield Identities(orq.identities, portal)


def _body(error: models.OrqError) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(error.body)
    return body


def test_create_round_trips_every_field(identities: Identities) -> None:
    created = identities.create(external_id="user_1", display_name="Jane", email="jane@example.com",
                                avatar_url="https://x.test/a.png", tags=["premium", "beta"],
                                metadata={"plan": "pro", "seats": 3})
    identity = created.result.identity
    assert isinstance(identity, models.Identity) and len(identity.id) == 26
    assert (identity.external_id, identity.workspace_id, identity.display_name, identity.email) == (
        "user_1", "ws_test", "Jane", "jane@example.com")
    assert identity.avatar_url == "https://x.test/a.png" and identity.tags == ["premium", "beta"]
    assert identity.metadata == {"plan": "pro", "seats": 3}
    assert identity.created.endswith("Z") and identity.created == identity.updated
    assert identity.metrics is None and identity.budget is None


def test_retrieve_by_id_or_external_id_with_metrics_and_budget(identities: Identities,
                                                               server: tuple[str, Store]) -> None:
    store = server[1]
    made = identities.create(external_id="user_2").result.identity
    store.record("user_2", cost=Decimal("0.0000001"), input_tokens=3, output_tokens=4)
    store.record("user_2", cost=Decimal("0.25"), error=True)
    store.set_budget("user_2", Budget(period="daily", amount=Decimal("1.5")))
    store.set_budget("user_2", Budget(period="monthly", amount=Decimal("10")))
    by_id = identities.retrieve(id=made.id).identity
    assert by_id == made
    full = identities.retrieve(id="user_2", include_metrics=True, include_budget=True).identity
    assert full.id == made.id and full.metrics is not None and full.budget is not None
    assert full.metrics.total_cost == 0.2500001 and full.metrics.total_tokens == 7
    assert full.metrics.total_requests == 2 and full.metrics.error_rate == 0.5
    budget = full.budget
    assert budget.budget_id == f"bi_{made.id}_monthly"  # the identity's budget that resets last
    assert budget.limits.period == "BUDGET_PERIOD_MONTHLY" and budget.limits.amount == 10
    assert budget.scope is not None and budget.scope.identity is not None
    assert budget.scope.identity.identity_external_id == "user_2" and budget.is_active is True


def test_update_replaces_given_fields_and_empty_values_clear(identities: Identities) -> None:
    made = identities.create(external_id="user_3", display_name="Old", email="old@example.com",
                             avatar_url="https://x.test/o.png", tags=["a"], metadata={"k": 1}).result.identity
    renamed = identities.update(id="user_3", display_name="New", metadata={"k": 2}).identity
    assert (renamed.display_name, renamed.email, renamed.tags, renamed.metadata) == (
        "New", "old@example.com", ["a"], {"k": 2})
    assert renamed.id == made.id and renamed.updated >= made.updated
    cleared = identities.update(id=made.id, email="", display_name="", avatar_url="", tags=[]).identity
    assert (cleared.email, cleared.display_name, cleared.avatar_url, cleared.tags) == (None, None, None, [])
    assert identities.retrieve(id="user_3").identity == cleared


def test_delete_answers_an_empty_object_and_the_identity_is_gone(identities: Identities) -> None:
    made = identities.create(external_id="user_4").result.identity
    assert isinstance(identities.delete(id=made.id), models.DeleteIdentityResponse)
    with pytest.raises(models.ErrorResponse) as raised:
        identities.retrieve(id="user_4")
    assert raised.value.status_code == 404 and raised.value.data.code == 404
    assert _body(raised.value)["error"]["type"] == "not_found"


def test_list_pages_filters_sorts_and_includes(identities: Identities, server: tuple[str, Store]) -> None:
    for n, (name, tags) in enumerate([("Carol", ["x", "y"]), ("alice", ["x"]), (None, ["y", "x"]), ("Bob", [])]):
        identities.create(external_id=f"u{n}", display_name=name, tags=tags)
    server[1].record("u1", cost=Decimal("0.5"))
    first = identities.list(limit=2)
    assert isinstance(first, models.ListIdentitiesResponse) and first.object == "list" and first.has_more
    second = identities.list(limit=2, starting_after=first.data[-1].id)
    assert [i.external_id for i in first.data + second.data] == ["u0", "u1", "u2", "u3"] and not second.has_more
    back = identities.list(limit=2, ending_before=second.data[0].id)
    assert [i.external_id for i in back.data] == ["u0", "u1"] and not back.has_more
    assert [i.external_id for i in identities.list(filter_by_tags=["x", "y"]).data] == ["u0", "u2"]
    assert [i.external_id for i in identities.list(search="ALI").data] == ["u1"]
    by_name = identities.list(sort_by="IDENTITY_SORT_FIELD_DISPLAY_NAME")
    assert [i.display_name for i in by_name.data] == ["alice", "Bob", "Carol", None]
    identities.update(id="u2", metadata={"touched": True})
    assert identities.list(sort_by="IDENTITY_SORT_FIELD_UPDATED").data[0].external_id == "u2"
    server[1].set_budget("u1", Budget(period="weekly", amount="2"))
    listed = identities.list(include_metrics=True, include_budget=True, filter_by_tags=["x"]).data
    assert [i.external_id for i in listed] == ["u0", "u1", "u2"]
    assert listed[1].metrics is not None and listed[1].metrics.total_cost == 0.5
    assert listed[1].budget is not None and listed[1].budget.limits.period == "BUDGET_PERIOD_WEEKLY"
    assert listed[0].budget is None and listed[0].metrics is not None and listed[0].metrics.total_requests == 0


def test_errors_parse_into_the_sdk_error_response_and_keep_our_typed_error(server: tuple[str, Store]) -> None:
    wrong = Orq(api_key="wrong", server_url=server[0])
    for call in (lambda: wrong.identities.list(), lambda: wrong.identities.create(external_id="x"),
                 lambda: wrong.identities.retrieve(id="x"), lambda: wrong.identities.update(id="x", email=""),
                 lambda: wrong.identities.delete(id="x")):
        with pytest.raises(models.ErrorResponse) as raised:
            call()
        assert raised.value.status_code == 401 and raised.value.data.code == 401
        assert raised.value.data.message == _body(raised.value)["error"]["message"]
        assert _body(raised.value)["error"]["type"] == "unauthorized"
    orq = Orq(api_key=TOKEN, server_url=server[0])
    orq.identities.create(external_id="dup")
    with pytest.raises(models.APIDefaultError) as conflict:  # the SDK declares no 409: its generic error, same body
        orq.identities.create(external_id="dup")
    assert conflict.value.status_code == 409
    assert _body(conflict.value)["error"] == {
        "type": "identity_exists", "message": "An identity with external_id 'dup' already exists.", "identity": "dup"}
