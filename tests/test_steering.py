"""Steering (issue 26): degrade tiers, per-request and per-session ceilings, budget headers.

Through real apps (Starlette, FastAPI, Flask, Django sync and async) whose views call the real
``openai`` and ``anthropic`` SDKs, instrumented, against the local fake provider; on MemoryStore
and RedisStore. Sync shells use the sync SDK clients, async ones the async clients.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest

import django_project

django_project.setup()

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse  # noqa: E402
from django.urls import path  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from fastapi import Request as FastAPIRequest  # noqa: E402
from flask import Flask  # noqa: E402
from flask import Response as FlaskResponse  # noqa: E402
from flask import request as flask_request  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse, Response, StreamingResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

import test_shell_contract as shell_contract  # noqa: E402
from fake_clock import Clock  # noqa: E402
from identity_middleware import (  # noqa: E402
    Budget,
    IdentityInput,
    IdentityMiddleware,
    IdentityWSGIMiddleware,
    RequestBudgetExceeded,
    Session,
    Tier,
    budgeted,
    current_cost,
    current_tier,
    instrument,
)
from identity_middleware.context import Meter  # noqa: E402
from identity_middleware.django import budgeted as django_budgeted  # noqa: E402
from identity_middleware.stores import Store  # noqa: E402
from identity_middleware.stores.redis.keys import identity_tag  # noqa: E402
from llm_servers import ProviderServer  # noqa: E402
from test_shell_contract import Post, asgi_client, flask_client  # noqa: E402

SHELLS = ("starlette", "fastapi", "flask", "django-sync", "django-async")
MINI_CALL = 285_000  # nano-USD: one gpt-4o-mini chat completion of the fake provider (genai-prices)
HI = [{"role": "user", "content": "Hi"}]
TIERS = [Tier(at="0.80", models={"gpt-4o": "gpt-4o-mini", "claude-sonnet-4-6": "claude-haiku-4-5"}, max_tokens=256)]


# -- the provider and the SDK clients the views use ------------------------------------------------------
class Clients:
    openai: openai.OpenAI
    aopenai: openai.AsyncOpenAI
    anthropic: anthropic.Anthropic
    aanthropic: anthropic.AsyncAnthropic


CLIENTS = Clients()


@pytest.fixture(scope="module")
def provider() -> Iterator[ProviderServer]:
    with ProviderServer() as server:
        CLIENTS.openai = instrument(openai.OpenAI(api_key="sk-test", base_url=f"{server.url}/v1", max_retries=0))
        CLIENTS.anthropic = instrument(anthropic.Anthropic(api_key="sk-ant-test", base_url=server.url, max_retries=0))
        yield server


def _aopenai() -> openai.AsyncOpenAI:
    """An async client per call: the frameworks' test clients run each request on an event loop of its own."""
    return instrument(openai.AsyncOpenAI(api_key="sk-test", base_url=CLIENTS.openai.base_url, max_retries=0))


def _aanthropic() -> anthropic.AsyncAnthropic:
    return instrument(anthropic.AsyncAnthropic(api_key="sk-ant-test", base_url=CLIENTS.anthropic.base_url,
                                               max_retries=0))


def _tier() -> str | None:
    tier = current_tier()
    return tier.name if tier is not None else None


# -- the views, once per kind: sync (Flask, Django sync) and async (Starlette, FastAPI, Django async) ------
def ask(body: dict[str, Any]) -> dict[str, Any]:
    completion = CLIENTS.openai.chat.completions.create(model=body["model"], max_tokens=body["max_tokens"], messages=HI)
    return {"model": completion.model, "tier": _tier()}


async def aask(body: dict[str, Any]) -> dict[str, Any]:
    completion = await _aopenai().chat.completions.create(model=body["model"], max_tokens=body["max_tokens"],
                                                          messages=HI)
    return {"model": completion.model, "tier": _tier()}


def claude(body: dict[str, Any]) -> dict[str, Any]:
    message = CLIENTS.anthropic.messages.create(model=body["model"], max_tokens=body["max_tokens"], messages=HI)
    return {"model": message.model, "tier": _tier()}


async def aclaude(body: dict[str, Any]) -> dict[str, Any]:
    message = await _aanthropic().messages.create(model=body["model"], max_tokens=body["max_tokens"], messages=HI)
    return {"model": message.model, "tier": _tier()}


