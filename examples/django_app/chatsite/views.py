"""The example's views: an OpenAI-compatible chat endpoint (JSON, or SSE with ``stream: true``), the
model list, and a page of identities with their spend and budgets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from django.http import HttpRequest, HttpResponseBase, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from identity_middleware import current_identity, metered_stream, record_usage
from identity_middleware.django import budgeted, get_store

from .model import MODEL, PRICES, chunks, complete

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def _invalid(message: str) -> JsonResponse:
    return JsonResponse({"error": {"type": "invalid_request_error", "message": message}}, status=400)


def _messages(value: Any) -> list[dict[str, Any]] | str:
    """OpenAI's chat messages (text or content parts; an assistant's ``content`` may be null beside
    its ``tool_calls``), or what is wrong with them."""
    if not isinstance(value, list) or not value:
        return "messages must be a non-empty list"
    for index, message in enumerate(value):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            return f"messages[{index}] must be an object with a role of {', '.join(sorted(ROLES))}"
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            return f"messages[{index}].content must be a string, a list of content parts or null"
    return value


def _sse(completion: dict[str, Any], include_usage: bool) -> Iterator[bytes]:
    """The completion as SSE chunks; its usage recorded when the stream ends, however it ends."""
    try:
        for chunk in chunks(completion, include_usage):
            yield f"data: {json.dumps(chunk)}\n\n".encode()
        yield b"data: [DONE]\n\n"
    finally:
        record_usage(response=completion, prices=PRICES)


@csrf_exempt  # an API called with a bearer key or identity header, not a browser form
@require_POST
@budgeted(estimate="0.01")  # reserved at admission, settled to the real cost when the response ends
def chat(request: HttpRequest) -> HttpResponseBase:
    try:
        payload = json.loads(request.body or b"{}")  # the middleware left the body intact
    except (ValueError, RecursionError):
        return _invalid("the body is not JSON")
    if not isinstance(payload, dict):
        return _invalid("the body must be a JSON object")
    messages = _messages(payload.get("messages"))
    if isinstance(messages, str):
        return _invalid(messages)
    completion = complete(messages)
    if payload.get("stream") is True:
        options = payload.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        # metered_stream: the body belongs to this request, so its usage lands on this identity
        # even when the client leaves early and the body is closed later.
        return StreamingHttpResponse(metered_stream(_sse(completion, include_usage)),
                                     content_type="text/event-stream")
    cost = record_usage(response=completion, prices=PRICES)
    # No identity when the request was let through untracked (the store down under the "open"
    # outage policy, or an unknown identity not created): the view still answers, unmetered.
    identity = current_identity()
    return JsonResponse({**completion, "identity": identity.external_id if identity else None,
                         "cost_usd": str(cost) if cost is not None else None})


@require_GET
def models(request: HttpRequest) -> JsonResponse:
    """OpenAI's model list, so SDKs and tools that list models first work against the example."""
    return JsonResponse({"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0,
                                                     "owned_by": "identity-middleware-example"}]})


@require_GET
def identities(request: HttpRequest) -> JsonResponse:
    """Every identity with its 30-day metrics and the live status of its budgets."""
    page = get_store().list(limit=200, include_metrics=True, include_budgets=True)
    return JsonResponse(page.to_json())
