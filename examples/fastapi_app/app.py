"""A FastAPI chat service whose every call is attributed, metered and budgeted per identity.

    uvicorn examples.fastapi_app.app:app          # memory store; REDIS_URL=redis://... for Redis
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from identity_middleware import (
    Budget,
    IdentityInput,
    IdentityMiddleware,
    IdentityNotFound,
    budgeted,
    current_identity,
    record_usage,
)
from identity_middleware.admin import create_admin_app
from identity_middleware.stores import Store, store_from_url

try:  # run as a package (uvicorn examples.fastapi_app.app:app) or as a script next to model.py
    from .model import PRICES, complete
except ImportError:
    from model import PRICES, complete  # type: ignore[no-redef]

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
app.add_middleware(IdentityMiddleware, store=store, default_budgets=DEFAULT_BUDGETS)
app.mount("/admin", create_admin_app(store, token=os.environ.get("ADMIN_TOKEN", "dev-admin-token")))


class Message(BaseModel):
    role: str
    content: str


class ChatRequest(BaseModel):
    model: str | None = None
    messages: list[Message]
    identity: dict[str, Any] | None = None  # read by the middleware; declared so the docs show it


@app.post("/v1/chat/completions")
@budgeted(estimate="0.01")  # reserved before the model runs, settled to the real cost after
async def chat(request: ChatRequest) -> dict[str, Any]:
    completion = await complete([m.model_dump() for m in request.messages], request.model)
    cost = record_usage(response=completion, prices=PRICES)
    identity = current_identity()
    completion["identity"] = identity.external_id if identity else None
    completion["cost_usd"] = str(cost)
    return completion


@app.get("/identities")
async def identities() -> dict[str, Any]:
    """Every identity with its 30-day metrics and live budget status."""
    page = await store.alist(limit=200, include_metrics=True, include_budgets=True)
    return page.to_json()
