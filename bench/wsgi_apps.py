"""The WSGI apps: bare Flask, and Flask under ``IdentityWSGIMiddleware``; gunicorn serves them.

    IDM_BENCH_APP=memory gunicorn -w 1 -k sync 'bench.wsgi_apps:create()'

``IDM_BENCH_APP`` is ``bare``, ``memory`` or ``redis`` (with ``IDM_BENCH_REDIS_URL``); the store is
built in the worker (gunicorn imports the app after it forks), as a WSGI deployment would.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal
from typing import Any

from flask import Flask, Response, request

from identity_middleware import IdentityWSGIMiddleware, record_usage
from identity_middleware.stores import Store

from .apps import CHAT_PATH, COST, IDENTITIES, INPUT_TOKENS, OUTPUT_TOKENS, STATS_PATH, make_store

APP_ENV = "IDM_BENCH_APP"
REDIS_URL_ENV = "IDM_BENCH_REDIS_URL"


def completion(model: Any) -> str:
    """The view's small JSON answer, the same in every framework."""
    return json.dumps({"id": "chatcmpl-bench", "model": model,
                       "usage": {"prompt_tokens": INPUT_TOKENS, "completion_tokens": OUTPUT_TOKENS}})


def committed(store: Store | None) -> dict[str, Any]:
    """Requests and cost the store committed for the bench identities (the run's sanity check)."""
    if store is None:
        return {"requests": None, "cost": None}
    requests, cost = 0, Decimal(0)
    for identity in IDENTITIES:
        metrics = store.metrics(identity)
        requests += metrics.total_requests
        cost += Decimal(str(metrics.total_cost))
    return {"requests": requests, "cost": str(cost)}


def store_from_env() -> Store | None:
    return make_store(os.environ.get(APP_ENV, "bare"), os.environ.get(REDIS_URL_ENV))


def create() -> Any:
    """The Flask app for ``IDM_BENCH_APP``: the same view in each, metered when there is a store."""
    store = store_from_env()
    app = Flask(__name__)

    @app.post(CHAT_PATH)
    def chat() -> Response:
        payload = request.get_json()
        if store is not None:
            record_usage(COST, input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS, model=payload.get("model"))
        return Response(completion(payload.get("model")), mimetype="application/json")

    @app.get(STATS_PATH)
    def stats() -> Response:
        return Response(json.dumps(committed(store)), mimetype="application/json")

    if store is not None:  # the documented way, as in examples/flask_app
        app.wsgi_app = IdentityWSGIMiddleware(app.wsgi_app, store=store)  # type: ignore[method-assign]
    return app
