"""A stream's usage belongs to the request that opened it: abandoned, broken off or finalised by
the garbage collector during another request, it lands on its own identity once, or is dropped
and counted as unmetered, never on a bystander. Real openai and anthropic SDKs against the local
provider server, through IdentityMiddleware on a real Starlette app, on MemoryStore and RedisStore.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from identity_middleware import IdentityMiddleware, ModelPrice, budgeted, instrument, metered_stream, record_usage
from identity_middleware.context import Meter
from identity_middleware.stores import Store
from identity_middleware.unmetered import unmetered_usage
from leaving_client import leave_after_first_chunk
from llm_servers import ProviderServer

pytestmark = pytest.mark.anyio

# The slow models stream 200 chunks, so a consumer that stops early leaves most of the reply unread.
PRICES = {"slow-gpt-4o-mini": ModelPrice.of("0.15", "0.60", "0.075"),
          "slow-gpt-4o": ModelPrice.of("2.50", "10"),
          "slow-claude-sonnet-4-6": ModelPrice.of("3", "15", "0.30", "3.75")}
CHAT = Decimal("0.000285")  # 200 x $0.15 + 1000 cached x $0.075 + 300 x $0.60 per million
RESPONSE = Decimal("0.004")  # 800 x $2.50 + 200 x $10 per million
MESSAGE = Decimal("0.001875")  # 50 x $3 + 1000 read x $0.30 + 300 written x $3.75 + 20 x $15 per million
BODY_COST = Decimal("0.0072")
HI = [{"role": "user", "content": "Hi"}]
ALICE, BOB = {"X-Identity-Id": "alice"}, {"X-Identity-Id": "bob"}

# What a view abandoned and the test keeps alive past the view's request (as a server's reference
# cycles do), until the bystander lets it go and collects it.
held: list[Any] = []


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    with ProviderServer() as running:
        yield running


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, make_store: Any) -> Store:
    return make_store(request.param)  # type: ignore[no-any-return]


def _clients(server: ProviderServer) -> dict[str, Any]:
    return {
        "openai": instrument(openai.OpenAI(api_key="sk-test", base_url=f"{server.url}/v1", max_retries=0),
                             prices=PRICES),
        "aopenai": instrument(openai.AsyncOpenAI(api_key="sk-test", base_url=f"{server.url}/v1", max_retries=0),
                              prices=PRICES),
        "anthropic": instrument(anthropic.Anthropic(api_key="sk-ant-test", base_url=server.url, max_retries=0),
                                prices=PRICES),
        "aanthropic": instrument(anthropic.AsyncAnthropic(api_key="sk-ant-test", base_url=server.url,
                                                          max_retries=0), prices=PRICES),
    }


def _body() -> Iterator[bytes]:
    """A response body that meters its call when it ends, as the FastAPI example's SSE body does."""
    try:
        yield b"data: one\n\n"
        yield b"data: two\n\n"
    finally:
        record_usage(BODY_COST, input_tokens=640, model="body-model")


async def _async_body() -> AsyncIterator[bytes]:
    """:func:`_body` as an async generator (how a view relays an async LLM stream)."""
    try:
        yield b"data: one\n\n"
        yield b"data: two\n\n"
    finally:
        record_usage(BODY_COST, input_tokens=640, model="body-model")


