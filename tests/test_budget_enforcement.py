"""The middleware enforces model, provider and workspace budgets: the model comes from the JSON body."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from identity_middleware import IdentityMiddleware, record_usage
from identity_middleware.core.budgets import BudgetSpec
from identity_middleware.core.resolve import model_from_body
from identity_middleware.stores import MemoryStore


async def chat(request: Request) -> JSONResponse:
    body = await request.json()
    record_usage(cost=Decimal("0.05"), input_tokens=3, output_tokens=4, model=body["model"])
    return JSONResponse({"ok": True})


def app(store: MemoryStore, **options: object) -> TestClient:
    application = Starlette(routes=[Route("/chat", chat, methods=["POST"])])
    application.add_middleware(IdentityMiddleware, store=store, **options)
    return TestClient(application)


def test_a_provider_budget_blocks_through_the_configured_map_with_budget_id_and_scope() -> None:
    store = MemoryStore(providers={"gpt-4o": "openai"})
    budget = store.create_budget(BudgetSpec(scope="provider", target="openai", period="daily", amount="0.10"))
    client = app(store)
    for _ in range(2):
        assert client.post("/chat", json={"model": "gpt-4o"}, headers={"X-Identity-Id": "u"}).status_code == 200
    refused = client.post("/chat", json={"model": "gpt-4o"}, headers={"X-Identity-Id": "v"})
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["type"] == "budget_exceeded" and error["budget_id"] == budget.id and error["scope"] == "provider"
    assert client.post("/chat", json={"model": "claude-3"}, headers={"X-Identity-Id": "v"}).status_code == 200


def test_a_token_limit_blocks_like_an_amount() -> None:
    store = MemoryStore()
    store.create_budget(BudgetSpec(scope="model", target="m", period="monthly", token_limit=7))
    client = app(store)
    assert client.post("/chat", json={"model": "m"}, headers={"X-Identity-Id": "u"}).status_code == 200
    assert client.post("/chat", json={"model": "m"}, headers={"X-Identity-Id": "u"}).status_code == 429


@pytest.mark.parametrize(("body", "model"), [
    (b'{"model": "openai/gpt-4o", "messages": []}', "openai/gpt-4o"),
    (b'{"model": "  gpt-4o "}', "gpt-4o"),
    (b'{"model": 4}', None), (b'{"model": ""}', None), (b"[1]", None), (b"{", None), (b"", None),
    (b'{"model": "a\\u0000b"}', None), (b'{"model": "' + b"x" * 300 + b'"}', None), (b"\xff\xfe", None),
])
def test_model_from_body(body: bytes, model: str | None) -> None:
    assert model_from_body(body) == model


@given(st.binary(max_size=200))
def test_model_from_body_never_raises(body: bytes) -> None:
    model_from_body(body)
