"""IdentityMiddleware on real Starlette and FastAPI apps, through their own test clients."""

from __future__ import annotations

import json
import logging
import threading
from decimal import Decimal
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from identity_middleware import (
    Budget,
    IdentityMiddleware,
    StoreUnavailable,
    budgeted,
    current_identity,
    record_usage,
)
from identity_middleware.config import InvalidOption
from identity_middleware.core.admission import Admission, AdmissionRequest, Settlement
from identity_middleware.stores import MemoryStore

# -- a small app that shows what a view sees ----------------------------------------------------

seen: dict[str, Any] = {}


async def echo(request: Request) -> Response:
    body = await request.body()
    identity = current_identity()
    seen["body"] = body
    seen["state"] = getattr(request.state, "identity", None)
    cost = request.query_params.get("cost")
    if cost:
        record_usage(cost, input_tokens=10, output_tokens=5, model="test-model")
    return JSONResponse({"identity": identity.external_id if identity else None, "length": len(body)})


def threadpool_view(request: Request) -> Response:
    identity = current_identity()
    record_usage("0.01", input_tokens=1, output_tokens=1)
    seen["thread"] = threading.current_thread().name
    return JSONResponse({"identity": identity.external_id if identity else None})


async def fails(request: Request) -> Response:
    record_usage("0.03")
    raise RuntimeError("the model client blew up")


async def bad_request(request: Request) -> Response:
    record_usage("0.02")
    return PlainTextResponse("no", status_code=422)


async def stream(request: Request) -> Response:
    async def chunks() -> Any:
        for index in range(3):
            record_usage("0.01", output_tokens=2)
            yield f"chunk {index}\n".encode()

    return StreamingResponse(chunks(), media_type="text/plain")


async def ws(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


@budgeted(estimate="0.05")
async def llm(request: Request) -> Response:
    identity = current_identity()
    if identity is not None:  # None only when the store is down and the policy lets requests through
        seen["status_in_view"] = store_of(request).budget_status(identity.external_id)
    record_usage("0.04", input_tokens=100, output_tokens=50, model="gpt-4o")
    return JSONResponse({"ok": True})


def store_of(request: Request) -> MemoryStore:
    store = request.app.state.store
    assert isinstance(store, MemoryStore)
    return store


ROUTES = [
    Route("/echo", echo, methods=["GET", "POST", "PUT"]),
    Route("/thread", threadpool_view),
    Route("/fails", fails),
    Route("/bad", bad_request),
    Route("/stream", stream),
    Route("/llm", llm, methods=["POST"]),
    Mount("/v1", routes=[Route("/llm", llm, methods=["POST"])]),
    WebSocketRoute("/ws", ws),
]


def make_app(store: MemoryStore | None = None, **options: Any) -> tuple[Starlette, MemoryStore]:
    store = store or MemoryStore()
    app = Starlette(routes=ROUTES, middleware=[Middleware(IdentityMiddleware, store=store, **options)])
    app.state.store = store
    return app, store


@pytest.fixture
def client_store() -> Any:
    seen.clear()
    app, store = make_app()
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, store


# -- resolution ---------------------------------------------------------------------------------

def test_body_identity_tags_the_request_and_creates_the_record(client_store: Any) -> None:
    client, store = client_store
    response = client.post("/echo", json={"identity": {"id": "user_1", "display_name": "Jane",
                                                      "email": "jane@example.com", "tags": ["pro"]}})
    assert response.json()["identity"] == "user_1"
    record = store.retrieve("user_1")
    assert (record.display_name, record.email, record.tags) == ("Jane", "jane@example.com", ["pro"])


def test_orq_identity_in_the_body_is_read_too(client_store: Any) -> None:
    client, _ = client_store
    response = client.post("/echo", json={"orq": {"identity": {"id": "orq_user"}}, "messages": []})
    assert response.json()["identity"] == "orq_user"


def test_body_beats_header(client_store: Any) -> None:
    client, _ = client_store
    response = client.post("/echo", json={"identity": {"id": "from_body"}},
                           headers={"X-Identity-Id": "from_header"})
    assert response.json()["identity"] == "from_body"


def test_header_is_used_when_the_body_has_no_identity(client_store: Any) -> None:
    client, _ = client_store
    response = client.post("/echo", json={"messages": []}, headers={"X-Identity-Id": "from_header"})
    assert response.json()["identity"] == "from_header"


def test_orq_compatible_header_is_accepted(client_store: Any) -> None:
    client, _ = client_store
    assert client.get("/echo", headers={"X-ORQ-IDENTITY-ID": "orq_h"}).json()["identity"] == "orq_h"


def test_header_names_are_configurable() -> None:
    app, _ = make_app(header_names=["X-Customer"])
    with TestClient(app) as client:
        assert client.get("/echo", headers={"X-Customer": "c1"}).json()["identity"] == "c1"
        assert client.get("/echo", headers={"X-Identity-Id": "c2"}).json()["identity"] is None


def test_header_only_tags_and_never_updates_the_record(client_store: Any) -> None:
    client, store = client_store
    client.post("/echo", json={"identity": {"id": "u", "display_name": "Original"}})
    client.post("/echo", json={"messages": []}, headers={"X-Identity-Id": "u"})
    assert store.retrieve("u").display_name == "Original"


def test_body_upsert_is_partial(client_store: Any) -> None:
    client, store = client_store
    client.post("/echo", json={"identity": {"id": "u", "display_name": "Jane", "email": "j@example.com"}})
    client.post("/echo", json={"identity": {"id": "u", "logo_url": "https://img.example/j.png"}})
    record = store.retrieve("u")
    assert (record.display_name, record.email, record.avatar_url) == (
        "Jane", "j@example.com", "https://img.example/j.png")


def test_unknown_header_identity_is_created_bare(client_store: Any) -> None:
    client, store = client_store
    client.get("/echo", headers={"X-Identity-Id": "newcomer"})
    record = store.retrieve("newcomer")
    assert record.display_name is None and store.metrics("newcomer").total_requests == 1


def test_unknown_header_identity_passes_untracked_when_creation_is_off() -> None:
    app, store = make_app(create_missing=False)
    with TestClient(app) as client:
        assert client.get("/echo", headers={"X-Identity-Id": "ghost"}).json()["identity"] is None
    assert store.list().data == []


class TokenBackend(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        user = conn.headers.get("authorization", "").removeprefix("Bearer ")
        return (AuthCredentials(["authenticated"]), SimpleUser(user)) if user else None


def auth_app(**options: Any) -> tuple[Starlette, MemoryStore]:
    store = MemoryStore()
    app = Starlette(routes=ROUTES, middleware=[
        Middleware(AuthenticationMiddleware, backend=TokenBackend()),
        Middleware(IdentityMiddleware, store=store, **options),
    ])
    app.state.store = store
    return app, store


def test_auth_context_is_the_last_source() -> None:
    app, _ = auth_app()
    with TestClient(app) as client:
        assert client.get("/echo", headers={"Authorization": "Bearer alice"}).json()["identity"] == "alice"
        assert client.get("/echo", headers={"Authorization": "Bearer alice", "X-Identity-Id": "h"}
                          ).json()["identity"] == "h"


def test_an_app_supplied_resolver_maps_an_api_key_to_its_owner() -> None:
    owners = {"key-123": "team_a"}

    def resolver(scope: dict[str, Any]) -> str | None:
        for key, value in scope["headers"]:
            if key == b"x-api-key":
                return owners.get(value.decode())
        return None

    app, _ = make_app(resolver=resolver)
    with TestClient(app) as client:
        assert client.get("/echo", headers={"X-Api-Key": "key-123"}).json()["identity"] == "team_a"
        assert client.get("/echo", headers={"X-Api-Key": "unknown"}).json()["identity"] is None


def test_no_identity_passes_through_untracked(client_store: Any) -> None:
    client, store = client_store
    assert client.get("/echo").json()["identity"] is None
    assert store.list().data == []


def test_no_identity_is_401_when_required() -> None:
    app, _ = make_app(require_identity=True)
    with TestClient(app) as client:
        response = client.get("/echo")
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "identity_required"
    assert response.headers["content-type"] == "application/json"


# -- validation ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("identity", "field"), [
    ({"id": ""}, "id"),
    ({"id": "x" * 256}, "id"),
    ({"id": "bad\nid"}, "id"),
    ({"id": "u", "email": "not-an-email"}, "email"),
    ({"id": "u", "tags": [f"t{i}" for i in range(11)]}, "tags"),
    ({"id": "u", "metadata": {f"k{i}": i for i in range(21)}}, "metadata"),
    ({"id": "u", "metadata": [{f"a{i}": i for i in range(11)}, {f"b{i}": i for i in range(10)}]}, "metadata"),
    ("user_1", "identity"),
])
def test_invalid_body_identity_is_400_naming_the_field_and_the_app_is_not_called(
    client_store: Any, identity: Any, field: str
) -> None:
    client, _ = client_store
    response = client.post("/echo", json={"identity": identity})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["field"]) == ("invalid_identity", field)
    assert "body" not in seen


