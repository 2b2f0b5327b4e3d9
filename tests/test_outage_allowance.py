"""on_store_error per identity, and the local allowance: metered while Redis is down, written once when it returns."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from identity_middleware import Allowance, IdentityMiddleware, IdentityWSGIMiddleware, current_identity, record_usage
from identity_middleware.config import Config
from identity_middleware.core.money import to_nanos
from identity_middleware.flow.allowance import AllowanceLedger, choose
from identity_middleware.stores import RedisStore
from redis_servers import free_port, start_server, stop_servers

CENT = to_nanos("0.01")


# -- the pure parts ---------------------------------------------------------------------------------
def test_the_ledger_admits_an_identity_until_its_allowance_is_held() -> None:
    ledger, allowance = AllowanceLedger(), Allowance("0.03")
    assert [ledger.admit("u", CENT, allowance) for _ in range(4)] == [True, True, True, False]
    assert ledger.admit("v", CENT, allowance)  # per identity


def test_recorded_costs_replace_the_estimates_held() -> None:
    ledger, allowance = AllowanceLedger(), Allowance("0.03")
    assert ledger.admit("u", CENT, allowance)
    ledger.settled("u", CENT, 3 * CENT)  # it cost three times its estimate
    assert not ledger.admit("u", 0, allowance)


def test_a_request_with_no_estimate_is_admitted_until_recorded_costs_reach_the_amount() -> None:
    ledger, allowance = AllowanceLedger(), Allowance("0.02")
    assert ledger.admit("u", 0, allowance)
    ledger.settled("u", 0, CENT)
    assert ledger.admit("u", 0, allowance)
    ledger.settled("u", 0, CENT)
    assert not ledger.admit("u", 0, allowance)


def test_the_allowance_starts_afresh_when_the_outage_ends(caplog: pytest.LogCaptureFixture) -> None:
    ledger, allowance = AllowanceLedger(), Allowance("0.01")
    assert ledger.admit("u", CENT, allowance)
    ledger.settled("u", CENT, CENT)
    with caplog.at_level(logging.WARNING, logger="identity_middleware"):
        ledger.ended()
    assert "admitted 1 requests of 1 identities by the local allowance, $0.01" in caplog.text
    assert ledger.admit("u", CENT, allowance)


@pytest.mark.parametrize("amount", ["0", "-1", "lots"])
def test_an_allowance_is_a_positive_amount(amount: str) -> None:
    with pytest.raises(ValueError):
        Allowance(amount)


def test_a_callable_chooses_per_identity_and_anything_else_it_answers_is_closed(
        caplog: pytest.LogCaptureFixture) -> None:
    paid = Allowance("1")

    def policy(external_id: str, request: Any) -> Any:
        if external_id == "boom":
            raise RuntimeError("policy bug")
        return paid if external_id.startswith("paid") else "open" if external_id == "free" else "maybe"

    assert choose(policy, "paid_1", None) is paid
    assert choose(policy, "free", None) == "open"
    assert choose(policy, "other", None) == "closed"
    assert choose(policy, "boom", None) == "closed"
    assert "policy bug" in caplog.text


@pytest.mark.parametrize("policy", ["open", "closed", Allowance("0.5"), lambda external_id, request: "open"])
def test_the_config_takes_every_policy(policy: Any) -> None:
    assert Config(on_store_error=policy).on_store_error is policy


def test_the_config_refuses_what_is_no_policy() -> None:
    with pytest.raises(ValueError, match="on_store_error"):
        Config(on_store_error="sometimes")  # type: ignore[arg-type]


# -- with a real redis-server that is stopped and started again -------------------------------------
class Server:
    """A redis-server that keeps its data across a restart (AOF on) on a fixed port."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = self._start()

    def _start(self) -> Any:
        return start_server(self.port, self.directory, "--appendonly", "yes", "--appendfsync", "always")

    def stop(self) -> None:
        stop_servers([self.process])

    def start(self) -> None:
        self.process = self._start()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path)
    try:
        yield server
    finally:
        server.stop()


async def chat(request: Request) -> Response:
    record_usage("0.01")
    identity = current_identity()
    return JSONResponse({"identity": identity.external_id if identity else None})


