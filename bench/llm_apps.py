"""The realistic apps: the view forwards the chat body to an LLM upstream over HTTP and meters its reply."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from identity_middleware import IdentityMiddleware, record_usage
from identity_middleware.stores import Store

from .apps import CHAT_PATH, STATS_PATH, stats_endpoint

# USD per 1M input / output tokens: explicit, so the figures do not depend on genai-prices' tables.
PRICES = {"gpt-4o-mini": ("0.15", "0.60")}


def build_llm_app(store: Store | None, upstream: str) -> Starlette:
    """A chat endpoint in front of ``upstream`` (e.g. ``http://127.0.0.1:7002``), as an LLM app is
    usually written: one ``httpx.AsyncClient`` for the app's lifetime, the body forwarded as it came,
    the completion parsed, its usage recorded (when ``store`` is given), the completion returned."""
    client = httpx.AsyncClient(base_url=upstream, timeout=10.0,
                               limits=httpx.Limits(max_connections=256, max_keepalive_connections=256))

    async def chat(request: Request) -> Response:
        reply = await client.post(CHAT_PATH, content=await request.body(),
                                  headers={"Content-Type": "application/json"})
        completion = reply.json()
        if store is not None:
            record_usage(response=completion, prices=PRICES)
        return Response(reply.content, status_code=reply.status_code, media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with client:
            yield

    routes = [Route(CHAT_PATH, chat, methods=["POST"]), Route(STATS_PATH, stats_endpoint(store), methods=["GET"])]
    middleware = [] if store is None else [Middleware(IdentityMiddleware, store=store)]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
