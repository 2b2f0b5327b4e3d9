"""The example's views: an LLM-calling chat endpoint and a page of identities, spend and budgets."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from identity_middleware import current_identity, record_usage
from identity_middleware.django import budgeted, get_store

from .model import PRICES, complete


@csrf_exempt  # an API called with a bearer key or identity header, not a browser form
@require_POST
@budgeted(estimate="0.01")  # reserved at admission, settled to the real cost when the response ends
def chat(request: HttpRequest) -> JsonResponse:
    payload: dict[str, Any] = json.loads(request.body or b"{}")  # the middleware left the body intact
    completion = complete(payload.get("messages", []))
    cost = record_usage(response=completion, prices=PRICES)
    identity = current_identity()
    return JsonResponse({**completion, "identity": identity.external_id if identity else None,
                         "cost_usd": str(cost)})


@require_GET
def identities(request: HttpRequest) -> JsonResponse:
    """Every identity with its 30-day metrics and the live status of its budgets."""
    page = get_store().list(limit=200, include_metrics=True, include_budgets=True)
    return JsonResponse(page.to_json())
