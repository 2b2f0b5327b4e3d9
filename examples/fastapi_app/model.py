"""The chat model the example calls: a deterministic LOCAL STAND-IN, or OpenAI when a key is set.

The stand-in is not a language model. It answers by echoing the last message, counts tokens
as whitespace-separated words, and reports usage in the same shape as OpenAI's chat
completions, so the example runs offline and its spend is reproducible.
"""

from __future__ import annotations

import os
from typing import Any

STAND_IN_MODEL = "local-stand-in-1"

# USD per 1M tokens. The stand-in is priced like a mid-range hosted model so budgets bite.
PRICES = {
    STAND_IN_MODEL: ("5.00", "15.00"),
    "gpt-4o-mini": ("0.15", "0.60"),
    "gpt-4o": ("2.50", "10.00"),
}


def _stand_in(messages: list[dict[str, Any]]) -> dict[str, Any]:
    prompt_tokens = sum(len(str(message.get("content", "")).split()) for message in messages)
    last = str(messages[-1].get("content", "")) if messages else ""
    reply = f"(local stand-in) You said: {last}"
    return {
        "id": "chatcmpl-local",
        "object": "chat.completion",
        "model": STAND_IN_MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens * 40, "completion_tokens": len(reply.split()) * 40},
    }


async def complete(messages: list[dict[str, Any]], model: str | None = None) -> dict[str, Any]:
    """One chat completion as a dict in OpenAI's shape."""
    if os.environ.get("OPENAI_API_KEY"):
        from openai import AsyncOpenAI  # optional: pip install openai

        client = AsyncOpenAI()
        response = await client.chat.completions.create(model=model or "gpt-4o-mini",
                                                        messages=messages)  # type: ignore[arg-type]
        return response.model_dump()
    return _stand_in(messages)
