"""The shell contract: the same scenarios over every framework shell, through each framework's own test client.

Starlette, FastAPI, Flask, Django sync and Django async each serve the same four views (a chat that
records $0.01, one that raises, one that answers 503, a streamed answer recording $0.01 per chunk)
and one open page, with the identity from the body, a header or the framework's authenticated
user; on MemoryStore and RedisStore.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

import django_project

django_project.setup()

from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse  # noqa: E402
from django.test import AsyncClient, Client, override_settings  # noqa: E402
from django.urls import path  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from flask import Flask  # noqa: E402
from flask import Response as FlaskResponse  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.authentication import AuthCredentials, AuthenticationBackend, BaseUser, SimpleUser  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402
from starlette.middleware.authentication import AuthenticationMiddleware  # noqa: E402
from starlette.requests import HTTPConnection, Request  # noqa: E402
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from django_project.settings import SITE  # noqa: E402
from identity_middleware import (  # noqa: E402  # noqa: E402
    Budget,
    IdentityInput,
    IdentityMiddleware,
    IdentityWSGIMiddleware,
    current_identity,
    record_usage,
)
from identity_middleware.config import InvalidOption  # noqa: E402
from identity_middleware.core.budgets import Alert, BudgetSpec  # noqa: E402
from identity_middleware.stores import MemoryStore, Store  # noqa: E402

SHELLS = ("starlette", "fastapi", "flask", "django-sync", "django-async")
AUTH_PREFIX = "User "


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Post = Callable[..., Answer]  # post(path, json=None, headers=None) -> Answer


def _named() -> dict[str, str | None]:
    identity = current_identity()
    return {"for": identity.external_id if identity is not None else None}


def _chunks() -> Iterator[bytes]:
    for chunk in (b"a", b"b"):
        record_usage("0.01")
        yield chunk


async def _achunks() -> AsyncIterator[bytes]:
    for chunk in (b"a", b"b"):
        record_usage("0.01")
        yield chunk


class Boom(Exception):
    pass


# -- Starlette and FastAPI ------------------------------------------------------------------------------
class HeaderAuth(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        value = conn.headers.get("authorization", "")
        return (AuthCredentials(["authenticated"]), SimpleUser(value[len(AUTH_PREFIX):])) \
            if value.startswith(AUTH_PREFIX) else None


async def s_chat(request: Request) -> Response:
    record_usage("0.01", input_tokens=3, output_tokens=2)
    return JSONResponse(_named())


async def s_boom(request: Request) -> Response:
    record_usage("0.01")
    raise Boom


async def s_unavailable(request: Request) -> Response:
    record_usage("0.01")
    return PlainTextResponse("down", status_code=503)


async def s_stream(request: Request) -> Response:
    return StreamingResponse(_achunks())


async def s_open(request: Request) -> Response:
    return JSONResponse(_named())


def _starlette(options: dict[str, Any], auth: bool) -> Starlette:
    return Starlette(
        routes=[Route("/chat", s_chat, methods=["POST"]), Route("/boom", s_boom, methods=["POST"]),
                Route("/unavailable", s_unavailable, methods=["POST"]), Route("/stream", s_stream, methods=["POST"]),
                Route("/open", s_open, methods=["POST"])],
        middleware=[*([Middleware(AuthenticationMiddleware, backend=HeaderAuth())] if auth else []),
                    Middleware(IdentityMiddleware, **options)])


def _fastapi(options: dict[str, Any], auth: bool) -> FastAPI:
    app = FastAPI()

    @app.post("/chat")
    async def chat() -> dict[str, str | None]:
        record_usage("0.01", input_tokens=3, output_tokens=2)
        return _named()

    @app.post("/boom")
    async def boom() -> None:
        record_usage("0.01")
        raise Boom

    @app.post("/unavailable")
    async def unavailable() -> Response:
        record_usage("0.01")
        return PlainTextResponse("down", status_code=503)

    @app.post("/stream")
    async def stream() -> StreamingResponse:
        return StreamingResponse(_achunks())

    @app.post("/open")
    async def open_page() -> dict[str, str | None]:
        return _named()

    app.add_middleware(IdentityMiddleware, **options)
    if auth:
        app.add_middleware(AuthenticationMiddleware, backend=HeaderAuth())  # added last: runs first
    return app


def asgi_client(app: Any) -> Iterator[Post]:
    with TestClient(app, raise_server_exceptions=False) as client:
        def post(where: str, json: Any = None, headers: dict[str, str] | None = None) -> Answer:
            response = client.post(where, json=json, headers=headers or {})
            return Answer(response.status_code, dict(response.headers), response.content)

        yield post


# -- Flask ----------------------------------------------------------------------------------------------
def _flask(options: dict[str, Any]) -> Flask:
    app = Flask(__name__)

    @app.post("/chat")
    def chat() -> Any:
        record_usage("0.01", input_tokens=3, output_tokens=2)
        return _named()

    @app.post("/boom")
    def boom() -> Any:
        record_usage("0.01")
        raise Boom

    @app.post("/unavailable")
    def unavailable() -> Any:
        record_usage("0.01")
        return "down", 503

    @app.post("/stream")
    def stream() -> Any:
        return FlaskResponse(_chunks())

    @app.post("/open")
    def open_page() -> Any:
        return _named()

    inner = app.wsgi_app

    def with_remote_user(environ: dict[str, Any], start_response: Any) -> Any:
        value = environ.get("HTTP_AUTHORIZATION", "")
        if value.startswith(AUTH_PREFIX):  # as a server's authentication sets it (PEP 3333)
            environ["REMOTE_USER"] = value[len(AUTH_PREFIX):]
        return identity(environ, start_response)

    identity = IdentityWSGIMiddleware(inner, **options)
    app.wsgi_app = with_remote_user  # type: ignore[method-assign]
    return app


def flask_client(app: Flask) -> Iterator[Post]:
    app.testing = False  # an exception in a view is a 500, as in production
    client = app.test_client()

    def post(where: str, json: Any = None, headers: dict[str, str] | None = None) -> Answer:
        response = client.post(where, json=json, headers=headers or {})
        return Answer(response.status_code, dict(response.headers), response.get_data())

    yield post


# -- Django (this module is the URLconf) -----------------------------------------------------------------
class _User:
    def __init__(self, name: str) -> None:
        self.name = name
        self.is_authenticated = bool(name)

    def get_username(self) -> str:
        return self.name


class HeaderUserMiddleware:
    """Sets ``request.user`` from ``Authorization: User <name>``, as AuthenticationMiddleware would."""

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        value = request.headers.get("Authorization", "")
        name = value[len(AUTH_PREFIX):] if value.startswith(AUTH_PREFIX) else ""
        request.user = _User(name)  # type: ignore[assignment]  # anonymous without the header
        return self.get_response(request)


def d_chat(request: HttpRequest) -> HttpResponse:
    record_usage("0.01", input_tokens=3, output_tokens=2)
    return JsonResponse(_named())


def d_boom(request: HttpRequest) -> HttpResponse:
    record_usage("0.01")
    raise Boom


def d_unavailable(request: HttpRequest) -> HttpResponse:
    record_usage("0.01")
    return HttpResponse("down", status=503)


def d_stream(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(_chunks())


def d_open(request: HttpRequest) -> HttpResponse:
    return JsonResponse(_named())


async def da_chat(request: HttpRequest) -> HttpResponse:
    return d_chat(request)


async def da_boom(request: HttpRequest) -> HttpResponse:
    return d_boom(request)


async def da_unavailable(request: HttpRequest) -> HttpResponse:
    return d_unavailable(request)


async def da_stream(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(_achunks())


async def da_open(request: HttpRequest) -> HttpResponse:
    return d_open(request)


urlpatterns = [
    path("chat", d_chat), path("boom", d_boom), path("unavailable", d_unavailable), path("stream", d_stream),
    path("open", d_open),
    path("async/chat", da_chat), path("async/boom", da_boom), path("async/unavailable", da_unavailable),
    path("async/stream", da_stream), path("async/open", da_open),
]


def _django_client(options: dict[str, Any], asynchronous: bool, auth: bool, urlconf: str = __name__) -> Iterator[Post]:
    settings = {key.upper(): value for key, value in options.items()}
    middleware = [*([f"{__name__}.HeaderUserMiddleware"] if auth else []), SITE["MIDDLEWARE"][-1]]
    with override_settings(**{**SITE, "ROOT_URLCONF": urlconf, "IDENTITY_MIDDLEWARE": settings,
                              "MIDDLEWARE": middleware}):
        prefix = "/async" if asynchronous else ""

        def headers_of(headers: dict[str, str] | None) -> dict[str, str]:
            return headers or {}

        if asynchronous:
            client = AsyncClient(raise_request_exception=False)

            def post(where: str, json: Any = None, headers: dict[str, str] | None = None) -> Answer:
                response = asyncio.run(_apost(client, prefix + where, json, headers_of(headers)))
                return response

        else:
            sync_client = Client(raise_request_exception=False)

            def post(where: str, json: Any = None, headers: dict[str, str] | None = None) -> Answer:
                response = sync_client.post(prefix + where, data=_json_text(json), content_type="application/json",
                                            headers=headers_of(headers))
                body = b"".join(response.streaming_content) if response.streaming else response.content  # type: ignore[attr-defined, arg-type]
                response.close()
                return Answer(response.status_code, {k.lower(): v for k, v in response.items()}, body)

        yield post


async def _apost(client: AsyncClient, where: str, json: Any, headers: dict[str, str]) -> Answer:
    response = await client.post(where, data=_json_text(json), content_type="application/json", headers=headers)
    body = b"".join([chunk async for chunk in response.streaming_content]) if response.streaming \
        else response.content  # type: ignore[union-attr]
    return Answer(response.status_code, {k.lower(): v for k, v in response.items()}, body)


def _json_text(value: Any) -> str:
    return "" if value is None else json.dumps(value)


# -- the fixture: serve(**options) -> post ---------------------------------------------------------------
@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, make_store: Callable[..., Store]) -> Store:
    return make_store(str(request.param))


@pytest.fixture(params=SHELLS)
def serve(request: pytest.FixtureRequest, store: Store) -> Iterator[Callable[..., Post]]:
    shell = str(request.param)
    opened: list[Iterator[Post]] = []

    def start(auth: bool = True, **options: Any) -> Post:
        """The shell's app with ``options``; ``auth=False``: without the framework's authentication."""
        options = {"store": store, **options}
        if shell == "starlette":
            serving = asgi_client(_starlette(options, auth))
        elif shell == "fastapi":
            serving = asgi_client(_fastapi(options, auth))
        elif shell == "flask":
            serving = flask_client(_flask(options))
        else:
            serving = _django_client(options, shell == "django-async", auth)
        opened.append(serving)
        return next(serving)

    yield start
    for serving in reversed(opened):
        serving.close()


def _settled(store: Store, external_id: str) -> tuple[int, int, Decimal]:
    store.flush()  # a batching store writes what it holds back
    metrics = store.metrics(external_id)
    return metrics.total_requests, metrics.total_errors, metrics.total_cost


# -- the scenarios ------------------------------------------------------------------------------------
def test_the_identity_from_the_body_is_current_in_the_view(serve: Callable[..., Post], store: Store) -> None:
    post = serve()
    answer = post("/chat", json={"identity": {"id": "from-body", "display_name": "Body"}})
    assert (answer.status, answer.json()) == (200, {"for": "from-body"})
    assert store.retrieve("from-body").display_name == "Body"


def test_the_identity_from_a_header(serve: Callable[..., Post]) -> None:
    answer = serve()("/chat", headers={"X-Identity-Id": "from-header"})
    assert (answer.status, answer.json()) == (200, {"for": "from-header"})


def test_the_identity_from_the_authenticated_user(serve: Callable[..., Post]) -> None:
    answer = serve()("/chat", headers={"Authorization": "User from-auth"})
    assert (answer.status, answer.json()) == (200, {"for": "from-auth"})


def test_an_invalid_identity_is_a_400(serve: Callable[..., Post]) -> None:
    answer = serve()("/chat", json={"identity": {"id": "x" * 300}})
    assert answer.status == 400 and answer.json()["error"]["type"] == "invalid_identity"


def test_a_required_identity_missing_is_a_401(serve: Callable[..., Post]) -> None:
    answer = serve(require_identity=True)("/chat", json={"messages": []})
    assert answer.status == 401 and answer.json()["error"]["type"] == "identity_required"


def test_under_auth_only_the_401_says_only_auth_names_the_identity(serve: Callable[..., Post]) -> None:
    answer = serve(sources=("auth",), require_identity=True)("/chat", json={"identity": {"id": "claimed"}})
    message = answer.json()["error"]["message"]
    assert answer.status == 401 and "authentication" in message and "send an identity" not in message


def test_a_spent_budget_is_a_429_with_retry_after(serve: Callable[..., Post], store: Store) -> None:
    store.create(IdentityInput(id="spent"))
    store.set_budget("spent", Budget(period="daily", amount=Decimal("0.01")))
    store.record("spent", cost=Decimal("0.01"))
    answer = serve()("/chat", headers={"X-Identity-Id": "spent"})
    assert answer.status == 429 and answer.json()["error"]["type"] == "budget_exceeded"
    assert int(answer.headers["retry-after"]) > 0


def test_usage_is_recorded_once_per_request(serve: Callable[..., Post], store: Store) -> None:
    post = serve()
    for _ in range(2):
        assert post("/chat", headers={"X-Identity-Id": "once"}).status == 200
    assert _settled(store, "once") == (2, 0, Decimal("0.02"))
    assert store.metrics("once").input_tokens == 6


def test_an_app_that_raises_is_counted_as_an_error_with_its_usage(serve: Callable[..., Post], store: Store) -> None:
    assert serve()("/boom", headers={"X-Identity-Id": "raises"}).status == 500
    assert _settled(store, "raises") == (1, 1, Decimal("0.01"))


def test_a_5xx_answer_is_counted_as_an_error(serve: Callable[..., Post], store: Store) -> None:
    assert serve()("/unavailable", headers={"X-Identity-Id": "answers-503"}).status == 503
    assert _settled(store, "answers-503") == (1, 1, Decimal("0.01"))


def test_a_streamed_response_settles_once_at_its_end(serve: Callable[..., Post], store: Store) -> None:
    answer = serve()("/stream", headers={"X-Identity-Id": "streams"})
    assert (answer.status, answer.body) == (200, b"ab")
    assert _settled(store, "streams") == (1, 0, Decimal("0.02"))


def test_a_request_naming_nobody_passes_through_untracked(serve: Callable[..., Post], store: Store) -> None:
    answer = serve()("/open", json={"messages": []})
    assert (answer.status, answer.json()) == (200, {"for": None})
    assert store.list().data == []


# WSGI has no user object to miss (the server sets REMOTE_USER or not): every other shell.
@pytest.mark.parametrize("serve", [shell for shell in SHELLS if shell != "flask"], indirect=True)
def test_a_missing_authenticated_user_is_logged_once(
        serve: Callable[..., Post], caplog: pytest.LogCaptureFixture) -> None:
    post = serve(auth=False, sources=("auth",))  # the framework's authentication left out
    with caplog.at_level(logging.WARNING, logger="identity_middleware"):
        assert [post("/open").status for _ in range(3)] == [200] * 3
    told = [message for message in caplog.messages if "no request is named by its user" in message]
    assert len(told) == 1 and "AuthenticationMiddleware" in told[0]


def test_with_the_authentication_in_place_nothing_is_logged(
        serve: Callable[..., Post], caplog: pytest.LogCaptureFixture) -> None:
    post = serve(sources=("auth",))
    with caplog.at_level(logging.WARNING, logger="identity_middleware"):
        assert post("/open").status == 200
    assert not [message for message in caplog.messages if "no request is named by its user" in message]


# -- the store's options are its own: serving over a store leaves it as it was built -------------------
class Received:
    """A notifier (a callable one): the alerts delivered to it."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)


