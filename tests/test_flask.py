"""IdentityWSGIMiddleware around a Flask app, through Flask's own test client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask, Response, g, jsonify, request, stream_with_context

from identity_middleware import Budget, IdentityInput, IdentityWSGIMiddleware, current_identity, record_usage
from identity_middleware.stores import Store
from identity_middleware.wsgi import ENVIRON_KEY

KINDS = ("memory", "redis")


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, make_store: Callable[..., Store]) -> Store:
    return make_store(str(request.param))


def make_app(store: Store, **options: Any) -> Flask:
    app = Flask(__name__)

    @app.post("/chat")
    def chat() -> Response:
        payload = request.get_json()
        record_usage(payload.get("cost", "0"), input_tokens=5, output_tokens=7, model="stand-in")
        who = current_identity()
        return jsonify(identity=who.external_id if who else None,
                       environ=getattr(request.environ.get(ENVIRON_KEY), "external_id", None),
                       messages=payload.get("messages"))

    @app.get("/whoami")
    def whoami() -> Response:
        who = current_identity()
        return jsonify(identity=who.external_id if who else None)

    @app.get("/boom")
    def boom() -> Response:
        record_usage("0.03")
        raise RuntimeError("model down")

    @app.get("/stream")
    def stream() -> Response:
        g.label = "streaming"

        def chunks() -> Iterator[str]:
            for index in range(3):
                record_usage("0.0001", output_tokens=2)
                who = current_identity()
                yield f"{index}:{who.external_id if who else '-'}:{g.label}\n"

        return Response(stream_with_context(chunks()), mimetype="text/plain")

    app.wsgi_app = IdentityWSGIMiddleware(app.wsgi_app, store=store, **options)  # type: ignore[method-assign]
    return app


def test_the_body_identity_wins_and_flask_still_reads_the_json(store: Store) -> None:
    client = make_app(store, resolver=lambda environ: "resolved").test_client()
    response = client.post("/chat", json={"identity": {"id": "ann", "email": "ann@example.com"},
                                          "messages": [{"role": "user", "content": "hi"}], "cost": "0.01"},
                           headers={"X-Identity-Id": "header-id"}, environ_base={"REMOTE_USER": "remote"})
    assert response.json == {"identity": "ann", "environ": "ann",
                             "messages": [{"role": "user", "content": "hi"}]}
    assert store.retrieve("ann").email == "ann@example.com"


def test_header_then_remote_user_then_resolver(store: Store) -> None:
    client = make_app(store, resolver=lambda environ: "resolved").test_client()
    assert client.get("/whoami", headers={"X-Identity-Id": "h"},
                      environ_base={"REMOTE_USER": "r"}).json == {"identity": "h"}
    assert client.get("/whoami", environ_base={"REMOTE_USER": "r"}).json == {"identity": "r"}
    assert client.get("/whoami").json == {"identity": "resolved"}


def test_invalid_body_identity_is_400_naming_the_field(store: Store) -> None:
    response = make_app(store).test_client().post("/chat", json={"identity": {"id": ""}})
    assert response.status_code == 400
    assert response.json is not None and response.json["error"]["field"] == "id"


def test_budget_exceeded_is_429_with_retry_after_and_usage_is_exact(store: Store) -> None:
    store.create(IdentityInput(id="bob"))
    store.set_budget("bob", Budget(period="weekly", amount=Decimal("0.03")))
    client = make_app(store).test_client()
    for _ in range(3):
        # Flask's client streams: the usage is committed when the response is closed, as a server does
        with client.post("/chat", json={"cost": "0.01"}, headers={"X-Identity-Id": "bob"}) as response:
            assert response.status_code == 200
    response = client.post("/chat", json={"cost": "0.01"}, headers={"X-Identity-Id": "bob"})
    assert response.status_code == 429 and int(response.headers["Retry-After"]) > 0
    assert response.json is not None and response.json["error"]["period"] == "weekly"
    metrics = store.metrics("bob")
    assert (metrics.total_cost, metrics.total_requests, metrics.total_errors) == (Decimal("0.03"), 4, 1)


def test_a_view_exception_commits_an_error_once(store: Store) -> None:
    client = make_app(store).test_client()
    with client.get("/boom", headers={"X-Identity-Id": "err"}) as response:
        assert response.status_code == 500
    metrics = store.metrics("err")
    assert (metrics.total_requests, metrics.total_errors, metrics.total_cost) == (1, 1, Decimal("0.03"))


def test_a_streamed_response_is_metered_chunk_by_chunk_and_settled_once(store: Store) -> None:
    client = make_app(store).test_client()
    response = client.get("/stream", headers={"X-Identity-Id": "flow"})
    assert response.get_data() == b"0:flow:streaming\n1:flow:streaming\n2:flow:streaming\n"
    response.close()
    metrics = store.metrics("flow")
    assert (metrics.total_requests, metrics.total_cost, metrics.output_tokens) == (1, Decimal("0.0003"), 6)
