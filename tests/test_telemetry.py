"""OpenTelemetry: the request's span carries the identity and the flow's decision (ASGI and WSGI)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from identity_middleware import IdentityMiddleware, IdentityWSGIMiddleware
from identity_middleware.stores import MemoryStore

IDENTITY, DECISION = "identity_middleware.identity", "identity_middleware.decision"


@pytest.fixture
def spans() -> Iterator[tuple[Any, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test"), exporter
    provider.shutdown()


def attributes(exporter: InMemorySpanExporter) -> list[dict[str, Any]]:
    return [dict(span.attributes or {}) for span in exporter.get_finished_spans()]


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def test_asgi_spans_carry_identity_and_decision(spans: tuple[Any, InMemorySpanExporter]) -> None:
    tracer, exporter = spans
    inner = Starlette(routes=[Route("/", ok, methods=["GET", "POST"])])
    inner.add_middleware(IdentityMiddleware, store=MemoryStore(), require_identity=True)

    async def traced(scope: Any, receive: Any, send: Any) -> None:  # what an ASGI instrumentation does
        if scope["type"] != "http":
            await inner(scope, receive, send)
            return
        with tracer.start_as_current_span("request"):
            await inner(scope, receive, send)

    with TestClient(traced) as client:
        assert client.get("/", headers={"X-Identity-Id": "u1"}).status_code == 200
        assert client.get("/").status_code == 401
        assert client.get("/", headers={"X-Identity-Id": "bad\x01"}).status_code == 400
    assert attributes(exporter) == [{IDENTITY: "u1", DECISION: "tracked"}, {DECISION: "identity_required"},
                                    {DECISION: "invalid_identity"}]


def test_wsgi_spans_carry_identity_and_decision(spans: tuple[Any, InMemorySpanExporter]) -> None:
    tracer, exporter = spans
    app = Flask(__name__)
    app.get("/")(lambda: "ok")
    wrapped = IdentityWSGIMiddleware(app.wsgi_app, store=MemoryStore(), create_missing=False)

    def traced(environ: Any, start_response: Any) -> Any:
        with tracer.start_as_current_span("request"):
            return list(wrapped(environ, start_response))

    app.wsgi_app = traced  # type: ignore[method-assign]
    client = app.test_client()
    assert client.get("/", headers={"X-Identity-Id": "ghost"}).status_code == 200
    assert client.get("/").status_code == 200
    assert attributes(exporter) == [{IDENTITY: "ghost", DECISION: "untracked"}, {DECISION: "anonymous"}]