def loop() -> dict[str, Any]:
    """An agent loop: calls until something stops it (RequestBudgetExceeded, uncaught)."""
    for _ in range(10):
        CLIENTS.openai.chat.completions.create(model="gpt-4o-mini", messages=HI)
    return {"calls": 10}


async def aloop() -> dict[str, Any]:
    client = _aopenai()
    for _ in range(10):
        await client.chat.completions.create(model="gpt-4o-mini", messages=HI)
    return {"calls": 10}


def careful() -> dict[str, Any]:
    """An agent loop that catches the ceiling and answers with what it has."""
    calls = 0
    try:
        for _ in range(10):
            CLIENTS.openai.chat.completions.create(model="gpt-4o-mini", messages=HI)
            calls += 1
    except RequestBudgetExceeded as error:
        return {"calls": calls, "spent": str(error.spent), "max_cost": str(error.max_cost)}
    return {"calls": calls}


async def acareful() -> dict[str, Any]:
    calls, client = 0, _aopenai()
    try:
        for _ in range(10):
            await client.chat.completions.create(model="gpt-4o-mini", messages=HI)
            calls += 1
    except RequestBudgetExceeded as error:
        return {"calls": calls, "spent": str(error.spent), "max_cost": str(error.max_cost)}
    return {"calls": calls}


def once() -> dict[str, Any]:
    CLIENTS.openai.chat.completions.create(model="gpt-4o-mini", messages=HI)
    return {"calls": 1}


async def aonce() -> dict[str, Any]:
    await _aopenai().chat.completions.create(model="gpt-4o-mini", messages=HI)
    return {"calls": 1}


# -- Starlette and FastAPI ----------------------------------------------------------------------------------
async def _json_body(request: Request) -> dict[str, Any]:
    return json.loads(await request.body() or b"{}")  # type: ignore[no-any-return]


async def s_ask(request: Request) -> Response:
    return JSONResponse(await aask(await _json_body(request)))


async def s_claude(request: Request) -> Response:
    return JSONResponse(await aclaude(await _json_body(request)))


@budgeted(max_cost="0.0005")
async def s_agent(request: Request) -> Response:
    return JSONResponse(await aloop())


async def s_loop(request: Request) -> Response:
    return JSONResponse(await aloop())


@budgeted(max_cost="0.0005")
async def s_careful(request: Request) -> Response:
    return JSONResponse(await acareful())


async def s_once(request: Request) -> Response:
    return JSONResponse(await aonce())


async def s_stream(request: Request) -> Response:
    await aonce()

    async def chunks() -> Any:
        yield b"a"
        yield b"b"

    return StreamingResponse(chunks())


def _starlette(options: dict[str, Any]) -> Starlette:
    routes = [Route(f"/{name}", view, methods=["POST"]) for name, view in (
        ("ask", s_ask), ("claude", s_claude), ("agent", s_agent), ("loop", s_loop), ("careful", s_careful),
        ("once", s_once), ("stream", s_stream))]
    return Starlette(routes=routes, middleware=[Middleware(IdentityMiddleware, **options)])


def _fastapi(options: dict[str, Any]) -> FastAPI:
    app = FastAPI()

    @app.post("/ask")
    async def ask_view(request: FastAPIRequest) -> dict[str, Any]:
        return await aask(await request.json())

    @app.post("/claude")
    async def claude_view(request: FastAPIRequest) -> dict[str, Any]:
        return await aclaude(await request.json())

    @app.post("/agent")
    @budgeted(max_cost="0.0005")
    async def agent_view() -> dict[str, Any]:
        return await aloop()

    @app.post("/loop")
    async def loop_view() -> dict[str, Any]:
        return await aloop()

    @app.post("/careful")
    @budgeted(max_cost="0.0005")
    async def careful_view() -> dict[str, Any]:
        return await acareful()

    @app.post("/once")
    async def once_view() -> dict[str, Any]:
        return await aonce()

    @app.post("/stream")
    async def stream_view() -> StreamingResponse:
        return await s_stream(None)  # type: ignore[arg-type, return-value]

    app.add_middleware(IdentityMiddleware, **options)
    return app


