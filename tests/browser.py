"""For the dashboard's browser tests and screenshot script: a real app on a live port, the system's Chromium.

Chromium is Debian's (``apt-get install chromium``, as ``.ci/run`` does), driven by Playwright for
Python through ``executable_path``: no browser is ever downloaded.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from identity_middleware import IdentityMiddleware, record_usage
from identity_middleware.admin import create_admin_app
from identity_middleware.stores import Store
from waiting import wait_until

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


async def _chat(request: Request) -> JSONResponse:
    """A stand-in LLM endpoint: records the usage the JSON body names; ``"fail": true`` answers 500."""
    body: dict[str, Any] = await request.json()
    record_usage(body.get("cost", "0"), input_tokens=int(body.get("input_tokens", 0)),
                 output_tokens=int(body.get("output_tokens", 0)), model=body.get("model"))
    return JSONResponse({"ok": not body.get("fail")}, status_code=500 if body.get("fail") else 200)


def demo_app(store: Store, token: str) -> Starlette:
    """``POST /chat`` behind ``IdentityMiddleware`` and the admin app (dashboard included) at ``/admin``,
    over one store."""
    api = Starlette(routes=[Route("/chat", _chat, methods=["POST"])])
    api.add_middleware(IdentityMiddleware, store=store)
    return Starlette(routes=[Mount("/admin", create_admin_app(store, token=token)), Mount("/", api)])


@contextlib.contextmanager
def live_server(app: Starlette) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    def started() -> bool:
        if not thread.is_alive():
            raise RuntimeError("the test server did not start")
        return bool(server.started)

    wait_until(started, "the test server started")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
