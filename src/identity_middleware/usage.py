"""Recording usage from views: ``record_usage``, provider response parsing and price tables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .context import current_meter
from .core.money import Money, to_decimal, to_nanos

__all__ = ["ModelPrice", "PriceTable", "TokenUsage", "parse_usage", "record_usage"]

_MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per one million tokens."""

    input: Decimal
    output: Decimal

    @classmethod
    def of(cls, input: Money, output: Money) -> ModelPrice:
        return cls(to_decimal(input), to_decimal(output))


class PriceTable:
    """Prices by model name; a dated model (``gpt-4o-2024-08-06``) falls back to its longest
    listed prefix (``gpt-4o``), a provider prefix (``openai/gpt-4o``) to the bare name."""

    def __init__(self, prices: Mapping[str, ModelPrice | tuple[Money, Money]]) -> None:
        self._prices = {name: price if isinstance(price, ModelPrice) else ModelPrice.of(*price)
                        for name, price in prices.items()}

    def price(self, model: str) -> ModelPrice | None:
        for name in (model, model.rsplit("/", 1)[-1]):
            found = self._prices.get(name)
            if found is not None:
                return found
            candidates = [known for known in self._prices if name.startswith(known)]
            if candidates:
                return self._prices[max(candidates, key=len)]
        return None

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> Decimal | None:
        price = self.price(model)
        if price is None:
            return None
        return (price.input * input_tokens + price.output * output_tokens) / _MILLION


@dataclass(frozen=True, slots=True)
class TokenUsage:
    input_tokens: int
    output_tokens: int
    model: str | None


def _get(source: Any, name: str) -> Any:
    if isinstance(source, Mapping):
        return source.get(name)
    return getattr(source, name, None)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def parse_usage(response: Any) -> TokenUsage:
    """Token counts from an OpenAI (chat or responses) or Anthropic response, object or dict,
    or from a bare ``usage`` object/dict."""
    usage = _get(response, "usage")
    if usage is None:
        usage = response
    model = _get(response, "model")
    if _get(usage, "prompt_tokens") is not None or _get(usage, "completion_tokens") is not None:
        # OpenAI chat completions (cached prompt tokens are part of prompt_tokens already)
        input_tokens = _int(_get(usage, "prompt_tokens"))
        output_tokens = _int(_get(usage, "completion_tokens"))
    else:
        # OpenAI Responses API and Anthropic Messages; Anthropic counts cache reads/writes apart.
        input_tokens = (_int(_get(usage, "input_tokens")) + _int(_get(usage, "cache_read_input_tokens"))
                        + _int(_get(usage, "cache_creation_input_tokens")))
        output_tokens = _int(_get(usage, "output_tokens"))
    return TokenUsage(input_tokens, output_tokens, model if isinstance(model, str) else None)


def record_usage(
    cost: Money | None = None,
    *,
    input_tokens: int = 0,
    output_tokens: int = 0,
    model: str | None = None,
    response: Any = None,
    prices: PriceTable | Mapping[str, ModelPrice | tuple[Money, Money]] | None = None,
) -> Decimal | None:
    """Add one LLM call's usage to the current request; committed once when the response ends.

    ``response`` takes an OpenAI/Anthropic response object (or dict) and reads its token counts
    and model; with ``prices`` and no explicit ``cost`` the cost is computed from them. Returns
    the cost recorded, or ``None`` outside a tracked request (where it does nothing).
    """
    meter = current_meter()
    if response is not None:
        parsed = parse_usage(response)
        input_tokens = input_tokens or parsed.input_tokens
        output_tokens = output_tokens or parsed.output_tokens
        model = model or parsed.model
    if cost is None and prices is not None and model:
        table = prices if isinstance(prices, PriceTable) else PriceTable(prices)
        cost = table.cost(model, input_tokens, output_tokens)
    amount = Decimal(0) if cost is None else to_decimal(cost)
    if amount < 0 or input_tokens < 0 or output_tokens < 0:
        raise ValueError("cost and token counts must not be negative")
    if meter is None:
        return None
    meter.add(to_nanos(amount), input_tokens, output_tokens, model)
    return amount