def _app(store: Store, clients: dict[str, Any]) -> Starlette:
    async def async_break(request: Request) -> Response:
        kind = request.path_params["kind"]
        if kind == "openai":
            stream = await clients["aopenai"].chat.completions.create(model="slow-gpt-4o-mini", messages=HI,
                                                                     stream=True)
        elif kind == "responses":
            stream = await clients["aopenai"].responses.create(model="slow-gpt-4o", input="Hi", stream=True)
        else:
            stream = await clients["aanthropic"].messages.create(model="slow-claude-sonnet-4-6", max_tokens=10,
                                                                messages=HI, stream=True)
        async for _item in stream:
            break  # no close(), no `async with`
        return JSONResponse({})

    def sync_break(request: Request) -> Response:  # a sync endpoint: Starlette runs it in a thread
        if request.path_params["kind"] == "openai":
            stream = clients["openai"].chat.completions.create(model="slow-gpt-4o-mini", messages=HI, stream=True)
        else:
            stream = clients["anthropic"].messages.create(model="slow-claude-sonnet-4-6", max_tokens=10,
                                                          messages=HI, stream=True)
        for _item in stream:
            break
        return JSONResponse({})

    async def async_abandon(request: Request) -> Response:
        kind = request.path_params["kind"]
        if kind == "openai":
            stream = await clients["aopenai"].chat.completions.create(model="slow-gpt-4o-mini", messages=HI,
                                                                     stream=True)
        else:
            stream = await clients["aanthropic"].messages.create(model="slow-claude-sonnet-4-6", max_tokens=10,
                                                                messages=HI, stream=True)
        items = aiter(stream)
        await anext(items)
        held.append(items)  # its loop is left and never finalised while the request runs
        return JSONResponse({})

    def sync_abandon(request: Request) -> Response:
        kind = request.path_params["kind"]
        if kind == "openai":
            stream = clients["openai"].chat.completions.create(model="slow-gpt-4o-mini", messages=HI, stream=True)
            items = iter(stream)
            next(items)
            held.append(items)
        elif kind == "helper":  # a stream helper's block entered by hand and never left
            manager = clients["openai"].chat.completions.stream(model="slow-gpt-4o-mini", messages=HI)
            next(iter(manager.__enter__()))
            held.append(manager)
        else:
            items = iter(clients["anthropic"].messages.create(model="slow-claude-sonnet-4-6", max_tokens=10,
                                                               messages=HI, stream=True))
            next(items)
            held.append(items)
        return JSONResponse({})

    def body_abandon(request: Request) -> Response:
        body = _body()
        if request.path_params["kind"] == "metered":
            body = metered_stream(body)
        next(body)
        cycle: list[Any] = [body]
        cycle.append(cycle)  # freed only by the garbage collector, as a server's abandoned body is
        held.append(cycle)
        return JSONResponse({})

    @budgeted()
    async def budgeted_body(request: Request) -> Response:
        return StreamingResponse(_async_body(), media_type="text/event-stream")  # a plain async generator

    async def helper(request: Request) -> Response:
        async with clients["aopenai"].chat.completions.stream(model="slow-gpt-4o-mini", messages=HI) as stream:
            async for _event in stream:
                break
        return JSONResponse({})

    async def async_body_abandon(request: Request) -> Response:
        body = _async_body()  # a plain async generator, as a view relaying an async stream holds one
        await anext(body)
        cycle: list[Any] = [body]
        cycle.append(cycle)  # freed only by the garbage collector, as a server's abandoned body is
        held.append(cycle)
        return JSONResponse({})

    async def async_bystander(request: Request) -> Response:
        """:func:`bystander` on the event loop: the loop finalises what the collection found by
        scheduling its ``aclose()``; the ticks let it run while this request is still open."""
        held.clear()
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0)
        return JSONResponse({})

    def bystander(request: Request) -> Response:
        """Records nothing itself; lets go of what other requests abandoned and collects it."""
        held.clear()
        gc.collect()
        return JSONResponse({})

    app = Starlette(routes=[
        Route("/async-break/{kind}", async_break, methods=["POST"]),
        Route("/sync-break/{kind}", sync_break, methods=["POST"]),
        Route("/async-abandon/{kind}", async_abandon, methods=["POST"]),
        Route("/sync-abandon/{kind}", sync_abandon, methods=["POST"]),
        Route("/body-abandon/{kind}", body_abandon, methods=["POST"]),
        Route("/helper", helper, methods=["POST"]),
        Route("/budgeted-body", budgeted_body, methods=["POST"]),
        Route("/bystander", bystander, methods=["POST"]),
        Route("/async-body-abandon", async_body_abandon, methods=["POST"]),
        Route("/async-bystander", async_bystander, methods=["POST"]),
    ])
    app.add_middleware(IdentityMiddleware, store=store)
    return app


@pytest.fixture
async def app(store: Store, server: ProviderServer) -> AsyncIterator[Starlette]:
    held.clear()
    clients = _clients(server)
    yield _app(store, clients)
    held.clear()
    for name in ("openai", "anthropic"):
        clients[name].close()
        await clients[f"a{name}"].close()


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client