# -- Flask: no decorator; the middleware's max_cost, and an error handler for the exception ----------------
def _flask(options: dict[str, Any]) -> Flask:
    app = Flask(__name__)

    @app.errorhandler(RequestBudgetExceeded)
    def ceiling(error: RequestBudgetExceeded) -> Any:
        answer = error.response
        return answer.body, answer.status, answer.headers

    app.post("/ask", endpoint="ask")(lambda: ask(flask_request.get_json()))
    app.post("/claude", endpoint="claude")(lambda: claude(flask_request.get_json()))
    app.post("/loop", endpoint="loop")(loop)
    app.post("/once", endpoint="once")(once)

    @app.post("/stream")
    def stream() -> Any:
        once()
        return FlaskResponse(iter([b"a", b"b"]))

    app.wsgi_app = IdentityWSGIMiddleware(app.wsgi_app, **options)  # type: ignore[method-assign]
    return app


# -- Django (this module is the URLconf) ---------------------------------------------------------------------
def _body(request: HttpRequest) -> dict[str, Any]:
    return json.loads(request.body or b"{}")  # type: ignore[no-any-return]


def d_stream(request: HttpRequest) -> StreamingHttpResponse:
    once()
    return StreamingHttpResponse(iter([b"a", b"b"]))


async def da_stream(request: HttpRequest) -> StreamingHttpResponse:
    await aonce()

    async def chunks() -> Any:
        yield b"a"
        yield b"b"

    return StreamingHttpResponse(chunks())


@django_budgeted(max_cost="0.0005")
def d_agent(request: HttpRequest) -> HttpResponse:
    return JsonResponse(loop())


@django_budgeted(max_cost="0.0005")
async def da_agent(request: HttpRequest) -> HttpResponse:
    return JsonResponse(await aloop())


@django_budgeted(max_cost="0.0005")
def d_careful(request: HttpRequest) -> HttpResponse:
    return JsonResponse(careful())


@django_budgeted(max_cost="0.0005")
async def da_careful(request: HttpRequest) -> HttpResponse:
    return JsonResponse(await acareful())


async def da_ask(request: HttpRequest) -> HttpResponse:
    return JsonResponse(await aask(_body(request)))


async def da_claude(request: HttpRequest) -> HttpResponse:
    return JsonResponse(await aclaude(_body(request)))


async def da_loop(request: HttpRequest) -> HttpResponse:
    return JsonResponse(await aloop())


async def da_once(request: HttpRequest) -> HttpResponse:
    return JsonResponse(await aonce())


urlpatterns = [
    path("ask", lambda request: JsonResponse(ask(_body(request)))),
    path("claude", lambda request: JsonResponse(claude(_body(request)))),
    path("agent", d_agent), path("careful", d_careful),
    path("loop", lambda request: JsonResponse(loop())),
    path("once", lambda request: JsonResponse(once())),
    path("stream", d_stream),
    path("async/ask", da_ask), path("async/claude", da_claude), path("async/agent", da_agent),
    path("async/careful", da_careful), path("async/loop", da_loop), path("async/once", da_once),
    path("async/stream", da_stream),
]


# -- serving: the shell contract's test clients (tests/test_shell_contract.py) --------------------------------
def _django_client(options: dict[str, Any], asynchronous: bool) -> Iterator[Post]:
    return shell_contract._django_client(options, asynchronous, auth=False, urlconf=__name__)


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, make_store: Callable[..., Store]) -> Store:
    return make_store(str(request.param))


