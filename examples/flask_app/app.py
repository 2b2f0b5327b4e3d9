"""A short Flask chat service behind ``IdentityWSGIMiddleware``: attributed, metered, budgeted.

    flask --app examples/flask_app/app.py run            # memory store; REDIS_URL=redis://... for Redis
    curl localhost:5000/chat -H 'Content-Type: application/json' \
         -d '{"identity": {"id": "alice"}, "messages": [{"role": "user", "content": "Hello"}]}'
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, Response, jsonify, request

from identity_middleware import IdentityWSGIMiddleware, current_identity, record_usage
from identity_middleware.stores import store_from_url

store = store_from_url(os.environ.get("REDIS_URL", "memory://"))
app = Flask(__name__)
app.wsgi_app = IdentityWSGIMiddleware(  # type: ignore[method-assign]
    app.wsgi_app, store=store, default_budgets={"daily": "0.02"}, estimates={"/chat": "0.01"})


def stand_in_model(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """A deterministic LOCAL STAND-IN for an LLM (it echoes); reports usage like OpenAI does."""
    prompt = " ".join(str(message.get("content", "")) for message in messages)
    answer = f"(local stand-in) You said: {prompt}"
    return {"model": "local-stand-in-1", "answer": answer,
            "usage": {"prompt_tokens": 40 * len(prompt.split()), "completion_tokens": 40 * len(answer.split())}}


@app.post("/chat")
def chat() -> Response:
    completion = stand_in_model((request.get_json(silent=True) or {}).get("messages", []))
    cost = record_usage(response=completion, prices={"local-stand-in-1": ("5.00", "15.00")})
    identity = current_identity()
    return jsonify({**completion, "identity": identity.external_id if identity else None, "cost_usd": str(cost)})


@app.get("/identities")
def identities() -> Response:
    return jsonify(store.list(limit=200, include_metrics=True, include_budgets=True).to_json())