async def _spend(store: Store, external_id: str) -> tuple[Decimal, int, int]:
    """The identity's cost, tokens and requests as the store has them (buffered usage written first)."""
    await store.aflush()
    metrics = await store.ametrics(external_id)
    return metrics.total_cost, metrics.total_tokens, metrics.total_requests


# -- an async loop left with `break` ---------------------------------------------------------------
@pytest.mark.parametrize(("kind", "cost", "tokens"), [("openai", CHAT, 1500), ("responses", RESPONSE, 1000),
                                                      ("anthropic", MESSAGE, 1370)])
async def test_an_async_stream_left_with_break_is_metered_on_its_request(
        client: httpx.AsyncClient, store: Store, kind: str, cost: Decimal, tokens: int) -> None:
    assert (await client.post(f"/async-break/{kind}", headers=ALICE)).status_code == 200
    assert await _spend(store, "alice") == (cost, tokens, 1)


@pytest.mark.parametrize(("kind", "cost", "tokens"), [("openai", CHAT, 1500), ("anthropic", MESSAGE, 1370)])
async def test_a_sync_stream_left_with_break_is_metered_on_its_request(
        client: httpx.AsyncClient, store: Store, kind: str, cost: Decimal, tokens: int) -> None:
    assert (await client.post(f"/sync-break/{kind}", headers=ALICE)).status_code == 200
    assert await _spend(store, "alice") == (cost, tokens, 1)


async def test_a_stream_helper_left_early_is_exact(client: httpx.AsyncClient, store: Store) -> None:
    assert (await client.post("/helper", headers=ALICE)).status_code == 200
    assert await _spend(store, "alice") == (CHAT, 1500, 1)


# -- streams abandoned past their request, and the bystander that collects them ---------------------
@pytest.mark.parametrize(("path", "cost", "tokens"), [
    ("/async-abandon/openai", CHAT, 1500), ("/async-abandon/anthropic", MESSAGE, 1370),
    ("/sync-abandon/openai", CHAT, 1500), ("/sync-abandon/anthropic", MESSAGE, 1370),
    ("/sync-abandon/helper", CHAT, 1500), ("/body-abandon/metered", BODY_COST, 640)])
async def test_an_abandoned_stream_is_charged_to_its_own_request_once(
        client: httpx.AsyncClient, store: Store, path: str, cost: Decimal, tokens: int) -> None:
    assert (await client.post(path, headers=ALICE)).status_code == 200
    assert held  # still alive, not finalised: its request ended it
    assert await _spend(store, "alice") == (cost, tokens, 1)
    await client.post("/bystander", headers=BOB)  # the abandoned stream is finalised now, in bob's request
    assert await _spend(store, "alice") == (cost, tokens, 1)


@pytest.mark.parametrize("path", ["/async-abandon/openai", "/async-abandon/anthropic", "/sync-abandon/openai",
                                  "/sync-abandon/anthropic", "/sync-abandon/helper", "/body-abandon/metered",
                                  "/body-abandon/plain"])
async def test_a_bystander_that_records_nothing_is_never_charged_for_an_abandoned_stream(
        client: httpx.AsyncClient, store: Store, path: str) -> None:
    await client.post(path, headers=ALICE)
    assert (await client.post("/bystander", headers=BOB)).status_code == 200
    assert await _spend(store, "bob") == (Decimal(0), 0, 1)


async def test_usage_a_plain_body_records_when_collected_in_another_request_is_dropped_and_counted(
        client: httpx.AsyncClient, store: Store, caplog: pytest.LogCaptureFixture) -> None:
    before = unmetered_usage()
    await client.post("/body-abandon/plain", headers=ALICE)
    await client.post("/bystander", headers=BOB)
    after = unmetered_usage()
    assert (after.calls - before.calls, after.cost - before.cost) == (1, BODY_COST)
    assert await _spend(store, "alice") == (Decimal(0), 0, 1)  # its owner could not be known
    assert "usage not metered" in caplog.text


