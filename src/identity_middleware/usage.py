"""Recording usage from views: ``record_usage``, priced by the app's prices or genai-prices."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from .context import ABANDONED, Meter, collecting, current, current_meter
from .core.money import Money, cost_nanos
from .pricing import CallUsage, ModelPrice, Prices, PriceTable, TokenUsage, call_usage, parse_usage, price
from .unmetered import UNOWNED, drop

__all__ = ["ModelPrice", "PriceTable", "TokenUsage", "parse_usage", "record_usage"]

_ZERO = Decimal(0)


def response_key(response: Any) -> str | None:
    """What identifies one provider response within a request (its ``id``), so that the same
    response recorded twice (by an instrumented client and by the view) counts once."""
    found = response.get("id") if isinstance(response, dict) else getattr(response, "id", None)
    return found if isinstance(found, str) and found else None


def record_call(usage: CallUsage, cost: Money | None = None, *, prices: Prices | None = None,
                key: str | None = None, meter: Meter | None = None) -> Decimal | None:
    """Add one call to the current request's meter, priced unless ``cost`` is given; once per ``key``.

    ``meter`` is the request's (default: the current one). Returns the cost recorded, or ``None``
    outside a tracked request or for a repeated ``key``.
    """
    if usage.input_tokens < 0 or usage.output_tokens < 0:
        raise ValueError("cost and token counts must not be negative")
    unpriced = False
    if cost is None and usage.model and (usage.input_tokens or usage.output_tokens):
        cost = price(usage, prices)
        unpriced = cost is None
    return _add(cost, usage.input_tokens, usage.output_tokens, usage.model, unpriced, key, meter)


def _add(cost: Money | None, input_tokens: int, output_tokens: int, model: str | None, unpriced: bool,
         key: str | None, meter: Meter | None) -> Decimal | None:
    amount, nanos = (_ZERO, 0) if cost is None else cost_nanos(cost)
    if meter is None:
        meter = current_meter()
        if meter is None:
            found = current()
            if found is ABANDONED or (collecting() and type(found) is Meter):  # not this request's usage
                drop(UNOWNED, nanos, input_tokens, output_tokens, model)
            return None
    if not meter.add(nanos, input_tokens, output_tokens, model, unpriced=unpriced, key=key):
        return None
    return amount


def record_usage(
    cost: Money | None = None,
    *,
    input_tokens: int = 0,
    output_tokens: int = 0,
    model: str | None = None,
    response: Any = None,
    prices: Prices | None = None,
) -> Decimal | None:
    """Add one LLM call's usage to the current request; committed once when the response ends.

    ``response`` takes an OpenAI/Anthropic response object (or dict) and reads its token counts
    (cached and reasoning tokens included) and model. Without an explicit ``cost`` the call is
    priced: by ``prices`` (per-model overrides) first, else by genai-prices; a model neither knows
    is recorded at cost 0 and counted as unpriced. A response an instrumented client already
    recorded is not counted again. Returns the cost recorded, or ``None`` outside a tracked
    request (where it does nothing) or for a response already recorded.

    It records on the request whose context runs it. A streaming response body that records when
    it ends (in a ``finally``) should be passed through :func:`~identity_middleware.metered_stream`,
    which runs it, and ends it, as its own request's whoever finalises it. Usage that cannot be
    put on its own request (recorded after that request settled, or from a finaliser the garbage
    collector runs while another request is served) is dropped, logged and counted as unmetered
    (:func:`identity_middleware.unmetered.unmetered_usage`), never put on another identity.
    """
    if input_tokens < 0 or output_tokens < 0:
        raise ValueError("cost and token counts must not be negative")
    if response is None and cost is not None:  # the cost is given: nothing to price or parse
        return _add(cost, input_tokens, output_tokens, model, False, None, None)
    usage = CallUsage(model, input_tokens, output_tokens)
    if response is not None:
        parsed = call_usage(response)
        usage = CallUsage(model or parsed.model, input_tokens or parsed.input_tokens,
                          output_tokens or parsed.output_tokens,
                          parsed.cache_read_tokens if not input_tokens else 0,
                          parsed.cache_write_tokens if not input_tokens else 0,
                          parsed.reasoning_tokens if not output_tokens else 0, parsed.provider)
    return record_call(usage, cost, prices=prices, key=None if response is None else response_key(response))
