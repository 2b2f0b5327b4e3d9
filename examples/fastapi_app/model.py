"""The chat model the example calls: a deterministic LOCAL STAND-IN, or OpenAI when a key is set.

The stand-in is not a language model. It answers by echoing the last message, counts tokens
as whitespace-separated words, and answers in OpenAI's chat completion shapes (JSON, and SSE
chunks with the usage in a last chunk), so the example runs offline and its spend is reproducible.
Its price is an app override given to the same machinery that prices real models (genai-prices).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

from identity_middleware import ModelPrice, instrument

STAND_IN_MODEL = "local-stand-in-1"

# USD per 1M tokens, overriding genai-prices for this model only; the stand-in is priced like a
# mid-range hosted model so budgets bite. Real models (gpt-4o-mini, ...) are priced by genai-prices.
PRICES = {STAND_IN_MODEL: ModelPrice.of("5.00", "15.00")}


def text_of(message: dict[str, Any]) -> str:
    """A message's text: its string content, or its text parts joined (none for tool calls only)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text") or "") for part in content
                        if isinstance(part, dict) and part.get("type") == "text")
    return ""


def _stand_in(messages: list[dict[str, Any]]) -> dict[str, Any]:
    prompt_tokens = sum(len(text_of(message).split()) for message in messages) * 40
    last = text_of(messages[-1]) if messages else ""
    reply = f"(local stand-in) You said: {last}"
    completion_tokens = len(reply.split()) * 40
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": STAND_IN_MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop",
                     "logprobs": None}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def chunks(completion: dict[str, Any], include_usage: bool) -> Iterator[dict[str, Any]]:
    """A completion as the ``chat.completion.chunk`` objects of a stream (OpenAI's SSE shape)."""
    base = {"id": completion["id"], "object": "chat.completion.chunk", "created": completion["created"],
            "model": completion["model"]}
    extra = {"usage": None} if include_usage else {}
    message = completion["choices"][0]["message"]
    yield {**base, **extra, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                         "finish_reason": None}]}
    for index, word in enumerate(str(message["content"]).split(" ")):
        delta = {"content": word if index == 0 else " " + word}
        yield {**base, **extra, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    yield {**base, **extra, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    if include_usage:
        yield {**base, "choices": [], "usage": completion["usage"]}


async def complete(messages: list[dict[str, Any]], model: str | None = None) -> tuple[dict[str, Any], bool]:
    """One chat completion as a dict in OpenAI's shape, and whether it was metered already (by
    the instrumented OpenAI client) rather than left to the view."""
    if os.environ.get("OPENAI_API_KEY"):
        from openai import AsyncOpenAI  # optional: pip install 'identity-middleware[openai]'

        client = instrument(AsyncOpenAI())  # meters each call and passes the identity on
        response = await client.chat.completions.create(model=model or "gpt-4o-mini",
                                                        messages=messages)  # type: ignore[arg-type]
        return response.model_dump(), True
    return _stand_in(messages), False