async def test_a_plain_async_body_finalised_during_another_request_is_dropped_and_counted_not_charged_to_it(
        client: httpx.AsyncClient, store: Store) -> None:
    before = unmetered_usage()
    await client.post("/async-body-abandon", headers=ALICE)
    assert (await client.post("/async-bystander", headers=BOB)).status_code == 200
    after = unmetered_usage()
    assert await _spend(store, "bob") == (Decimal(0), 0, 1)
    assert (after.calls - before.calls, after.cost - before.cost) == (1, BODY_COST)
    assert await _spend(store, "alice") == (Decimal(0), 0, 1)  # its owner could not be known


async def test_a_budgeted_views_streamed_body_left_by_its_client_is_charged_to_its_request_once(
        app: Starlette, client: httpx.AsyncClient, store: Store) -> None:
    assert await leave_after_first_chunk(app, "/budgeted-body", b"{}", ALICE) == b"data: one\n\n"
    await client.post("/bystander", headers=BOB)
    assert await _spend(store, "alice") == (BODY_COST, 640, 1)
    assert await _spend(store, "bob") == (Decimal(0), 0, 1)


async def test_a_stream_helper_after_an_abandoned_stream_is_charged_one_call(
        client: httpx.AsyncClient, store: Store) -> None:
    await client.post("/async-abandon/openai", headers=ALICE)
    await client.post("/helper", headers=BOB)
    await client.post("/bystander", headers=BOB)
    assert await _spend(store, "bob") == (CHAT, 1500, 2)
    assert await _spend(store, "alice") == (CHAT, 1500, 1)


def test_usage_added_after_its_request_settled_is_dropped_and_counted(meter: Meter) -> None:
    before = unmetered_usage()
    meter.take(error=False)
    assert record_usage("0.25", input_tokens=7, output_tokens=3, model="late-model") is None
    after = unmetered_usage()
    assert (after.calls - before.calls, after.cost - before.cost, after.input_tokens - before.input_tokens,
            after.output_tokens - before.output_tokens) == (1, Decimal("0.25"), 7, 3)
    assert meter.usage.cost == 0


def test_the_admin_metrics_count_the_unmetered_usage_of_the_process(meter: Meter) -> None:
    from identity_middleware.admin.prometheus import Snapshot, exposition

    meter.take(error=False)
    record_usage("0.5", input_tokens=1, model="late-model")  # dropped: its request is settled
    dropped = unmetered_usage()
    assert dropped.calls >= 1
    text = exposition(Snapshot(top=[]))[0].decode()
    assert f"identity_middleware_unmetered_calls_total {float(dropped.calls)}" in text
    assert f"identity_middleware_unmetered_cost_usd_total {float(dropped.cost)}" in text
    assert f'identity_middleware_unmetered_tokens_total{{direction="input"}} {float(dropped.input_tokens)}' in text


# -- a WSGI app (Flask): the request's end is its response iterable's close -----------------------
def test_a_stream_a_flask_view_abandoned_is_charged_to_its_request_once(store: Store, server: ProviderServer) -> None:
    from flask import Flask

    from identity_middleware import IdentityWSGIMiddleware

    sdk = instrument(openai.OpenAI(api_key="sk-test", base_url=f"{server.url}/v1", max_retries=0), prices=PRICES)
    flask_app = Flask(__name__)

    @flask_app.post("/abandon")
    def abandon() -> dict[str, str]:
        items = iter(sdk.chat.completions.create(model="slow-gpt-4o-mini", messages=HI, stream=True))
        next(items)
        held.append(items)
        return {}

    @flask_app.post("/bystander")
    def bystander() -> dict[str, str]:
        held.clear()
        gc.collect()
        return {}

    flask_app.wsgi_app = IdentityWSGIMiddleware(flask_app.wsgi_app, store=store)  # type: ignore[method-assign]
    client = flask_app.test_client()
    try:
        # buffered: the response iterable is read and closed, as a WSGI server does
        assert client.post("/abandon", headers=ALICE, buffered=True).status_code == 200
        assert client.post("/bystander", headers=BOB, buffered=True).status_code == 200
    finally:
        held.clear()
        sdk.close()
    store.flush()
    assert [(m.total_cost, m.total_tokens, m.total_requests) for m in map(store.metrics, ("alice", "bob"))] == \
        [(CHAT, 1500, 1), (Decimal(0), 0, 1)]