def test_hostile_header_is_refused_cleanly(client_store: Any) -> None:
    client, _ = client_store
    response = client.get("/echo", headers={"X-Identity-Id": "x" * 300})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "X-Identity-Id"
    raw = client.get("/echo", headers=[(b"X-Identity-Id", b"a\x7fb")])
    assert raw.status_code == 400


# -- bodies reach the app intact ----------------------------------------------------------------

def test_malformed_json_reaches_the_app_intact_and_the_header_is_used(client_store: Any) -> None:
    client, _ = client_store
    body = b'{"identity": {"id": "u1"'  # cut short
    response = client.post("/echo", content=body, headers={"content-type": "application/json",
                                                           "X-Identity-Id": "h1"})
    assert response.json() == {"identity": "h1", "length": len(body)}
    assert seen["body"] == body


def test_a_json_array_body_is_not_an_identity_source(client_store: Any) -> None:
    client, _ = client_store
    response = client.post("/echo", json=[{"identity": {"id": "x"}}])
    assert response.json()["identity"] is None


def test_non_json_bodies_pass_through_unread(client_store: Any) -> None:
    client, _ = client_store
    body = b'{"identity": {"id": "u1"}}'
    response = client.post("/echo", content=body, headers={"content-type": "text/plain"})
    assert response.json() == {"identity": None, "length": len(body)}
    assert seen["body"] == body


def test_bodies_over_the_limit_pass_through_unread() -> None:
    app, store = make_app(max_body_size=64)
    body = json.dumps({"identity": {"id": "big"}, "pad": "x" * 200}).encode()
    with TestClient(app) as client:
        response = client.post("/echo", content=body, headers={"content-type": "application/json"})
    assert response.json() == {"identity": None, "length": len(body)}
    assert seen["body"] == body
    assert store.list().data == []


def test_vendor_json_content_types_are_read(client_store: Any) -> None:
    client, _ = client_store
    response = client.post("/echo", content=b'{"identity": {"id": "v"}}',
                           headers={"content-type": "application/vnd.api+json; charset=utf-8"})
    assert response.json()["identity"] == "v"


