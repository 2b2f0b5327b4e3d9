"""identity_middleware.django: the middleware, @budgeted, settings and system checks, through Django's clients."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from typing import Any, TypeVar

import pytest

import django_project

django_project.setup()

from django.core.checks import run_checks  # noqa: E402  (Django is configured above)
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.test import AsyncClient, Client, override_settings  # noqa: E402

from django_project.auth import session_cookie  # noqa: E402
from django_project.settings import AUTH, IDENTITY, SITE  # noqa: E402
from identity_middleware import Budget, IdentityInput  # noqa: E402
from identity_middleware.config import Config, InvalidOption, Problem  # noqa: E402
from identity_middleware.core.budgets import Alert, BudgetSpec  # noqa: E402
from identity_middleware.django.conf import store_options  # noqa: E402
from identity_middleware.stores import MemoryStore, Store  # noqa: E402
from identity_middleware.stores.options import moved  # noqa: E402

KINDS = ("memory", "redis")
Configure = Callable[..., None]


@pytest.fixture(scope="module", autouse=True)
def site() -> Iterator[None]:
    with override_settings(**SITE):
        yield


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, make_store: Callable[..., Store]) -> Store:
    return make_store(str(request.param))


@pytest.fixture
def configure(store: Store) -> Iterator[Configure]:
    """``configure(**settings)``: override ``IDENTITY_MIDDLEWARE`` (and others) for this test, on ``store``."""
    applied: list[override_settings] = []

    def apply(middleware: list[str] | None = None, **options: Any) -> None:
        extra: dict[str, Any] = {} if middleware is None else {"MIDDLEWARE": middleware}
        override = override_settings(IDENTITY_MIDDLEWARE={"STORE": store, **options}, **extra)
        override.enable()
        applied.append(override)

    apply()
    yield apply
    for override in reversed(applied):
        override.disable()


C = TypeVar("C", Client, AsyncClient)


def logged_in(client: C, user_id: int = 1) -> C:
    client.cookies["sessionid"] = session_cookie(user_id)
    return client


def post_json(client: Client, path: str, data: Any, **headers: str) -> Any:
    return client.post(path, data=json.dumps(data), content_type="application/json", headers=headers)


def budget(store: Store, external_id: str, amount: str, spent: str = "0", period: str = "daily") -> None:
    store.create(IdentityInput(id=external_id))
    store.set_budget(external_id, Budget(period=period, amount=Decimal(amount)))
    if Decimal(spent):
        store.record(external_id, cost=Decimal(spent))


def error_of(response: Any) -> dict[str, Any]:
    assert response["Content-Type"] == "application/json"
    return dict(json.loads(response.content)["error"])


# -- resolution -------------------------------------------------------------------------------------
def test_body_beats_header_beats_request_user_beats_resolver(configure: Configure, store: Store) -> None:
    configure(RESOLVER=lambda request: "from-resolver")
    client = logged_in(Client())
    body = {"identity": {"id": "from-body", "display_name": "B"}, "prompt": "hi"}
    response = post_json(client, "/whoami", body, X_Identity_Id="from-header")
    assert response.json() == {"identity": "from-body", "request_identity": "from-body", "body": json.dumps(body)}
    assert client.get("/whoami", headers={"X-Identity-Id": "from-header"}).json()["identity"] == "from-header"
    assert client.get("/whoami").json()["identity"] == "alice"
    assert Client().get("/whoami").json()["identity"] == "from-resolver"
    assert store.retrieve("from-body").display_name == "B"


def test_auth_only_sources_charge_the_logged_in_user(configure: Configure, store: Store) -> None:
    configure(SOURCES=["auth"])
    store.create(IdentityInput(id="bob", display_name="Bob"))
    body = {"identity": {"id": "bob", "display_name": "Not Bob"}}
    assert post_json(logged_in(Client()), "/whoami", body, X_Identity_Id="bob").json()["identity"] == "alice"
    assert store.retrieve("bob").display_name == "Bob"


@pytest.mark.anyio
async def test_may_act_for_refuses_naming_someone_else_sync_and_async(configure: Configure, store: Store) -> None:
    configure(MAY_ACT_FOR=lambda principal, claimed: claimed == "team-1")
    refused = logged_in(Client()).get("/whoami", headers={"X-Identity-Id": "bob"})
    assert refused.status_code == 403 and error_of(refused)["type"] == "identity_forbidden"
    arefused = await logged_in(AsyncClient()).get("/awhoami", headers={"X-Identity-Id": "bob"})
    assert arefused.status_code == 403
    allowed = await logged_in(AsyncClient()).get("/awhoami", headers={"X-Identity-Id": "team-1"})
    assert allowed.json()["identity"] == "team-1"


@pytest.mark.anyio
async def test_async_views_resolve_the_user_without_blocking_and_see_the_identity(configure: Configure) -> None:
    client = logged_in(AsyncClient(), 2)
    assert (await client.get("/awhoami")).json()["identity"] == "bob"
    response = await client.get("/awhoami", headers={"X-Identity-Id": "async-header"})
    assert response.json()["request_identity"] == "async-header"
    # a sync view behind the async handler runs in a worker thread and still sees it
    assert (await client.get("/whoami")).json()["identity"] == "bob"


def test_invalid_identity_is_400_naming_the_field(configure: Configure) -> None:
    response = post_json(Client(), "/whoami", {"identity": {"id": "x", "tags": "not-a-list"}})
    assert response.status_code == 400
    assert error_of(response)["type"] == "invalid_identity" and error_of(response)["field"] == "tags"
    response = Client().get("/whoami", headers={"X-Identity-Id": "a" * 300})
    assert (response.status_code, error_of(response)["field"]) == (400, "X-Identity-Id")


def test_no_identity_passes_untracked_unless_required(configure: Configure) -> None:
    assert Client().get("/whoami").json() == {"identity": None, "request_identity": None, "body": None}
    configure(REQUIRE_IDENTITY=True)
    response = Client().get("/whoami")
    assert (response.status_code, error_of(response)["type"]) == (401, "identity_required")


# -- budgets and metering -------------------------------------------------------------------------------
def test_spend_at_the_budget_blocks_with_429_and_retry_after(configure: Configure, store: Store) -> None:
    budget(store, "capped", "0.10", spent="0.09")
    client = Client(headers={"X-Identity-Id": "capped"})
    assert client.get("/whoami?cost=0.01").status_code == 200  # now exactly at the limit
    response = client.get("/whoami")
    assert response.status_code == 429 and int(response["Retry-After"]) > 0
    error = error_of(response)
    assert (error["type"], error["identity"], error["amount"], error["spent"]) == (
        "budget_exceeded", "capped", "0.10", "0.10")


def test_usage_is_summed_exactly_and_requests_counted_once(configure: Configure, store: Store) -> None:
    client = Client(headers={"X-Identity-Id": "exact"})
    for _ in range(20):
        client.get("/whoami?cost=0.0000001")
    metrics = store.metrics("exact")
    assert (metrics.total_cost, metrics.total_requests, metrics.total_tokens) == (Decimal("0.000002"), 20, 100)


@pytest.mark.anyio
async def test_async_requests_are_metered_exactly(configure: Configure, store: Store) -> None:
    client = AsyncClient()  # (its ``headers=`` default does not reach ASGI requests in Django 5.2)
    for _ in range(3):
        await client.get("/awhoami?cost=0.1", headers={"X-Identity-Id": "aexact"})
    metrics = await store.ametrics("aexact")
    assert (metrics.total_cost, metrics.total_requests, metrics.total_errors) == (Decimal("0.3"), 3, 0)


def test_error_status_and_exceptions_count_an_error_once(configure: Configure, store: Store) -> None:
    client = Client(raise_request_exception=False, headers={"X-Identity-Id": "oops"})
    assert client.get("/whoami?status=404&cost=0.01").status_code == 404
    assert client.get("/boom").status_code == 500
    metrics = store.metrics("oops")
    assert (metrics.total_requests, metrics.total_errors, metrics.total_cost) == (2, 2, Decimal("0.03"))


def test_a_streaming_response_is_metered_while_streamed_and_settled_once(configure: Configure, store: Store) -> None:
    response: Any = Client(headers={"X-Identity-Id": "streamer"}).get("/stream")
    assert store.metrics("streamer").total_requests == 0  # not before the content is consumed
    assert b"".join(response.streaming_content) == b"".join(f"{i}:streamer\n".encode() for i in range(4))
    response.close()
    metrics = store.metrics("streamer")
    assert (metrics.total_requests, metrics.total_cost, metrics.output_tokens) == (1, Decimal("0.004"), 4)


@pytest.mark.anyio
async def test_an_async_streaming_response_is_settled_when_exhausted(configure: Configure, store: Store) -> None:
    response: Any = await AsyncClient().get("/astream", headers={"X-Identity-Id": "astreamer"})
    chunks = [chunk async for chunk in response.streaming_content]
    assert b"".join(chunks).count(b":astreamer") == 4
    metrics = await store.ametrics("astreamer")
    assert (metrics.total_requests, metrics.total_cost) == (1, Decimal("0.004"))


# -- streams a view left open: ended by its request, before it settles ---------------------------------------
@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    from django_project import views
    from llm_servers import ProviderServer

    with ProviderServer() as server:
        views.PROVIDER_URL = server.url
        yield server.url
    views.abandoned.clear()


def test_an_llm_stream_a_sync_view_left_open_is_charged_to_its_request_once(
        configure: Configure, store: Store, provider: str) -> None:
    from django_project import views

    assert Client(headers={"X-Identity-Id": "leaver"}).get("/abandon").status_code == 200
    assert views.abandoned  # still open after the request: its request ended it
    views.abandoned.clear()
    store.flush()
    metrics = store.metrics("leaver")
    assert (metrics.total_cost, metrics.total_tokens, metrics.total_requests) == (Decimal("0.000285"), 1500, 1)


@pytest.mark.anyio
async def test_an_llm_stream_an_async_view_left_with_break_is_charged_to_its_request(
        configure: Configure, store: Store, provider: str) -> None:
    from django_project import views

    assert (await AsyncClient().get("/aabandon", headers={"X-Identity-Id": "abreaker"})).status_code == 200
    await views.clients.pop().close()  # type: ignore[attr-defined]
    await store.aflush()
    metrics = await store.ametrics("abreaker")
    assert (metrics.total_cost, metrics.total_tokens, metrics.total_requests) == (Decimal("0.001875"), 1370, 1)


# -- @budgeted ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/chat", "/chat-view"])
def test_the_decorated_estimate_is_reserved_at_admission_in_one_store_call(
        configure: Configure, store: Store, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    budget(store, "est", "1.00", spent="0.60", period="monthly")
    client = Client(headers={"X-Identity-Id": "est"})
    assert client.get("/whoami").status_code == 200  # 0.60 < 1.00: an undecorated view passes
    admissions: list[object] = []
    admit = store.admit

    def counted(request: Any) -> Any:
        admissions.append(request)
        return admit(request)

    monkeypatch.setattr(store, "admit", counted)
    response = client.post(path)
    assert response.status_code == 429 and error_of(response)["period"] == "monthly"
    assert len(admissions) == 1  # the estimate rode on the admission itself
    store.reset_budget("est", "monthly")
    assert client.post(path).status_code == 200


def test_a_decorated_view_requires_an_identity(configure: Configure) -> None:
    response = Client().get("/needs-identity")
    assert (response.status_code, error_of(response)["type"]) == (401, "identity_required")


@pytest.mark.parametrize("path", ["/chat", "/achat"])
def test_the_decorator_runs_the_whole_flow_without_the_middleware(
        configure: Configure, store: Store, path: str) -> None:
    configure(middleware=[])
    client = Client(headers={"X-Identity-Id": "solo"})
    assert client.get(path + "?cost=0.25").json()["identity"] == "solo"
    assert store.metrics("solo").total_cost == Decimal("0.25")
    budget(store, "poor", "0.40")
    response = Client(headers={"X-Identity-Id": "poor"}).get(path)
    assert response.status_code == 429  # the 0.50 estimate does not fit a 0.40 budget
    assert Client().get(path).status_code == 401


@pytest.mark.anyio
async def test_the_async_decorator_runs_the_flow_without_the_middleware(configure: Configure, store: Store) -> None:
    configure(middleware=[])
    response = await AsyncClient().get("/achat?cost=0.05", headers={"X-Identity-Id": "asolo"})
    assert response.json()["request_identity"] == "asolo"
    assert (await store.ametrics("asolo")).total_requests == 1


# -- settings ---------------------------------------------------------------------------------------------
def test_override_settings_switches_the_options_in_process(configure: Configure) -> None:
    client = Client(headers={"X-Team": "team-a"})
    assert client.get("/whoami").json()["identity"] is None
    configure(HEADER_NAMES=["X-Team"], DEFAULT_BUDGETS={"daily": "0.01"})
    assert client.get("/whoami?cost=0.01").json()["identity"] == "team-a"
    assert client.get("/whoami").status_code == 429  # the default budget of the new identity
    configure(REQUIRE_IDENTITY=True)
    assert Client().get("/whoami").status_code == 401


def test_rate_limits_from_settings(configure: Configure) -> None:
    configure(RATE_LIMIT="2/minute", RATE_LIMITS={"vip": "5/minute"})
    client = Client(headers={"X-Identity-Id": "limited"})
    assert [client.get("/whoami").status_code for _ in range(3)] == [200, 200, 429]
    vip = Client(headers={"X-Identity-Id": "vip"})
    assert [vip.get("/whoami").status_code for _ in range(3)] == [200, 200, 200]


# -- system checks ----------------------------------------------------------------------------------------
def check_ids(**overrides: Any) -> set[str]:
    with override_settings(**overrides):
        return {message.id or "" for message in run_checks(tags=["identity_middleware"])}


def test_a_good_configuration_passes_the_checks(redis_url: str) -> None:
    assert check_ids(IDENTITY_MIDDLEWARE={
        "STORE_URL": redis_url, "DEFAULT_BUDGETS": {"daily": "0.20", "monthly": 5},
        "RATE_LIMIT": "100/minute", "RATE_LIMITS": {"vip": "10/second;1000/day"}, "ESTIMATES": {"/llm": "0.02"},
    }) == set()


def test_the_list_form_of_default_budgets_passes_the_checks() -> None:
    assert check_ids(IDENTITY_MIDDLEWARE={"DEFAULT_BUDGETS": [{"period": "daily", "amount": "0.20"}]}) == set()


@pytest.mark.parametrize("config", [
    {"DEFAULT_BUDGETS": {"daily": "ten dollars", "hourly": "1"}, "RATE_LIMIT": "lots"},
    {"SOURCES": ["cookie"], "MAX_BODY_SIZE": -1, "ESTIMATES": {"/llm": "x"}},
    {"ON_STORE_ERROR": "maybe", "REQUIRE_IDENTITY": "yes"},
])
def test_the_checks_report_what_config_refuses(config: dict[str, Any]) -> None:
    with override_settings(IDENTITY_MIDDLEWARE=config):
        reported = {message.msg for message in run_checks(tags=["identity_middleware"])}
    with pytest.raises(InvalidOption) as raised:
        Config.from_settings(config)
    assert reported == {f"{problem.option.upper()}{problem.where}: {problem.message}"
                        for problem in raised.value.problems}
    assert len(reported) >= 2


def _messages(config: dict[str, Any]) -> set[str]:
    with override_settings(IDENTITY_MIDDLEWARE=config):
        return {message.msg for message in run_checks(tags=["identity_middleware"])}


def _refused_at_runtime(config: dict[str, Any]) -> str:
    from identity_middleware.django.conf import current_flow

    with override_settings(IDENTITY_MIDDLEWARE=config), pytest.raises(ImproperlyConfigured) as raised:
        current_flow()
    return str(raised.value)


def _shown(problems: Iterable[Problem]) -> set[str]:
    return {f"{problem.option.upper()}{problem.where}: {problem.message}" for problem in problems}


def test_the_checks_report_what_the_store_built_from_the_settings_refuses() -> None:
    config = {"STORE_URL": "memory://", "PROVIDERS": {"gpt-4o": 4}, "NOTIFIERS": {"ops": "ftp://x"}}
    with pytest.raises(InvalidOption) as raised:
        MemoryStore(**store_options(config))
    assert _messages(config) == _shown(raised.value.problems) and len(raised.value.problems) == 2
    refused = _refused_at_runtime(config)
    assert all(str(problem) in refused for problem in raised.value.problems)


def test_the_store_options_beside_a_store_of_the_projects_are_refused_by_the_checks_and_at_runtime() -> None:
    config = {"STORE": MemoryStore(), "PROVIDERS": {"gpt-4o": "openai"}, "NOTIFIER_SECRET": "s"}
    expected = [moved("providers"), moved("notifier_secret")]
    assert _messages(config) == _shown(expected)
    assert check_ids(IDENTITY_MIDDLEWARE=config) == {"identity_middleware.E009"}
    refused = _refused_at_runtime(config)
    assert all(str(problem) in refused for problem in expected)
    assert "MemoryStore(providers=...)" in refused


def test_the_store_built_from_the_settings_takes_the_store_options() -> None:
    from identity_middleware.django import get_store
    from identity_middleware.django.conf import close_stores

    received: list[dict[str, Any]] = []
    config = {"STORE_URL": "memory://", "PROVIDERS": {"gpt-4o": "openai"}, "NOTIFIERS": {"ops": received.append}}
    try:
        with override_settings(IDENTITY_MIDDLEWARE=config):
            assert _messages(config) == set()
            store = get_store()
            store.create_budget(BudgetSpec(scope="provider", target="openai", period="daily", amount="0.01",
                                           alerts=[Alert(threshold_percent=100, notifier_ids=("ops",))]))
            store.create(IdentityInput(id="u"))
            store.record("u", cost="0.01", model="gpt-4o")
            assert not store.check("v", model="gpt-4o").allowed and store.check("v", model="claude-3").allowed
            assert store.alerts is not None and store.alerts.drain(10) and len(received) == 1
            assert Client(headers={"X-Identity-Id": "v"}).post(
                "/whoami", data=json.dumps({"model": "gpt-4o"}), content_type="application/json").status_code == 429
    finally:
        close_stores()


@pytest.mark.parametrize(("config", "expected"), [
    ({"STORE_URL": "mysql://db/0"}, "identity_middleware.E002"),
    ({"DEFAULT_BUDGETS": {"hourly": "1.00"}}, "identity_middleware.E003"),
    ({"DEFAULT_BUDGETS": {"daily": "0"}}, "identity_middleware.E004"),
    ({"DEFAULT_BUDGETS": {"daily": "-1"}}, "identity_middleware.E004"),
    ({"RATE_LIMIT": "lots"}, "identity_middleware.E005"),
    ({"RATE_LIMITS": {"vip": "100 per fortnight"}}, "identity_middleware.E005"),
    ({"ON_STORE_ERROR": "maybe"}, "identity_middleware.E006"),
    ({"RESOLVER": "no.such.module.resolve"}, "identity_middleware.E007"),
    ({"STORE_ULR": "memory://"}, "identity_middleware.W001"),
])
def test_misconfiguration_is_caught_by_the_checks(config: dict[str, Any], expected: str) -> None:
    assert check_ids(IDENTITY_MIDDLEWARE=config) == {expected}


def test_the_middleware_before_authentication_is_caught_by_the_checks() -> None:
    assert "identity_middleware.E008" in check_ids(MIDDLEWARE=[IDENTITY, AUTH])
    assert "identity_middleware.E008" not in check_ids(MIDDLEWARE=[AUTH, IDENTITY])


# -- request bodies ---------------------------------------------------------------------------------------
def test_non_json_and_oversized_bodies_are_not_read_for_the_identity(configure: Configure) -> None:
    configure(MAX_BODY_SIZE=100)
    client = Client(headers={"X-Identity-Id": "hdr"})
    form = client.post("/whoami", data={"identity": "form-field"})
    assert form.json()["identity"] == "hdr"
    big = {"identity": {"id": "body-id"}, "pad": "x" * 200}
    response = post_json(client, "/whoami", big)
    assert response.json()["identity"] == "hdr" and response.json()["body"] == json.dumps(big)


# -- operators ----------------------------------------------------------------------------------------------
def test_the_identities_command_sets_lists_and_resets_budgets(configure: Configure, store: Store) -> None:
    from django.core.management import call_command

    from identity_middleware.django import get_store

    assert get_store() is store
    Client(headers={"X-Identity-Id": "cmd"}).get("/whoami?cost=0.05")
    out = io.StringIO()
    call_command("identities", "budget", "set", "cmd", "daily", "1.00", stdout=out)
    assert out.getvalue().startswith("cmd daily: spent 0.05 of 1.00 USD (5%)")
    listing = io.StringIO()
    call_command("identities", "list", stdout=listing)
    assert listing.getvalue().splitlines()[1].split()[:4] == ["cmd", "1", "5", "0.05"]  # requests, tokens, cost
    call_command("identities", "budget", "reset", "cmd", "daily", stdout=out)
    assert store.budget_status("cmd")[0].spent == 0


def test_a_mark_the_middleware_could_not_see_is_applied_by_the_view_itself(
        configure: Configure, store: Store) -> None:
    budget(store, "late", "1.00", spent="0.60")
    response = Client(headers={"X-Identity-Id": "late"}).get("/indirect-chat")
    assert response.status_code == 429 and error_of(response)["type"] == "budget_exceeded"
    assert Client().get("/indirect-chat").status_code == 401
    store.reset_budget("late", "daily")
    assert Client(headers={"X-Identity-Id": "late"}).get("/indirect-chat?cost=0.3").status_code == 200
    assert store.budget_status("late")[0].spent == Decimal("0.3")


@pytest.mark.parametrize(("policy", "status"), [("open", 200), ("closed", 503)])
def test_a_store_outage_follows_the_outage_policy_even_for_decorated_views(
        configure: Configure, store: Store, monkeypatch: pytest.MonkeyPatch, policy: str, status: int) -> None:
    from identity_middleware import StoreUnavailable

    def down(request: Any) -> Any:
        raise StoreUnavailable("store down")

    configure(ON_STORE_ERROR=policy)
    monkeypatch.setattr(store, "admit", down)
    for path in ("/needs-identity", "/indirect-chat", "/whoami"):
        response = Client(headers={"X-Identity-Id": "during-outage"}).get(path)
        assert response.status_code == status, path


def test_a_body_over_django_upload_limit_is_left_to_django(configure: Configure, store: Store) -> None:
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=10):
        response = post_json(Client(), "/whoami", {"identity": {"id": "body-id"}}, X_Identity_Id="hdr-id")
    assert response.status_code == 400  # Django's own refusal when the view reads the body
    metrics = store.metrics("hdr-id")
    assert (metrics.total_requests, metrics.total_errors) == (1, 1)
