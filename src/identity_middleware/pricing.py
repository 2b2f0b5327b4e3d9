"""Prices of LLM calls: token counts read from provider responses, priced by the app's overrides,
else by the maintained ``genai-prices`` tables; exact Decimal arithmetic, no floats on money."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .core.money import Money, to_decimal

__all__ = ["CallUsage", "ModelPrice", "PriceTable", "Prices", "TokenUsage", "call_usage", "parse_usage", "price"]

logger = logging.getLogger("identity_middleware.pricing")

_MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per one million tokens. Cache reads/writes cost ``input`` unless priced apart."""

    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None

    @classmethod
    def of(cls, input: Money, output: Money, cache_read: Money | None = None,
           cache_write: Money | None = None) -> ModelPrice:
        return cls(to_decimal(input), to_decimal(output),
                   None if cache_read is None else to_decimal(cache_read),
                   None if cache_write is None else to_decimal(cache_write))


@dataclass(frozen=True, slots=True)
class TokenUsage:
    input_tokens: int
    output_tokens: int
    model: str | None


@dataclass(frozen=True, slots=True)
class CallUsage:
    """One call's tokens as the provider bills them. ``input_tokens`` includes the cache reads and
    writes, ``output_tokens`` the reasoning tokens (both are billed within them)."""

    model: str | None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    provider: str | None = None  # "openai" or "anthropic", a hint for the price lookup


class PriceTable:
    """Prices by model name; a dated model (``gpt-4o-2024-08-06``) falls back to its longest
    listed prefix (``gpt-4o``), a provider prefix (``openai/gpt-4o``) to the bare name."""

    def __init__(self, prices: Mapping[str, ModelPrice | tuple[Money, ...]]) -> None:
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
        return self.cost_of(CallUsage(model, input_tokens, output_tokens))

    def cost_of(self, usage: CallUsage) -> Decimal | None:
        found = self.price(usage.model) if usage.model else None
        if found is None:
            return None
        cached = min(usage.cache_read_tokens + usage.cache_write_tokens, usage.input_tokens)
        read = min(usage.cache_read_tokens, cached)
        total = (found.input * (usage.input_tokens - cached)
                 + (found.input if found.cache_read is None else found.cache_read) * read
                 + (found.input if found.cache_write is None else found.cache_write) * (cached - read)
                 + found.output * usage.output_tokens)
        return total / _MILLION


Prices = PriceTable | Mapping[str, ModelPrice | tuple[Money, ...]]


def _get(source: Any, name: str) -> Any:
    if isinstance(source, Mapping):
        return source.get(name)
    return getattr(source, name, None)


def _has(source: Any, name: str) -> bool:
    return name in source if isinstance(source, Mapping) else hasattr(source, name)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def call_usage(response: Any, provider: str | None = None) -> CallUsage:
    """Token counts from an OpenAI (chat or responses) or Anthropic response, object or dict, or
    from a bare ``usage`` object/dict; missing or malformed counts are 0."""
    usage = _get(response, "usage")
    if usage is None:
        usage = response
    model = _get(response, "model")
    model = model if isinstance(model, str) and model else None
    if _get(usage, "prompt_tokens") is not None or _get(usage, "completion_tokens") is not None:
        # OpenAI chat completions: cached prompt tokens are part of prompt_tokens, reasoning
        # tokens part of completion_tokens.
        prompt, completion = _get(usage, "prompt_tokens_details"), _get(usage, "completion_tokens_details")
        return CallUsage(model, _int(_get(usage, "prompt_tokens")), _int(_get(usage, "completion_tokens")),
                         _int(_get(prompt, "cached_tokens")), _int(_get(prompt, "cache_write_tokens")),
                         _int(_get(completion, "reasoning_tokens")), provider or "openai")
    anthropic = (provider == "anthropic" or _get(response, "type") == "message"
                 or any(_has(usage, name) for name in ("cache_read_input_tokens", "cache_creation_input_tokens")))
    if not anthropic:
        # OpenAI Responses API: the same inclusions as chat, other names.
        details, out = _get(usage, "input_tokens_details"), _get(usage, "output_tokens_details")
        return CallUsage(model, _int(_get(usage, "input_tokens")), _int(_get(usage, "output_tokens")),
                         _int(_get(details, "cached_tokens")), _int(_get(details, "cache_write_tokens")),
                         _int(_get(out, "reasoning_tokens")), provider or "openai")
    # Anthropic Messages: cache reads and writes come apart from input_tokens, thinking tokens
    # within output_tokens.
    read, write = _int(_get(usage, "cache_read_input_tokens")), _int(_get(usage, "cache_creation_input_tokens"))
    thinking = _int(_get(_get(usage, "output_tokens_details"), "thinking_tokens"))
    return CallUsage(model, _int(_get(usage, "input_tokens")) + read + write, _int(_get(usage, "output_tokens")),
                     read, write, thinking, "anthropic")


def parse_usage(response: Any) -> TokenUsage:
    """Token counts from an OpenAI (chat or responses) or Anthropic response, object or dict,
    or from a bare ``usage`` object/dict."""
    found = call_usage(response)
    return TokenUsage(found.input_tokens, found.output_tokens, found.model)


_reported: set[str] = set()
_reported_lock = threading.Lock()


# Model names can come from request bodies (estimates): the set of those reported stays bounded.
_REPORTED_MAX = 1024


def _report_unpriced(model: str, why: str) -> None:
    with _reported_lock:
        if model in _reported or len(_reported) >= _REPORTED_MAX:
            return
        _reported.add(model)
    logger.warning("no price for model %r (%s): its calls are recorded at cost 0 and counted as unpriced",
                   model, why)


def _maintained(usage: CallUsage, model: str) -> Decimal | None:
    try:
        import genai_prices
    except ImportError:
        _report_unpriced(model, "genai-prices is not installed; pip install 'identity-middleware[openai]'")
        return None
    counts = genai_prices.Usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                                cache_read_tokens=usage.cache_read_tokens or None,
                                cache_write_tokens=usage.cache_write_tokens or None,
                                output_reasoning_tokens=usage.reasoning_tokens or None)
    attempts: list[tuple[str, str | None]] = [(model, usage.provider), (model, None)]
    prefix, _, bare = model.partition("/")
    if bare:
        attempts.append((bare, prefix))
    for name, provider in attempts:
        try:
            if provider is None:
                calculation = genai_prices.calc_price(counts, name)
            else:
                calculation = genai_prices.calc_price(counts, name, provider_id=provider)
        except LookupError:
            continue
        except ValueError as error:  # counts the model's price cannot take (inconsistent usage)
            _report_unpriced(model, str(error))
            return None
        return Decimal(str(calculation.total_price))
    _report_unpriced(model, "not in the app's prices nor in genai-prices")
    return None


def price(usage: CallUsage, prices: Prices | None = None) -> Decimal | None:
    """The USD cost of one call: the app's ``prices`` first (per model), else genai-prices;
    ``None`` when neither knows the model (reported once in the log)."""
    if not usage.model:
        return None
    if prices is not None:
        table = prices if isinstance(prices, PriceTable) else PriceTable(prices)
        found = table.cost_of(usage)
        if found is not None:
            return found
    return _maintained(usage, usage.model)