def _spent_provider_budget(store: Store) -> str:
    """An "openai" provider budget, spent, alerting "ops" when it is."""
    budget = store.create_budget(BudgetSpec(scope="provider", target="openai", period="daily", amount="0.01",
                                            alerts=[Alert(threshold_percent=100, notifier_ids=("ops",))]))
    store.create(IdentityInput(id="spender"))
    store.record("spender", cost="0.01", model="openai/gpt-4o")
    store.flush()
    return budget.id


def _model(post: Post, model: str) -> Answer:
    return post("/chat", json={"model": model}, headers={"X-Identity-Id": "caller"})


def test_the_provider_map_and_the_alerts_are_the_ones_the_store_was_built_with(
        serve: Callable[..., Post], store: Store, make_store: Callable[..., Store]) -> None:
    received = Received()
    kind = "memory" if isinstance(store, MemoryStore) else "redis"
    mapped = make_store(kind, providers={"gpt-4o": "openai"}, notifiers={"ops": received})
    budget_id = _spent_provider_budget(mapped)
    post = serve(store=mapped)
    refused = _model(post, "gpt-4o")  # the shell was told no providers: the store's map applies
    assert refused.status == 429 and refused.json()["error"]["budget_id"] == budget_id
    assert _model(post, "claude-3").status == 200
    assert mapped.alerts is not None and mapped.alerts.drain(10)
    assert [(event["type"], event["budget_id"]) for event in received.events] == [
        ("budget.threshold_reached", budget_id)]


def test_a_store_built_without_a_provider_map_serves_without_one(serve: Callable[..., Post], store: Store) -> None:
    budget_id = _spent_provider_budget(store)
    post = serve()
    assert _model(post, "gpt-4o").status == 200  # no map: "gpt-4o" names no provider
    refused = _model(post, "openai/gpt-4o")
    assert refused.status == 429 and refused.json()["error"]["budget_id"] == budget_id
    assert store.providers == {} and store.alerts is None


@pytest.mark.parametrize("option", [{"providers": {"gpt-4o": "openai"}},
                                    {"notifiers": {"ops": "https://hooks.example.com/budget"}},
                                    {"notifier_secret": "secret"}])
def test_a_store_option_given_to_the_middleware_is_refused_saying_where_it_goes(
        serve: Callable[..., Post], store: Store, option: dict[str, Any]) -> None:
    (name,) = option
    with pytest.raises((InvalidOption, ImproperlyConfigured)) as raised:
        serve(**option)("/chat", headers={"X-Identity-Id": "u"})
    assert f"{name}= is an option of the store, not of the middleware: MemoryStore({name}=...) or " \
           f"RedisStore.from_url(url, {name}=...)" in str(raised.value)
    assert store.providers == {} and store.alerts is None
