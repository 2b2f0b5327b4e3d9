"""A deterministic LOCAL STAND-IN for an LLM: not a language model, it echoes and reports usage.

It counts tokens as words (times 40, so budgets bite quickly) and answers in OpenAI's
chat-completion shape, so ``record_usage(response=...)`` reads it like a real completion.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

MODEL = "local-stand-in-1"
PRICES = {MODEL: ("5.00", "15.00")}  # USD per 1M input / output tokens


def complete(messages: list[dict[str, Any]]) -> dict[str, Any]:
    prompt = " ".join(str(message.get("content", "")) for message in messages)
    answer = f"(local stand-in) You said: {prompt}"
    prompt_tokens, completion_tokens = 40 * len(prompt.split()), 40 * len(answer.split())
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }
