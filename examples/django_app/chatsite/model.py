"""A deterministic LOCAL STAND-IN for an LLM: not a language model, it echoes and reports usage.

It counts tokens as words (times 40, so budgets bite quickly) and answers in OpenAI's
chat-completion shapes (JSON, and SSE chunks with the usage in a last chunk), so
``record_usage(response=...)`` reads it like a real completion.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

MODEL = "local-stand-in-1"
PRICES = {MODEL: ("5.00", "15.00")}  # USD per 1M input / output tokens


def text_of(message: dict[str, Any]) -> str:
    """A message's text: its string content, or its text parts joined (none for tool calls only)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text") or "") for part in content
                        if isinstance(part, dict) and part.get("type") == "text")
    return ""


def complete(messages: list[dict[str, Any]]) -> dict[str, Any]:
    prompt = " ".join(text_of(message) for message in messages)
    answer = f"(local stand-in) You said: {text_of(messages[-1]) if messages else ''}"
    prompt_tokens, completion_tokens = 40 * len(prompt.split()), 40 * len(answer.split())
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop",
                     "logprobs": None}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def chunks(completion: dict[str, Any], include_usage: bool) -> Iterator[dict[str, Any]]:
    """A completion as the ``chat.completion.chunk`` objects of a stream (OpenAI's SSE shape)."""
    base = {"id": completion["id"], "object": "chat.completion.chunk", "created": completion["created"],
            "model": completion["model"]}
    extra = {"usage": None} if include_usage else {}
    yield {**base, **extra, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                         "finish_reason": None}]}
    for index, word in enumerate(str(completion["choices"][0]["message"]["content"]).split(" ")):
        delta = {"content": word if index == 0 else " " + word}
        yield {**base, **extra, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    yield {**base, **extra, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    if include_usage:
        yield {**base, "choices": [], "usage": completion["usage"]}
