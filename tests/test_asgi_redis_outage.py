"""A Redis that goes away mid-traffic: the middleware follows the outage policy and recovers."""

from __future__ import annotations

import logging
from decimal import Decimal
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from identity_middleware import IdentityMiddleware, current_identity, record_usage
from identity_middleware.stores import RedisStore
from redis_servers import free_port, start_server, stop_servers


async def chat(request: Request) -> Response:
    record_usage("0.01")
    identity = current_identity()
    return JSONResponse({"identity": identity.external_id if identity else None})


@pytest.mark.parametrize("policy", ["open", "closed"])
def test_redis_outage_follows_the_policy_logs_once_and_recovers(
    policy: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    server = start_server(port, tmp_path)
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=1, socket_connect_timeout=0.5)
    app = Starlette(routes=[Route("/chat", chat, methods=["POST"])],
                    middleware=[Middleware(IdentityMiddleware, store=store, on_store_error=policy)])
    body = {"identity": {"id": "u"}, "messages": []}
    try:
        with TestClient(app) as client, caplog.at_level(logging.WARNING, logger="identity_middleware"):
            assert client.post("/chat", json=body).json() == {"identity": "u"}
            store.flush()  # its usage is on the server that goes away, not left to the writer's timing
            stop_servers([server])
            during = [client.post("/chat", json=body) for _ in range(3)]
            if policy == "open":
                assert [(r.status_code, r.json()["identity"]) for r in during] == [(200, None)] * 3
            else:
                assert [r.status_code for r in during] == [503] * 3
                assert during[0].json()["error"]["type"] == "store_unavailable"
            server = start_server(port, tmp_path)  # a fresh, empty server on the same port
            assert client.post("/chat", json=body).json() == {"identity": "u"}
        unavailable = [r for r in caplog.records if "unavailable" in r.getMessage()]
        recovered = [r for r in caplog.records if "available again" in r.getMessage()]
        assert (len(unavailable), len(recovered)) == (1, 1)
        assert store.metrics("u").total_cost == Decimal("0.01")  # the request after recovery
    finally:
        store.close()
        stop_servers([server])
