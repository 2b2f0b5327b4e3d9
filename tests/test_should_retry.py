"""A budget 429 says ``x-should-retry: false``: the real OpenAI and Anthropic SDKs give up at once,
on every shell (ASGI, WSGI, Django), instead of retrying a refusal that lasts until the period resets."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import anyio
import httpx
import httpx2
import openai
import pytest
from flask import Flask
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

import django_project

django_project.setup()

from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.test import override_settings  # noqa: E402

from django_project.settings import SITE  # noqa: E402
from identity_middleware import Budget, IdentityInput, IdentityMiddleware, IdentityWSGIMiddleware  # noqa: E402
from identity_middleware.core.admission import AdmissionRequest  # noqa: E402
from identity_middleware.core.budgets import BudgetPeriod, BudgetSpec, ScopeKind  # noqa: E402
from identity_middleware.stores import MemoryStore, Store  # noqa: E402

SHELLS = ("asgi", "wsgi", "django")
SPENT = {"X-Identity-Id": "spent"}
RETRIES = 2  # each SDK would send the request 1 + RETRIES times if told nothing
# Told nothing, the OpenAI SDK would wait out a Retry-After of up to 60 s between attempts: fail fast.
pytestmark = pytest.mark.timeout(30)


@pytest.fixture(params=["spent", "requests_per_minute"])
def store(request: pytest.FixtureRequest) -> Store:
    """An identity every request of which answers 429 budget_exceeded: its daily budget is spent
    (Retry-After: hours), or its budget's requests per minute are used up (Retry-After <= 60 s, which
    the OpenAI SDK would retry after: it gives up by itself only on a Retry-After over two minutes)."""
    store = MemoryStore()
    store.create(IdentityInput(id="spent"))
    if request.param == "spent":
        store.set_budget("spent", Budget(period="daily", amount="0.01"))
        store.record("spent", cost="0.01")
    else:
        store.create_budget(BudgetSpec(scope=ScopeKind.IDENTITY, target="spent", period=BudgetPeriod.DAILY,
                                       requests_per_minute=1))
        store.admit(AdmissionRequest("spent"))
    return store


def _never_called(*args: Any) -> Any:
    raise AssertionError("the app is not called for a refused request")


@pytest.fixture(params=SHELLS)
def shell(request: pytest.FixtureRequest, store: Store) -> Iterator[tuple[bool, Any]]:
    """Whether the shell is ASGI, and its app (the SDK's requests go through it over real HTTP)."""
    if request.param == "asgi":
        yield True, Starlette(routes=[Route("/{path:path}", _never_called, methods=["POST"])],
                              middleware=[Middleware(IdentityMiddleware, store=store)])
    elif request.param == "wsgi":
        flask = Flask(__name__)
        flask.add_url_rule("/<path:path>", view_func=_never_called, methods=["POST"])
        flask.wsgi_app = IdentityWSGIMiddleware(flask.wsgi_app, store=store)  # type: ignore[method-assign]
        yield False, flask
    else:
        with override_settings(**{**SITE, "IDENTITY_MIDDLEWARE": {"STORE": store}}):
            yield False, WSGIHandler()


def _requests(store: Store) -> int:
    return store.metrics("spent").total_requests  # a refused request is counted too


def _sdk_call(shell: tuple[bool, Any], http: Any, call: Callable[[Any], Any], make_sync: Callable[[Any], Any],
              make_async: Callable[[Any], Any]) -> Any:
    """``call(client)``: an async client over an ASGI app, a sync one over a WSGI app; ``http`` is
    the SDK's HTTP package (openai uses httpx, anthropic httpx2)."""
    is_asgi, app = shell
    if is_asgi:
        async def run() -> Any:
            async with http.AsyncClient(transport=http.ASGITransport(app=app)) as client:
                return await call(make_async(client))

        return anyio.run(run)
    with http.Client(transport=http.WSGITransport(app=app)) as client:
        return call(make_sync(client))


def test_openai_sdk_does_not_retry_a_budget_429(shell: tuple[bool, Any], store: Store) -> None:
    before = _requests(store)
    options = {"api_key": "k", "base_url": "http://app/v1", "max_retries": RETRIES, "default_headers": SPENT}
    with pytest.raises(openai.RateLimitError) as raised:
        _sdk_call(shell, httpx,
                  lambda client: client.chat.completions.create(model="gpt-4o-mini",
                                                                messages=[{"role": "user", "content": "hi"}]),
                  lambda http: openai.OpenAI(http_client=http, **options),
                  lambda http: openai.AsyncOpenAI(http_client=http, **options))
    response = raised.value.response
    assert response.status_code == 429 and response.headers["x-should-retry"] == "false"
    assert response.json()["error"]["type"] == "budget_exceeded"
    assert _requests(store) == before + 1  # sent once, not 1 + RETRIES times


def test_anthropic_sdk_does_not_retry_a_budget_429(shell: tuple[bool, Any], store: Store) -> None:
    before = _requests(store)
    options = {"api_key": "k", "base_url": "http://app", "max_retries": RETRIES, "default_headers": SPENT}
    with pytest.raises(anthropic.RateLimitError) as raised:
        _sdk_call(shell, httpx2,
                  lambda client: client.messages.create(model="claude-sonnet-4-5", max_tokens=10,
                                                        messages=[{"role": "user", "content": "hi"}]),
                  lambda http: anthropic.Anthropic(http_client=http, **options),
                  lambda http: anthropic.AsyncAnthropic(http_client=http, **options))
    assert raised.value.response.headers["x-should-retry"] == "false"
    assert _requests(store) == before + 1
