"""Prices: the app's per-model overrides, else genai-prices; exact nano-USD; unknown models reported once."""

from __future__ import annotations

import logging
from decimal import Decimal

import genai_prices
import pytest

from identity_middleware import record_usage
from identity_middleware.context import Meter
from identity_middleware.pricing import CallUsage, ModelPrice, PriceTable, call_usage, price

CHAT = {"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
        "usage": {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
                  "prompt_tokens_details": {"cached_tokens": 1000},
                  "completion_tokens_details": {"reasoning_tokens": 100}}}
MESSAGE = {"id": "msg_1", "type": "message", "model": "claude-sonnet-4-6",
           "usage": {"input_tokens": 50, "output_tokens": 20, "cache_creation_input_tokens": 300,
                     "cache_read_input_tokens": 1000}}


def test_openai_cached_and_reasoning_tokens_are_read_apart() -> None:
    assert call_usage(CHAT) == CallUsage("gpt-4o-mini", 1200, 300, 1000, 0, 100, "openai")


def test_anthropic_cache_reads_and_writes_are_read_apart_and_counted_as_input() -> None:
    assert call_usage(MESSAGE) == CallUsage("claude-sonnet-4-6", 1350, 20, 1000, 300, 0, "anthropic")


def test_record_usage_of_a_response_is_priced_by_genai_prices_without_a_table(meter: Meter) -> None:
    assert record_usage(response=CHAT) == Decimal("0.000285")  # cached input at the cache-read price
    assert record_usage(response=MESSAGE) == Decimal("0.001875")  # cache writes at the write price
    assert meter.usage.cost == 285_000 + 1_875_000 and meter.usage.unpriced == 0


def test_genai_prices_are_used_exactly() -> None:
    usage = CallUsage("gpt-4o", 1_234_567, 7_654_321)
    expected = genai_prices.calc_price(genai_prices.Usage(input_tokens=1_234_567, output_tokens=7_654_321),
                                       "gpt-4o").total_price
    assert price(usage) == expected == Decimal("79.6296275")


def test_an_app_price_overrides_the_maintained_one_for_its_model_only() -> None:
    table = {"gpt-4o-mini": ModelPrice.of("1", "2")}
    assert price(CallUsage("gpt-4o-mini", 1_000_000, 0), table) == 1
    assert price(CallUsage("gpt-4o", 1_000_000, 0), table) == Decimal("2.5")


def test_an_app_price_may_price_cache_reads_and_writes_apart() -> None:
    table = PriceTable({"m": ModelPrice.of("3", "15", cache_read="0.3", cache_write="3.75")})
    assert table.cost_of(CallUsage("m", 1350, 20, 1000, 300)) == Decimal("0.001875")
    assert table.cost("m", 1350, 20) == Decimal("0.00435")  # the old API: every input token at the input price


def test_an_unknown_model_is_recorded_at_no_cost_counted_unpriced_and_logged_once(
        meter: Meter, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="identity_middleware.pricing"):
        for _ in range(3):
            assert record_usage(input_tokens=10, output_tokens=5, model="never-heard-of-it") == 0
    assert meter.usage.unpriced == 3 and meter.usage.input_tokens == 30
    assert len([r for r in caplog.records if "never-heard-of-it" in r.getMessage()]) == 1


def test_a_provider_prefixed_model_is_found() -> None:
    assert price(CallUsage("openai/gpt-4o", 1_000_000, 0)) == Decimal("2.5")


def test_an_explicit_cost_is_not_counted_unpriced(meter: Meter) -> None:
    record_usage("0.01", input_tokens=1, model="never-heard-of-it-either")
    assert meter.usage.unpriced == 0 and meter.usage.cost == 10_000_000
