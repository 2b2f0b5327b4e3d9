"""Reservation estimates from an LLM request body: the most the call could cost (``estimate="auto"``)."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from .core.money import to_nanos
from .core.resolve import UNREADABLE_JSON
from .core.tiers import Tier
from .pricing import CallUsage, Prices, price

__all__ = ["BYTES_PER_TOKEN", "estimate_from_body", "tier_estimates"]

# Prompt tokens are estimated from the prompt's JSON size. English runs ~4 bytes a token and CJK
# ~3 (one character, three UTF-8 bytes); 3 errs high for most prompts, as a reservation should.
BYTES_PER_TOKEN = 3

_NULL = msgspec.Raw(b"null")


class _Request(msgspec.Struct):
    model: msgspec.Raw = _NULL
    max_tokens: msgspec.Raw = _NULL  # chat completions (older), Anthropic messages
    max_completion_tokens: msgspec.Raw = _NULL  # chat completions
    max_output_tokens: msgspec.Raw = _NULL  # Responses API
    messages: msgspec.Raw = _NULL
    input: msgspec.Raw = _NULL
    prompt: msgspec.Raw = _NULL
    system: msgspec.Raw = _NULL
    instructions: msgspec.Raw = _NULL
    tools: msgspec.Raw = _NULL


_decode = msgspec.json.Decoder(_Request).decode
_decode_any = msgspec.json.Decoder().decode


def _positive_int(raw: msgspec.Raw) -> int | None:
    if bytes(raw) == b"null":
        return None
    value = _decode_any(raw)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _call(body: bytes) -> tuple[str, int, int] | None:
    """The body's model, output cap and estimated prompt tokens; ``None`` when it cannot tell."""
    if not body:
        return None
    try:
        request = _decode(body)
        model = _decode_any(request.model) if bytes(request.model) != b"null" else None
        output = (_positive_int(request.max_completion_tokens) or _positive_int(request.max_tokens)
                  or _positive_int(request.max_output_tokens))
    except UNREADABLE_JSON:  # not JSON we can read (malformed, out of range, nested too deep)
        return None
    if not isinstance(model, str) or not model or output is None:
        return None
    prompt_bytes = sum(len(raw) for raw in (request.messages, request.input, request.prompt, request.system,
                                            request.instructions, request.tools) if bytes(raw) != b"null")
    return model, output, -(-prompt_bytes // BYTES_PER_TOKEN)


def _priced(model: str, prompt_tokens: int, output: int, prices: Prices | None) -> int | None:
    try:
        cost = price(CallUsage(model, prompt_tokens, output), prices)
        return None if cost is None else to_nanos(cost)
    except (ValueError, TypeError):  # an absurd max_tokens beyond any amount of money
        return None


def estimate_from_body(body: bytes, prices: Prices | None = None) -> int | None:
    """Nano-USD: the prompt's estimated tokens plus ``max_completion_tokens`` / ``max_tokens`` /
    ``max_output_tokens``, at the ``model``'s price (``prices`` first, else genai-prices).

    ``None`` when it cannot tell: not a JSON object, no model, no output cap, or an unpriced model.
    Never raises on hostile input.
    """
    call = _call(body)
    if call is None:
        return None
    model, output, prompt_tokens = call
    return _priced(model, prompt_tokens, output, prices)


def tier_estimates(body: bytes, tiers: Sequence[Tier], prices: Prices | None = None) -> list[int | None]:
    """:func:`estimate_from_body` of the call as each tier would send it: its model substituted
    (priced from the same source) and its output cap lowered to the tier's ``max_tokens``."""
    call = _call(body)
    if call is None:
        return [None] * len(tiers)
    model, output, prompt_tokens = call
    return [_priced(tier.model(model), prompt_tokens,
                    output if tier.max_tokens is None else min(output, tier.max_tokens), prices) for tier in tiers]