@pytest.fixture(params=SHELLS)
def shell(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def serve(shell: str, store: Store, provider: ProviderServer) -> Iterator[Callable[..., Post]]:
    opened: list[Iterator[Post]] = []

    def start(**options: Any) -> Post:
        options = {"store": store, **options}
        if shell == "starlette":
            serving = asgi_client(_starlette(options))
        elif shell == "fastapi":
            serving = asgi_client(_fastapi(options))
        elif shell == "flask":
            serving = flask_client(_flask(options))
        else:
            serving = _django_client(options, shell == "django-async")
        opened.append(serving)
        return next(serving)

    yield start
    for serving in reversed(opened):
        serving.close()


def _spent(store: Store, external_id: str, monthly: str, spent: str) -> None:
    store.create(IdentityInput(id=external_id))
    store.set_budget(external_id, Budget(period="monthly", amount=Decimal(monthly)))
    if Decimal(spent):
        store.record(external_id, cost=Decimal(spent))


def _as(external_id: str, **more: str) -> dict[str, str]:
    return {"X-Identity-Id": external_id, **more}


# -- degrade tiers -----------------------------------------------------------------------------------------
def test_past_the_tier_share_the_call_goes_out_on_the_tier_model_with_its_output_cap(
        serve: Callable[..., Post], store: Store, provider: ProviderServer) -> None:
    _spent(store, "pro", "0.10", "0.085")  # 85 % of the month
    _spent(store, "light", "0.10", "0.05")  # 50 %
    post = serve(degrade=TIERS)
    answer = post("/ask", json={"model": "gpt-4o", "max_tokens": 1000}, headers=_as("pro"))
    assert (answer.status, answer.json()) == (200, {"model": "gpt-4o-mini", "tier": "0.80"})
    sent = provider.requests[-1]
    assert (sent["model"], sent["max_tokens"]) == ("gpt-4o-mini", 256) and "max_completion_tokens" not in sent
    answer = post("/ask", json={"model": "gpt-4o", "max_tokens": 1000}, headers=_as("light"))
    assert (answer.status, answer.json()) == (200, {"model": "gpt-4o", "tier": None})
    assert (provider.requests[-1]["model"], provider.requests[-1]["max_tokens"]) == ("gpt-4o", 1000)


def test_a_cap_below_the_tier_is_kept_and_an_unlisted_model_is_kept(
        serve: Callable[..., Post], store: Store, provider: ProviderServer) -> None:
    _spent(store, "pro", "0.10", "0.09")
    answer = serve(degrade=TIERS)("/ask", json={"model": "gpt-4.1", "max_tokens": 100}, headers=_as("pro"))
    assert answer.json() == {"model": "gpt-4.1", "tier": "0.80"}
    assert (provider.requests[-1]["model"], provider.requests[-1]["max_tokens"]) == ("gpt-4.1", 100)


def test_anthropic_messages_are_rewritten_too(serve: Callable[..., Post], store: Store,
                                              provider: ProviderServer) -> None:
    _spent(store, "pro", "0.10", "0.08")  # exactly 80 %: the tier is reached
    answer = serve(degrade=TIERS)("/claude", json={"model": "claude-sonnet-4-6", "max_tokens": 4096},
                                  headers=_as("pro"))
    assert answer.json() == {"model": "claude-haiku-4-5", "tier": "0.80"}
    assert (provider.requests[-1]["model"], provider.requests[-1]["max_tokens"]) == ("claude-haiku-4-5", 256)


def test_an_estimate_that_fits_only_at_the_tier_model_is_admitted_at_the_tier(
        serve: Callable[..., Post], store: Store, provider: ProviderServer) -> None:
    _spent(store, "tight", "0.01", "0")  # nothing spent: no tier by share
    body = {"model": "gpt-4o", "max_tokens": 1000, "messages": HI}  # ~$0.0100 at gpt-4o: more than $0.01
    refused = serve(estimates={"/": "auto"})("/ask", json=body, headers=_as("tight"))
    assert refused.status == 429 and refused.json()["error"]["type"] == "budget_exceeded"
    answer = serve(estimates={"/": "auto"}, degrade=TIERS)("/ask", json=body, headers=_as("tight"))
    assert (answer.status, answer.json()) == (200, {"model": "gpt-4o-mini", "tier": "0.80"})
    assert provider.requests[-1]["max_tokens"] == 256


def test_requests_per_tier_are_counted_for_metrics(serve: Callable[..., Post], store: Store) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from identity_middleware.admin import create_admin_app

    _spent(store, "pro", "0.10", "0.085")
    named = Tier(at="0.9", models={"gpt-4o": "gpt-4o-mini"}, name="steer-test-tier")
    before = _tier_count(text_string_to_metric_families, create_admin_app(store, token=None))
    post = serve(degrade=[Tier(at="0.5"), named])
    post("/ask", json={"model": "gpt-4o", "max_tokens": 10}, headers=_as("pro"))
    store.record("pro", cost=Decimal("0.01"))  # 95 %
    post("/ask", json={"model": "gpt-4o", "max_tokens": 10}, headers=_as("pro"))
    after = _tier_count(text_string_to_metric_families, create_admin_app(store, token=None))
    assert after["steer-test-tier"] == before.get("steer-test-tier", 0) + 1
    assert after["0.5"] == before.get("0.5", 0) + 1


def _tier_count(parse: Any, admin: Any) -> dict[str, float]:
    text = TestClient(admin).get("/metrics").text
    return {sample.labels["tier"]: sample.value for family in parse(text) for sample in family.samples
            if sample.name == "identity_middleware_tier_requests_total"}


# -- per-request ceilings --------------------------------------------------------------------------------------
def test_a_request_ceiling_stops_the_next_call_and_answers_429(
        serve: Callable[..., Post], store: Store, provider: ProviderServer, shell: str) -> None:
    post = serve(max_cost="0.0005")  # the middleware's, for every request (Flask: its error handler answers)
    sent = len(provider.requests)
    answer = post("/loop", headers=_as("agent"))
    assert answer.status == 429 and answer.headers["x-should-retry"] == "false"
    assert answer.json()["error"] == {
        "type": "request_budget_exceeded", "max_cost": "0.0005", "spent": "0.00057",
        "message": answer.json()["error"]["message"]}
    assert len(provider.requests) - sent == 2  # $0.000285 each: the third is not sent
    store.flush()
    metrics = store.metrics("agent")
    assert (metrics.total_requests, metrics.total_errors, metrics.total_cost) == (1, 1, Decimal("0.00057"))


def test_budgeted_max_cost_is_the_views_own_ceiling(serve: Callable[..., Post], provider: ProviderServer,
                                                    shell: str) -> None:
    if shell == "flask":  # Flask has no decorator: its views take the middleware's max_cost (above)
        post = serve(max_cost="0.0005")
        assert post("/loop", headers=_as("agent")).status == 429
        return
    post = serve(max_cost="5")  # the view's ceiling wins over the middleware's
    sent = len(provider.requests)
    answer = post("/agent", headers=_as("agent"))
    assert (answer.status, answer.json()["error"]["type"]) == (429, "request_budget_exceeded")
    assert len(provider.requests) - sent == 2
    caught = post("/careful", headers=_as("agent"))
    assert (caught.status, caught.json()) == (200, {"calls": 2, "spent": "0.00057", "max_cost": "0.0005"})


# -- session ceilings ----------------------------------------------------------------------------------------
def test_a_session_ceiling_counts_every_request_of_the_session(
        serve: Callable[..., Post], store: Store, provider: ProviderServer) -> None:
    post = serve(session=Session("0.0006", header="X-Session-Id"))
    statuses = [post("/once", headers=_as("chat", **{"X-Session-Id": "s1"})).status for _ in range(4)]
    assert statuses == [200, 200, 200, 429]  # $0.000285 a request: the third brings it to $0.000855
    refused = post("/once", headers=_as("chat", **{"X-Session-Id": "s1"})).json()["error"]
    assert (refused["type"], refused["session"], refused["max_cost"]) == ("request_budget_exceeded", "s1", "0.0006")
    assert post("/once", headers=_as("chat", **{"X-Session-Id": "s2"})).status == 200  # another session
    assert post("/once", headers=_as("other", **{"X-Session-Id": "s1"})).status == 200  # another identity's
    assert post("/once", headers=_as("chat")).status == 200  # no session named
    assert store.session_cost("chat", "s1") == 3 * MINI_CALL


def test_a_session_named_in_a_body_field(store: Store, provider: ProviderServer) -> None:
    app = _starlette({"store": store, "session": Session("0.0005", field="conversation")})
    with TestClient(app) as client:
        codes = [client.post("/once", json={"conversation": 7}, headers=_as("chat")).status_code for _ in range(3)]
    assert codes == [200, 200, 429]


# -- budget headers ------------------------------------------------------------------------------------------
def test_budget_headers_on_an_answer_whose_cost_is_known(serve: Callable[..., Post], store: Store) -> None:
    _spent(store, "pro", "0.10", "0.085")
    post = serve(degrade=TIERS, budget_headers=True)
    answer = post("/ask", json={"model": "gpt-4o", "max_tokens": 1000}, headers=_as("pro"))
    headers = answer.headers
    assert headers["x-request-cost"] == "0.000285" and headers["x-budget-tier"] == "0.80"
    policy = headers["ratelimit-policy"]
    assert policy.startswith('"monthly";q=100000;w=') and policy.endswith(';qu="micro-usd"')
    window = int(policy.split(";w=")[1].split(";")[0])
    assert 28 * 86400 <= window <= 31 * 86400
    state, reset = headers["ratelimit"].split(";t=")
    assert state == '"monthly";r=14715'  # $0.10 - $0.085 - $0.000285, in micro-USD
    assert 0 < int(reset) <= window


def test_no_budget_headers_on_a_streamed_answer_or_when_off(serve: Callable[..., Post], store: Store) -> None:
    _spent(store, "pro", "0.10", "0")
    streamed = serve(budget_headers=True)("/stream", headers=_as("pro"))
    assert streamed.status == 200 and streamed.body == b"ab"
    assert not {"ratelimit", "ratelimit-policy", "x-request-cost"} & set(streamed.headers)
    plain = serve()("/once", headers=_as("pro"))
    assert not {"ratelimit", "ratelimit-policy", "x-request-cost"} & set(plain.headers)


def test_an_identity_without_budgets_gets_its_cost_alone(serve: Callable[..., Post]) -> None:
    answer = serve(budget_headers=True)("/once", headers=_as("free"))
    assert answer.headers["x-request-cost"] == "0.000285"
    assert "ratelimit" not in answer.headers and "x-budget-tier" not in answer.headers


# -- what steering costs Redis ------------------------------------------------------------------------------
# Left out of the counts: the test's own INFO, and the upkeep the admit script does by the clock, not
# by the request: HKEYS, HDEL and PEXPIRE when a new 10 s bucket of the request counters starts
# (lib.lua, count_admission), PEXPIRE when a key's TTL has fallen since the last admission (a TTL
# never shortens). Counted, they made the runs differ by one now and then (a bucket boundary, a
# millisecond passed or not between two admissions).
_NOT_COUNTED = {"cmdstat_info", "cmdstat_hkeys", "cmdstat_hdel", "cmdstat_pexpire"}


def _commands(store: Store) -> Counter[str]:
    """Commands the server has run, by name (scripts' own commands included), but those above."""
    stats = store.client.info("commandstats")  # type: ignore[attr-defined]
    return Counter({name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()
                    if name not in _NOT_COUNTED})


def _per_request(make_store: Callable[..., Store], provider: ProviderServer, requests: int,
                 **options: Any) -> Counter[str]:
    """Redis commands for ``requests`` requests of one instrumented call each (Flask: sync, each
    request's settlement written before the next), with ``options``."""
    store = make_store("redis", clock=Clock())  # a still clock: the registry's once-a-second read stays out
    _spent(store, "pro", "100", "0")
    post = next(flask_client(_flask({"store": store, **options})))
    post("/once", headers=_as("pro", **{"X-Session-Id": "s"}))  # the identity is cached, scripts loaded
    store.flush()
    before = _commands(store)
    for _ in range(requests):
        assert post("/once", headers=_as("pro", **{"X-Session-Id": "s"})).status == 200
        store.flush()
    return _commands(store) - before


def test_steering_adds_no_redis_command_to_a_request_and_a_session_three(
        make_store: Callable[..., Store], provider: ProviderServer) -> None:
    plain = _per_request(make_store, provider, 10)
    assert plain["evalsha"] == 20  # an admission and a settlement per request
    steered = _per_request(make_store, provider, 10, degrade=TIERS, budget_headers=True, max_cost="1")
    assert steered == plain
    sessions = _per_request(make_store, provider, 10, session=Session("1", header="X-Session-Id"))
    assert sessions - plain == Counter({"get": 10, "incrby": 10, "expire": 10})


def test_a_sessions_spend_is_one_counter_shared_by_every_process_and_expires(
        make_store: Callable[..., Store], provider: ProviderServer) -> None:
    first = make_store("redis")
    second = make_store("redis", prefix=first.prefix)  # type: ignore[attr-defined]  # another app instance
    session = Session("0.0006", header="X-Session-Id", ttl=3600)
    posts = [next(flask_client(_flask({"store": store, "session": session}))) for store in (first, second)]
    statuses = [posts[n % 2]("/once", headers=_as("chat", **{"X-Session-Id": "s1"})).status for n in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert second.session_cost("chat", "s1") == 3 * MINI_CALL
    # The key as docs/stores/keys.md gives it: P:{T}:n:<hex SHA-1 of the session value>.
    key = f"{first.prefix}:{{{identity_tag('chat')}}}:n:{hashlib.sha1(b's1').hexdigest()}"  # type: ignore[attr-defined]
    assert 3590 <= first.client.ttl(key) <= 3600  # type: ignore[attr-defined]


# -- the SDK calls themselves, in a tracked request's meter -------------------------------------------------
def test_every_sdk_method_is_rewritten_to_the_tier(provider: ProviderServer, meter: Meter) -> None:
    meter.tier = Tier(at="0.8", models={"gpt-4o": "gpt-4o-mini", "claude-sonnet-4-6": "claude-haiku-4-5"},
                      max_tokens=64)
    CLIENTS.openai.responses.create(model="gpt-4o", input="Hi")
    assert (provider.requests[-1]["model"], provider.requests[-1]["max_output_tokens"]) == ("gpt-4o-mini", 64)
    CLIENTS.openai.chat.completions.create(model="gpt-4o", messages=HI)  # no cap given: one is set
    assert (provider.requests[-1]["model"], provider.requests[-1]["max_completion_tokens"]) == ("gpt-4o-mini", 64)
    assert list(CLIENTS.openai.chat.completions.create(model="gpt-4o", messages=HI, stream=True))
    assert provider.requests[-1]["model"] == "gpt-4o-mini"
    with CLIENTS.anthropic.messages.stream(model="claude-sonnet-4-6", max_tokens=1000, messages=HI) as stream:
        stream.until_done()
    assert (provider.requests[-1]["model"], provider.requests[-1]["max_tokens"]) == ("claude-haiku-4-5", 64)
    assert set(meter.usage.models) == {"gpt-4o-mini", "claude-haiku-4-5"}  # priced as the models that answered


def test_an_async_call_past_the_ceiling_is_not_sent(provider: ProviderServer, meter: Meter) -> None:
    meter.ceiling = MINI_CALL  # one call reaches it

    async def main() -> None:
        client = _aopenai()
        await client.chat.completions.create(model="gpt-4o-mini", messages=HI)
        sent = len(provider.requests)
        with pytest.raises(RequestBudgetExceeded) as raised:
            await client.chat.completions.create(model="gpt-4o-mini", messages=HI)
        assert len(provider.requests) == sent
        assert (raised.value.max_cost, raised.value.spent) == (Decimal("0.000285"), Decimal("0.000285"))

    asyncio.run(main())
    assert meter.usage.cost == MINI_CALL and not meter.usage.error


async def s_sse(request: Request) -> Response:
    """A streamed answer whose last event carries the request's cost, once the model's stream has ended."""
    async def events() -> Any:
        stream = await _aopenai().chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True)
        async for chunk in stream:
            yield f"data: {chunk.choices[0].delta.content or ''}\n\n".encode()
        yield f"event: cost\ndata: {current_cost()}\n\n".encode()

    return StreamingResponse(events(), media_type="text/event-stream")


def test_a_streamed_answer_can_carry_its_cost_in_its_last_event(store: Store, provider: ProviderServer) -> None:
    app = Starlette(routes=[Route("/sse", budgeted()(s_sse), methods=["POST"])],
                    middleware=[Middleware(IdentityMiddleware, store=store, budget_headers=True)])
    with TestClient(app) as client:
        answer = client.post("/sse", headers=_as("streamer"))
    assert answer.text.endswith("event: cost\ndata: 0.000285\n\n")
    assert "x-request-cost" not in answer.headers and "ratelimit" not in answer.headers
    assert current_cost() is None  # outside a request


def test_a_plain_wsgi_app_that_lets_the_exception_through_answers_429(store: Store, provider: ProviderServer) -> None:
    from werkzeug.test import Client as WSGIClient

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        loop()  # raises RequestBudgetExceeded at the third call
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]

    client = WSGIClient(IdentityWSGIMiddleware(app, store=store, max_cost="0.0005"))
    answer = client.post("/", headers=_as("plain"))
    assert answer.status_code == 429 and answer.json["error"]["spent"] == "0.00057"  # type: ignore[index]
    store.flush()
    assert (store.metrics("plain").total_errors, store.metrics("plain").total_cost) == (1, Decimal("0.00057"))
