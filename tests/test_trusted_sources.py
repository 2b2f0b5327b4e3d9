"""Who may name an identity: ``sources=``, ``may_act_for=`` and signed headers, through real apps."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, BaseUser, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from identity_middleware import (
    IdentityInput,
    IdentityMiddleware,
    IdentityWSGIMiddleware,
    current_identity,
    record_usage,
)
from identity_middleware.core.signing import sign
from identity_middleware.stores import MemoryStore

KEY = "test-signing-key"


class BearerUser(AuthenticationBackend):
    """``Authorization: Bearer <username>`` authenticates <username> (a stand-in for real auth)."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        scheme, _, name = conn.headers.get("authorization", "").partition(" ")
        return (AuthCredentials(["authenticated"]), SimpleUser(name)) if scheme == "Bearer" and name else None


async def chat(request: Request) -> JSONResponse:
    record_usage("0.01")
    identity = current_identity()
    return JSONResponse({"identity": identity.external_id if identity else None})


@pytest.fixture
def store() -> MemoryStore:
    store = MemoryStore()
    store.create(IdentityInput(id="bob", display_name="Bob", email="bob@example.com"))
    return store


def asgi_client(store: MemoryStore, **options: Any) -> Iterator[TestClient]:
    app = Starlette(routes=[Route("/chat", chat, methods=["POST"])], middleware=[
        Middleware(AuthenticationMiddleware, backend=BearerUser()),
        Middleware(IdentityMiddleware, store=store, **options),
    ])
    with TestClient(app) as client:
        yield client


def as_user(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {name}"}


BOB_BODY = {"model": "m", "identity": {"id": "bob", "display_name": "Not Bob", "email": "mallory@example.com"}}


def test_auth_only_charges_the_authenticated_user_whatever_the_body_or_header_say(store: MemoryStore) -> None:
    for client in asgi_client(store, sources=("auth",)):
        answer = client.post("/chat", json=BOB_BODY, headers={**as_user("alice"), "X-Identity-Id": "bob"})
        assert answer.status_code == 200 and answer.json() == {"identity": "alice"}
        assert client.post("/chat", json=BOB_BODY).status_code == 200  # anonymous: untracked
    bob = store.retrieve("bob")
    assert (bob.display_name, bob.email) == ("Bob", "bob@example.com")  # not overwritten
    assert store.metrics("bob").total_requests == 0 and store.metrics("alice").total_requests == 1


def test_may_act_for_refuses_a_principal_naming_someone_else(store: MemoryStore) -> None:
    def may_act_for(principal: str, claimed: str) -> bool:
        return principal == "support-bot"

    for client in asgi_client(store, may_act_for=may_act_for):
        refused = client.post("/chat", json=BOB_BODY, headers=as_user("alice"))
        assert refused.status_code == 403 and refused.json()["error"]["type"] == "identity_forbidden"
        assert client.post("/chat", headers={**as_user("alice"), "X-Identity-Id": "fresh-id"}).status_code == 403
        own = client.post("/chat", json={"identity": {"id": "alice"}}, headers=as_user("alice"))
        assert own.json() == {"identity": "alice"}
        allowed = client.post("/chat", headers={**as_user("support-bot"), "X-Identity-Id": "bob"})
        assert allowed.json() == {"identity": "bob"}
    assert store.retrieve("bob").display_name == "Bob"
    assert store.metrics("bob").total_cost == store.metrics("alice").total_cost
    with pytest.raises(LookupError):
        store.retrieve("fresh-id")


def test_sources_order_puts_auth_first(store: MemoryStore) -> None:
    for client in asgi_client(store, sources=("auth", "header")):
        assert client.post("/chat", headers={**as_user("alice"), "X-Identity-Id": "bob"}).json() == {
            "identity": "alice"}
        assert client.post("/chat", headers={"X-Identity-Id": "bob"}).json() == {"identity": "bob"}
        assert client.post("/chat", json=BOB_BODY).json() == {"identity": None}  # the body is not a source


@pytest.mark.parametrize(("signature", "reason"), [
    (None, "missing"),
    (lambda now: sign(KEY, "bob", now - 301), "stale"),
    (lambda now: sign(KEY, "mallory", now), "wrong signature"),
    (lambda now: sign("another-key", "bob", now), "wrong signature"),
    (lambda now: "v1=00", "malformed"),
])
def test_a_signed_header_is_required_when_a_key_is_set(store: MemoryStore, signature: Any, reason: str) -> None:
    headers = {"X-Identity-Id": "bob"}
    if signature is not None:
        headers["X-Identity-Signature"] = signature(time.time())
    for client in asgi_client(store, signing_key=KEY, sources=("header",)):
        answer = client.post("/chat", headers=headers)
        assert answer.status_code == 401
        assert answer.json()["error"]["type"] == "identity_signature_invalid" and reason in answer.json()[
            "error"]["message"]
    assert store.metrics("bob").total_requests == 0


def test_a_valid_signature_admits_the_header_identity(store: MemoryStore) -> None:
    for client in asgi_client(store, signing_key=KEY, sources=("header",)):
        headers = {"X-Identity-Id": "bob", "X-Identity-Signature": sign(KEY, "bob", time.time() - 200)}
        assert client.post("/chat", headers=headers).json() == {"identity": "bob"}


def test_wsgi_honours_sources_and_may_act_for(store: MemoryStore) -> None:
    app = Flask(__name__)

    @app.post("/chat")
    def flask_chat() -> dict[str, Any]:
        record_usage("0.01")
        identity = current_identity()
        return {"identity": identity.external_id if identity else None}

    plain = app.wsgi_app
    app.wsgi_app = IdentityWSGIMiddleware(plain, store=store,  # type: ignore[method-assign]
                                          may_act_for=lambda principal, claimed: False)
    client = app.test_client()
    refused = client.post("/chat", json=BOB_BODY, environ_base={"REMOTE_USER": "alice"})
    assert refused.status_code == 403 and json.loads(refused.data)["error"]["type"] == "identity_forbidden"
    assert client.post("/chat", environ_base={"REMOTE_USER": "alice"}).json == {"identity": "alice"}
    app.wsgi_app = IdentityWSGIMiddleware(plain, store=store, sources=("auth",))  # type: ignore[method-assign]
    assert client.post("/chat", json=BOB_BODY, environ_base={"REMOTE_USER": "alice"}).status_code == 200
    assert store.retrieve("bob").display_name == "Bob"