async def call_asgi(app: Any, scope_extra: dict[str, Any], messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drive an ASGI app by hand: send these request messages, collect what it sends back."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/echo", "raw_path": b"/echo", "root_path": "", "query_string": b"",
             "headers": [(b"content-type", b"application/json")], "server": ("test", 80),
             "client": ("127.0.0.1", 1234), **scope_extra}
    pending = list(messages)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def test_a_chunked_body_is_replayed_byte_for_byte() -> None:
    app, store = make_app()
    body = json.dumps({"identity": {"id": "chunky"}, "messages": ["é" * 50] * 40}).encode()
    parts = [body[i:i + 97] for i in range(0, len(body), 97)]
    messages = [{"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
                for i, part in enumerate(parts)]
    sent = anyio.run(call_asgi, app, {}, messages)
    assert sent[0]["status"] == 200
    assert seen["body"] == body
    assert store.metrics("chunky").total_requests == 1


def test_a_large_chunked_body_without_length_is_replayed_whole() -> None:
    app, store = make_app(max_body_size=1000)
    body = json.dumps({"identity": {"id": "huge"}, "pad": "y" * 5000}).encode()
    parts = [body[i:i + 300] for i in range(0, len(body), 300)]
    messages = [{"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
                for i, part in enumerate(parts)]
    sent = anyio.run(call_asgi, app, {}, messages)
    assert sent[0]["status"] == 200
    assert seen["body"] == body
    assert store.list().data == []  # over the limit: not read for an identity


# -- budgets ------------------------------------------------------------------------------------

def test_spend_exactly_at_the_limit_blocks_with_429(client_store: Any) -> None:
    client, store = client_store
    client.post("/echo", json={"identity": {"id": "u"}})
    store.set_budget("u", Budget(period="daily", amount="0.20"))
    assert client.post("/echo?cost=0.19", json={"identity": {"id": "u"}}).status_code == 200
    assert client.post("/echo?cost=0.01", json={"identity": {"id": "u"}}).status_code == 200
    response = client.post("/echo", json={"identity": {"id": "u"}})
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["type"] == "budget_exceeded"
    assert (error["identity"], error["period"], error["amount"], error["spent"]) == ("u", "daily", "0.20", "0.20")
    assert error["resets_at"].endswith("T00:00:00Z")
    assert 1 <= int(response.headers["retry-after"]) <= 86400
    assert "body" not in seen or seen["body"] != b"blocked"  # the app was not called for the 429


def test_blocked_requests_count_as_requests_and_errors(client_store: Any) -> None:
    client, store = client_store
    client.post("/echo?cost=1", json={"identity": {"id": "u"}})
    store.set_budget("u", Budget(period="monthly", amount="1"))
    seen.clear()
    assert client.post("/echo", json={"identity": {"id": "u", "display_name": "Still upserted"}}
                       ).status_code == 429
    assert "body" not in seen
    metrics = store.metrics("u")
    assert (metrics.total_requests, metrics.error_rate) == (2, 0.5)
    assert store.retrieve("u").display_name == "Still upserted"


def test_the_error_names_the_blocking_budget_that_resets_last(client_store: Any) -> None:
    client, store = client_store
    client.post("/echo?cost=5", json={"identity": {"id": "u"}})
    store.set_budget("u", Budget(period="daily", amount="1"))
    store.set_budget("u", Budget(period="yearly", amount="2"))
    response = client.post("/echo", json={"identity": {"id": "u"}})
    assert response.json()["error"]["period"] == "yearly"
    assert int(response.headers["retry-after"]) > 86400


def test_default_budgets_apply_to_new_identities() -> None:
    app, store = make_app(default_budgets={"daily": "0.10"})
    with TestClient(app) as client:
        client.post("/echo?cost=0.10", json={"identity": {"id": "fresh"}})
        assert client.post("/echo", json={"identity": {"id": "fresh"}}).status_code == 429
    assert [(s.period.value, s.amount) for s in store.budget_status("fresh")] == [("daily", Decimal("0.1"))]


def test_budgeted_view_reserves_its_estimate_before_it_runs(client_store: Any) -> None:
    client, store = client_store
    client.post("/echo", json={"identity": {"id": "u"}})
    store.set_budget("u", Budget(period="daily", amount="1"))
    assert client.post("/llm", json={"identity": {"id": "u"}}).status_code == 200
    in_view = seen["status_in_view"][0]
    assert in_view.reserved == Decimal("0.05")
    after = store.budget_status("u")[0]
    assert (after.spent, after.reserved) == (Decimal("0.04"), Decimal("0"))


def test_budgeted_view_estimate_that_would_overshoot_is_refused(client_store: Any) -> None:
    client, store = client_store
    client.post("/echo?cost=0.96", json={"identity": {"id": "u"}})
    store.set_budget("u", Budget(period="daily", amount="1"))
    assert client.post("/echo", json={"identity": {"id": "u"}}).status_code == 200  # 0.96 < 1
    assert client.post("/llm", json={"identity": {"id": "u"}}).status_code == 429  # 0.96 + 0.05 > 1
    assert client.post("/v1/llm", json={"identity": {"id": "u"}}).status_code == 429  # mounted too


def test_budgeted_view_requires_an_identity(client_store: Any) -> None:
    client, _ = client_store
    response = client.post("/llm", json={"messages": []})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "identity_required"


def test_path_estimates_reserve_without_a_decorator() -> None:
    app, store = make_app(estimates={"/echo": "0.50"})
    with TestClient(app) as client:
        client.post("/echo", json={"identity": {"id": "u"}})
        store.set_budget("u", Budget(period="daily", amount="1"))
        client.post("/echo?cost=0.6", json={"identity": {"id": "u"}})
        assert client.post("/echo", json={"identity": {"id": "u"}}).status_code == 429  # 0.6 + 0.5 > 1


@pytest.mark.anyio
async def test_200_concurrent_reservations_never_exceed_the_budget() -> None:
    store = MemoryStore()
    store.create(__import__("identity_middleware").IdentityInput(id="crowd"))
    store.set_budget("crowd", Budget(period="daily", amount="1.00"))
    started = anyio.Event()
    decided = anyio.Event()  # every request admitted (waiting in the view) or answered
    in_view = 0
    statuses: list[int] = []

    def one_more_decided() -> None:
        if in_view + len(statuses) == 200:
            decided.set()

    @budgeted(estimate="0.01")
    async def slow_llm(request: Request) -> Response:
        nonlocal in_view
        in_view += 1
        one_more_decided()
        await started.wait()  # every admitted request is in flight at once
        record_usage("0.01")
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/llm", slow_llm, methods=["POST"])],
                    middleware=[Middleware(IdentityMiddleware, store=store)])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        async def one() -> None:
            response = await client.post("/llm", json={"identity": {"id": "crowd"}})
            statuses.append(response.status_code)
            one_more_decided()

        async with anyio.create_task_group() as group:
            for _ in range(200):
                group.start_soon(one)
            await decided.wait()
            status = store.budget_status("crowd")[0]
            assert status.spent + status.reserved <= Decimal("1.00")
            assert (in_view, statuses) == (100, [429] * 100)  # all held at once, the rest refused
            started.set()
    admitted = statuses.count(200)
    assert admitted == 100 and statuses.count(429) == 100
    status = store.budget_status("crowd")[0]
    assert status.spent == Decimal("1.00") and status.reserved == 0
    assert store.metrics("crowd").total_requests == 200


# -- metering -----------------------------------------------------------------------------------

def test_usage_is_committed_once_with_exact_money(client_store: Any) -> None:
    client, store = client_store
    for _ in range(10):
        client.post("/echo?cost=0.1", json={"identity": {"id": "u"}})
    metrics = store.metrics("u")
    assert metrics.total_cost == Decimal("1")
    assert (metrics.total_requests, metrics.total_tokens, metrics.error_rate) == (10, 150, 0.0)


def test_threadpool_views_see_the_identity_and_meter_it(client_store: Any) -> None:
    client, store = client_store
    response = client.get("/thread", headers={"X-Identity-Id": "t"})
    assert response.json()["identity"] == "t"
    assert seen["thread"] != threading.main_thread().name
    assert store.metrics("t").total_cost == Decimal("0.01")


def test_the_identity_is_reset_after_the_request(client_store: Any) -> None:
    client, _ = client_store
    client.get("/echo", headers={"X-Identity-Id": "t"})
    assert current_identity() is None
    assert client.get("/echo").json()["identity"] is None


def test_request_state_carries_the_identity(client_store: Any) -> None:
    client, _ = client_store
    client.get("/echo", headers={"X-Identity-Id": "s"})
    assert seen["state"].external_id == "s"


def test_an_exception_is_metered_as_an_error(client_store: Any) -> None:
    client, store = client_store
    assert client.get("/fails", headers={"X-Identity-Id": "e"}).status_code == 500
    metrics = store.metrics("e")
    assert (metrics.total_requests, metrics.error_rate, metrics.total_cost) == (1, 1.0, Decimal("0.03"))


def test_a_4xx_response_is_metered_as_an_error(client_store: Any) -> None:
    client, store = client_store
    assert client.get("/bad", headers={"X-Identity-Id": "e"}).status_code == 422
    assert store.metrics("e").error_rate == 1.0


def test_a_streamed_response_is_metered_when_it_ends(client_store: Any) -> None:
    client, store = client_store
    response = client.get("/stream", headers={"X-Identity-Id": "streamer"})
    assert response.text == "chunk 0\nchunk 1\nchunk 2\n"
    metrics = store.metrics("streamer")
    assert (metrics.total_cost, metrics.output_tokens, metrics.total_requests) == (Decimal("0.03"), 6, 1)


def test_a_client_disconnect_is_still_metered() -> None:
    store = MemoryStore()
    reached = anyio.Event()

    async def waits_for_disconnect(request: Request) -> Response:
        record_usage("0.07")
        reached.set()
        while not await request.is_disconnected():  # noqa: ASYNC110 - polling is the API here
            await anyio.sleep(0.01)
        raise anyio.get_cancelled_exc_class()

    app = IdentityMiddleware(Starlette(routes=[Route("/slow", waits_for_disconnect)]), store=store)

    async def main() -> None:
        async def receive() -> dict[str, Any]:
            await reached.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            pass

        scope = {"type": "http", "method": "GET", "path": "/slow", "raw_path": b"/slow", "root_path": "",
                 "query_string": b"", "headers": [(b"x-identity-id", b"gone")], "scheme": "http",
                 "server": ("t", 80), "client": ("127.0.0.1", 1), "asgi": {"version": "3.0"},
                 "http_version": "1.1"}
        with anyio.move_on_after(5):
            try:
                await app(scope, receive, send)
            except anyio.get_cancelled_exc_class():
                pass

    anyio.run(main)
    metrics = store.metrics("gone")
    assert (metrics.total_cost, metrics.total_requests, metrics.error_rate) == (Decimal("0.07"), 1, 1.0)


def test_record_usage_reads_an_openai_response_and_prices_it() -> None:
    store = MemoryStore()
    prices = {"gpt-4o": ("2.50", "10.00")}

    async def view(request: Request) -> Response:
        completion = {"model": "gpt-4o-2024-08-06", "usage": {"prompt_tokens": 1000, "completion_tokens": 200}}
        record_usage(response=completion, prices=prices)
        return JSONResponse({})

    app = Starlette(routes=[Route("/", view)], middleware=[Middleware(IdentityMiddleware, store=store)])
    with TestClient(app) as client:
        client.get("/", headers={"X-Identity-Id": "priced"})
    metrics = store.metrics("priced")
    assert metrics.total_cost == Decimal("0.0045")  # 1000 × 2.50/1M + 200 × 10/1M
    assert (metrics.input_tokens, metrics.output_tokens) == (1000, 200)


# -- rate limits, outages, other scopes ---------------------------------------------------------

def test_rate_limit_answers_429_with_ietf_headers() -> None:
    app, store = make_app(rate_limit="2/minute", rate_limits={"vip": "5/minute"})
    with TestClient(app) as client:
        codes = [client.get("/echo", headers={"X-Identity-Id": "u"}).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        response = client.get("/echo", headers={"X-Identity-Id": "u"})
        assert response.json()["error"]["type"] == "rate_limited"
        assert 1 <= int(response.headers["retry-after"]) <= 60
        assert response.headers["ratelimit-policy"] == '"identity";q=2;w=60'
        assert response.headers["ratelimit"].startswith('"identity";r=0;t=')
        assert [client.get("/echo", headers={"X-Identity-Id": "vip"}).status_code for _ in range(5)] == [200] * 5
    metrics = store.metrics("u")
    assert (metrics.total_requests, metrics.total_errors) == (4, 2)


class BrokenStore(MemoryStore):
    """A store whose backend is down (for the outage policy; Redis outages are tested on Redis)."""

    def admit(self, request: AdmissionRequest) -> Admission:
        raise StoreUnavailable("backend down")

    def settle(self, settlement: Settlement) -> None:
        raise StoreUnavailable("backend down")


def test_store_outage_fails_open_by_default_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    app, _ = make_app(store=BrokenStore())
    with caplog.at_level(logging.ERROR, logger="identity_middleware"), TestClient(app) as client:
        for _ in range(3):
            response = client.get("/echo", headers={"X-Identity-Id": "u"})
            assert (response.status_code, response.json()["identity"]) == (200, None)
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1


def test_store_outage_fails_closed_with_503_when_asked() -> None:
    app, _ = make_app(store=BrokenStore(), on_store_error="closed")
    with TestClient(app) as client:
        response = client.get("/echo", headers={"X-Identity-Id": "u"})
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "store_unavailable"


def test_websockets_pass_through(client_store: Any) -> None:
    client, _ = client_store
    with client.websocket_connect("/ws") as websocket:
        assert websocket.receive_text() == "hello"


def test_lifespan_shutdown_flushes_the_store() -> None:
    flushed: list[bool] = []

    class FlushingStore(MemoryStore):
        async def aflush(self) -> None:
            flushed.append(True)

    app, _ = make_app(store=FlushingStore())
    with TestClient(app):
        assert flushed == []
    assert flushed == [True]


# -- FastAPI -------------------------------------------------------------------------------------

def test_fastapi_endpoints_with_budgeted() -> None:
    store = MemoryStore()
    api = FastAPI()
    api.add_middleware(IdentityMiddleware, store=store, default_budgets={"daily": "0.10"})

    @api.post("/chat")
    @budgeted(estimate="0.04")
    async def chat(payload: dict[str, Any]) -> dict[str, Any]:
        record_usage("0.04", input_tokens=len(payload["messages"]))
        identity = current_identity()
        return {"identity": identity.external_id if identity else None}

    @api.get("/sync")
    @budgeted()
    def sync_chat() -> dict[str, Any]:
        identity = current_identity()
        return {"identity": identity.external_id if identity else None}

    with TestClient(api) as client:
        body = {"identity": {"id": "fa"}, "messages": ["hi", "there"]}
        assert client.post("/chat", json=body).json() == {"identity": "fa"}
        assert client.post("/chat", json=body).status_code == 200  # 0.04 spent + 0.04 ≤ 0.10
        assert client.post("/chat", json=body).status_code == 429  # 0.08 + 0.04 > 0.10
        assert client.get("/sync", headers={"X-Identity-Id": "fa"}).json() == {"identity": "fa"}
        assert client.get("/sync").status_code == 401
    assert store.metrics("fa").input_tokens == 4


def test_a_budgeted_view_still_serves_an_identified_request_during_an_open_outage() -> None:
    app, _ = make_app(store=BrokenStore())
    with TestClient(app) as client:
        assert client.post("/llm", json={"identity": {"id": "u"}}).status_code == 200
        assert client.post("/llm", json={"messages": []}).status_code == 401


@pytest.mark.parametrize("kind", ["redis", "redis-cluster"])
def test_rate_limits_and_budgets_on_redis_through_the_middleware(kind: str, make_store: Any) -> None:
    store = make_store(kind)
    app = Starlette(routes=ROUTES, middleware=[Middleware(IdentityMiddleware, store=store, rate_limit="3/minute",
                                                          default_budgets={"daily": "0.05"})])
    app.state.store = store
    user = f"rl-{kind}"
    with TestClient(app) as client:
        codes = [client.post("/echo?cost=0.02", json={"identity": {"id": user}}).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]  # the 3/minute limit, not the budget, refuses the 4th
    metrics = store.metrics(user)
    assert (metrics.total_requests, metrics.total_errors, metrics.total_cost) == (4, 1, Decimal("0.06"))
    status = store.budget_status(user)[0]
    assert (status.spent, status.remaining) == (Decimal("0.06"), Decimal("0"))


# The store protocol's promise (Store.asettle): the settlement is taken before the first await, so
# the middleware needs no cancel shield (one costs ~12 us a request under anyio).
@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_a_cancelled_request_is_still_metered(kind: str, make_store: Any) -> None:
    store = make_store(kind)
    reached: list[anyio.Event] = []  # made on the loop

    async def hangs(request: Request) -> Response:
        record_usage("0.05")
        reached[0].set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    app = IdentityMiddleware(Starlette(routes=[Route("/hang", hangs)]), store=store)

    async def main() -> None:
        reached.append(anyio.Event())

        async def receive() -> dict[str, Any]:
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            pass

        scope = {"type": "http", "method": "GET", "path": "/hang", "raw_path": b"/hang", "root_path": "",
                 "query_string": b"", "headers": [(b"x-identity-id", b"cancelled")], "scheme": "http",
                 "server": ("t", 80), "client": ("127.0.0.1", 1), "asgi": {"version": "3.0"},
                 "http_version": "1.1"}
        async with anyio.create_task_group() as group:
            group.start_soon(app, scope, receive, send)
            await reached[0].wait()  # the view has recorded its usage and hangs
            group.cancel_scope.cancel()  # the server gives up on the request: a real cancellation

    anyio.run(main)
    metrics = store.metrics("cancelled")
    assert (metrics.total_cost, metrics.total_requests, metrics.error_rate) == (Decimal("0.05"), 1, 1.0)


def test_an_invalid_option_fails_where_the_app_is_built() -> None:
    with pytest.raises(InvalidOption, match=r"default_budgets\['daily'\]"):
        IdentityMiddleware(Starlette(), default_budgets={"daily": "ten dollars"})


def test_an_invalid_option_added_to_fastapi_stops_the_lifespan_startup() -> None:
    from fastapi import FastAPI

    app = FastAPI()
    app.add_middleware(IdentityMiddleware, store=MemoryStore(), default_budgets={"daily": "ten dollars"})
    messages: list[dict[str, Any]] = []

    async def main() -> None:
        incoming = [{"type": "lifespan.startup"}]

        async def receive() -> dict[str, Any]:
            return incoming.pop(0)

        async def send(message: dict[str, Any]) -> None:
            messages.append(message)

        with pytest.raises(InvalidOption):  # uvicorn stops on the failed startup ("Application startup failed")
            await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)

    anyio.run(main)
    assert [message["type"] for message in messages] == ["lifespan.startup.failed"]
    assert "default_budgets['daily']" in messages[0]["message"]
