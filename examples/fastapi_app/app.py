"""A FastAPI chat service whose every call is attributed, metered and budgeted per identity.

    uvicorn examples.fastapi_app.app:app          # memory store; REDIS_URL=redis://... for Redis
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict

from identity_middleware import (
    Budget,
    IdentityInput,
    IdentityMiddleware,
    IdentityNotFound,
    budgeted,
    current_identity,
    metered_stream,
    record_usage,
)
from identity_middleware.admin import create_admin_app
from identity_middleware.stores import Store, store_from_url

try:  # run as a package (uvicorn examples.fastapi_app.app:app) or as a script next to model.py
    from .model import PRICES, STAND_IN_MODEL, chunks, complete
except ImportError:
    from model import PRICES, STAND_IN_MODEL, chunks, complete  # type: ignore[no-redef]

store: Store = store_from_url(os.environ.get("REDIS_URL", "memory://"))

# Budgets configured on start-up: every new identity gets $1/day; "alice" is on a tiny trial plan.
DEFAULT_BUDGETS = {"daily": "1.00"}
PLANS = {"alice": [Budget(period="daily", amount="0.02")]}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    for external_id, budgets in PLANS.items():
        try:
            await store.aretrieve(external_id)
        except IdentityNotFound:
            await store.acreate(IdentityInput(id=external_id, tags=["trial"]))
        for budget in budgets:
            await store.aset_budget(external_id, budget)
    yield
    await store.aclose()


app = FastAPI(title="identity-middleware example", lifespan=lifespan)
# OpenAI's own end-user fields (`user`, `safety_identifier`) name the identity too, after a body
# `identity` object and before the header: clients of the OpenAI SDK need nothing of ours.
app.add_middleware(IdentityMiddleware, store=store, default_budgets=DEFAULT_BUDGETS,
                   sources=("body", "user_field", "header", "auth"))
app.mount("/admin", create_admin_app(store, token=os.environ.get("ADMIN_TOKEN", "dev-admin-token")))


class ContentPart(BaseModel):
    """One part of a message's content (``{"type": "text", "text": ...}``; images and the rest too)."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class Message(BaseModel):
    """A chat message as OpenAI takes it: text or content parts; an assistant's may be only
    ``tool_calls`` (its ``content`` null); a tool's answers a ``tool_call_id``."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    """OpenAI's chat completion request (the fields the stand-in uses; others are accepted)."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[Message]
    stream: bool = False
    stream_options: StreamOptions | None = None
    identity: dict[str, Any] | None = None  # read by the middleware; declared so the docs show it


def _sse(completion: dict[str, Any], include_usage: bool, metered: bool) -> Iterator[bytes]:
    """The completion as SSE chunks; its usage recorded when the stream ends, however it ends."""
    try:
        for chunk in chunks(completion, include_usage):
            yield f"data: {json.dumps(chunk)}\n\n".encode()
        yield b"data: [DONE]\n\n"
    finally:  # metered once the stream ends, also when the client goes away early
        if not metered:
            record_usage(response=completion, prices=PRICES)


@app.post("/v1/chat/completions", response_model=None)
@budgeted(estimate="0.01")  # reserved before the model runs, settled to the real cost after
async def chat(request: ChatRequest) -> dict[str, Any] | StreamingResponse:
    """An OpenAI-compatible endpoint: JSON, or SSE chunks with ``stream: true``."""
    completion, metered = await complete([m.model_dump(exclude_none=True) for m in request.messages], request.model)
    if request.stream:
        include_usage = request.stream_options is not None and request.stream_options.include_usage
        # metered_stream: the body belongs to this request, so its usage lands on this identity
        # even when the client leaves early and the body is closed or collected later.
        body = metered_stream(_sse(completion, include_usage, metered))
        return StreamingResponse(body, media_type="text/event-stream")
    cost = None if metered else record_usage(response=completion, prices=PRICES)
    # No identity when the request was let through untracked (the store down under the "open"
    # outage policy): the view still answers, unmetered.
    identity = current_identity()
    completion["identity"] = identity.external_id if identity else None
    completion["cost_usd"] = str(cost) if cost is not None else None
    return completion


@app.get("/v1/models")
async def models() -> dict[str, Any]:
    """OpenAI's model list, so SDKs and tools that list models first work against the example."""
    served = ["gpt-4o-mini"] if os.environ.get("OPENAI_API_KEY") else [STAND_IN_MODEL]
    return {"object": "list", "data": [{"id": name, "object": "model", "created": int(time.time()),
                                        "owned_by": "identity-middleware-example"} for name in served]}


@app.get("/identities")
async def identities() -> dict[str, Any]:
    """Every identity with its 30-day metrics and live budget status."""
    page = await store.alist(limit=200, include_metrics=True, include_budgets=True)
    return page.to_json()