def app(store: RedisStore, policy: Any) -> Starlette:
    return Starlette(routes=[Route("/chat", chat, methods=["POST"])], middleware=[
        Middleware(IdentityMiddleware, store=store, on_store_error=policy, estimates={"/chat": "0.01"})])


def body(external_id: str) -> dict[str, Any]:
    return {"identity": {"id": external_id}, "messages": []}


def test_during_an_outage_the_allowance_meters_then_refuses_and_its_usage_is_written_once_when_redis_returns(
        server: Server, caplog: pytest.LogCaptureFixture) -> None:
    store = RedisStore.from_url(server.url, socket_connect_timeout=0.5)
    try:
        with TestClient(app(store, Allowance("0.03"))) as client, \
                caplog.at_level(logging.WARNING, logger="identity_middleware"):
            assert client.post("/chat", json=body("u")).json() == {"identity": "u"}
            store.flush()
            server.stop()
            during = [client.post("/chat", json=body("u")) for _ in range(5)]
            assert [r.status_code for r in during] == [200, 200, 200, 503, 503]
            assert all(r.json() == {"identity": "u"} for r in during[:3])  # metered, as the identity
            assert during[3].json()["error"]["type"] == "store_unavailable"
            server.start()
            assert client.post("/chat", json=body("u")).json() == {"identity": "u"}  # Redis is back
            store.flush()  # what the allowance admitted is written: the outage is over for the next request
            assert client.post("/chat", json=body("u")).json() == {"identity": "u"}
        store.flush()
        metrics = store.metrics("u")
        assert (metrics.total_requests, metrics.total_cost) == (6, Decimal("0.06"))  # 1 + 3 + 2, once each
        assert "admitted 3 requests of 1 identities by the local allowance" in caplog.text
        store.flush()
        assert store.metrics("u").total_requests == 6
    finally:
        store.close()


def test_the_policy_is_chosen_per_identity(server: Server) -> None:
    def policy(external_id: str, request: Any) -> Any:
        return Allowance("1.00") if external_id.startswith("paid") else "closed"

    store = RedisStore.from_url(server.url, socket_connect_timeout=0.5)
    try:
        with TestClient(app(store, policy)) as client:
            for external_id in ("paid_1", "free_1"):
                assert client.post("/chat", json=body(external_id)).status_code == 200
            server.stop()
            paid = client.post("/chat", json=body("paid_1"))
            free = client.post("/chat", json=body("free_1"))
            assert (paid.status_code, paid.json()) == (200, {"identity": "paid_1"})
            assert free.status_code == 503
            server.start()
            assert client.post("/chat", json=body("free_1")).status_code == 200
        store.flush()
        assert store.metrics("paid_1").total_requests == 2
    finally:
        store.close()


def test_a_wsgi_app_meters_by_the_allowance_during_an_outage(server: Server) -> None:
    flask = Flask(__name__)

    @flask.post("/chat")
    def flask_chat() -> dict[str, str | None]:
        record_usage("0.01")
        identity = current_identity()
        return {"identity": identity.external_id if identity else None}

    store = RedisStore.from_url(server.url, socket_connect_timeout=0.5)
    try:
        flask.wsgi_app = IdentityWSGIMiddleware(  # type: ignore[method-assign]
            flask.wsgi_app, store=store, on_store_error=Allowance("0.02"), estimates={"/chat": "0.01"})
        client = flask.test_client()
        assert client.post("/chat", json=body("u")).json == {"identity": "u"}
        store.flush()
        server.stop()
        during = []
        for _ in range(3):
            with client.post("/chat", json=body("u")) as response:  # closed: the request is settled
                during.append(response.status_code)
        assert during == [200, 200, 503]
        server.start()
        assert client.post("/chat", json=body("u")).json == {"identity": "u"}
        store.flush()
        assert store.metrics("u").total_requests == 4
    finally:
        store.close()


def test_an_identity_this_process_never_admitted_is_refused_under_an_allowance(server: Server) -> None:
    store = RedisStore.from_url(server.url, socket_connect_timeout=0.5)
    try:
        with TestClient(app(store, Allowance("1.00"))) as client:
            server.stop()
            assert client.post("/chat", json=body("stranger")).status_code == 503
            server.start()
    finally:
        store.close()
