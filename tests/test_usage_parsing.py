"""Usage from provider responses, price tables and `record_usage` inside and outside a request."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from identity_middleware.context import Meter, bind, current_meter, unbind
from identity_middleware.core.admission import ModelUsage
from identity_middleware.core.models import Identity
from identity_middleware.usage import ModelPrice, PriceTable, TokenUsage, parse_usage, record_usage

# Objects shaped like the OpenAI and Anthropic SDK types (attribute access, nested usage).


@dataclass
class PromptTokensDetails:
    cached_tokens: int


@dataclass
class CompletionUsage:  # openai.types.CompletionUsage
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


@dataclass
class ChatCompletion:  # openai.types.chat.ChatCompletion
    model: str
    usage: CompletionUsage | None
    object: str = "chat.completion"


@dataclass
class InputTokensDetails:
    cached_tokens: int


@dataclass
class ResponseUsage:  # openai.types.responses.ResponseUsage
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: InputTokensDetails | None = None


@dataclass
class Response:  # openai.types.responses.Response
    model: str
    usage: ResponseUsage | None
    object: str = "response"


@dataclass
class AnthropicUsage:  # anthropic.types.Usage
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


@dataclass
class Message:  # anthropic.types.Message
    model: str
    usage: AnthropicUsage
    type: str = "message"


PRICES = PriceTable({
    "gpt-4o": ("2.50", "10.00"),
    "gpt-4o-mini": ("0.15", "0.60"),
    "claude-sonnet-4": (3, 15),
})


@pytest.fixture
def meter() -> Iterator[Meter]:
    now = datetime(2026, 11, 22, tzinfo=UTC)
    identity = Identity(_id="01JD000000000000000000TEST", external_id="user_1", created=now, updated=now)
    tracked = Meter(identity)
    token = bind(tracked)
    try:
        yield tracked
    finally:
        unbind(token)


# --- parse_usage: OpenAI chat completions ------------------------------------------------------


def test_an_openai_chat_completion_object_gives_prompt_and_completion_tokens() -> None:
    response = ChatCompletion("gpt-4o-2024-08-06", CompletionUsage(1200, 300, 1500))
    assert parse_usage(response) == TokenUsage(1200, 300, "gpt-4o-2024-08-06")


def test_openai_cached_prompt_tokens_are_not_counted_twice() -> None:
    response = ChatCompletion("gpt-4o", CompletionUsage(1200, 300, 1500, PromptTokensDetails(1000)))
    assert parse_usage(response) == TokenUsage(1200, 300, "gpt-4o")


def test_an_openai_chat_completion_dict_gives_the_same_counts() -> None:
    response = {"object": "chat.completion", "model": "gpt-4o",
                "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}
    assert parse_usage(response) == TokenUsage(12, 3, "gpt-4o")


def test_a_chat_completion_without_usage_counts_no_tokens() -> None:
    assert parse_usage(ChatCompletion("gpt-4o", None)) == TokenUsage(0, 0, "gpt-4o")


# --- parse_usage: OpenAI Responses API ---------------------------------------------------------


def test_an_openai_responses_object_gives_input_and_output_tokens() -> None:
    response = Response("gpt-4o", ResponseUsage(800, 200, 1000, InputTokensDetails(500)))
    assert parse_usage(response) == TokenUsage(800, 200, "gpt-4o")


def test_an_openai_responses_dict_gives_the_same_counts() -> None:
    response = {"object": "response", "model": "gpt-4o-mini",
                "usage": {"input_tokens": 8, "output_tokens": 2, "total_tokens": 10,
                          "input_tokens_details": {"cached_tokens": 0}}}
    assert parse_usage(response) == TokenUsage(8, 2, "gpt-4o-mini")


# --- parse_usage: Anthropic Messages -----------------------------------------------------------


def test_an_anthropic_message_object_gives_input_and_output_tokens() -> None:
    response = Message("claude-sonnet-4-20250514", AnthropicUsage(50, 20))
    assert parse_usage(response) == TokenUsage(50, 20, "claude-sonnet-4-20250514")


def test_anthropic_cache_reads_and_writes_count_as_input() -> None:
    usage = AnthropicUsage(50, 20, cache_creation_input_tokens=300, cache_read_input_tokens=1000)
    assert parse_usage(Message("claude-sonnet-4", usage)) == TokenUsage(1350, 20, "claude-sonnet-4")


def test_an_anthropic_message_dict_gives_the_same_counts() -> None:
    response = {"type": "message", "model": "claude-sonnet-4",
                "usage": {"input_tokens": 5, "output_tokens": 7, "cache_read_input_tokens": None,
                          "cache_creation_input_tokens": 2}}
    assert parse_usage(response) == TokenUsage(7, 7, "claude-sonnet-4")


# --- parse_usage: bare usage and odd values ----------------------------------------------------


def test_a_bare_usage_object_has_counts_but_no_model() -> None:
    assert parse_usage(CompletionUsage(4, 6, 10)) == TokenUsage(4, 6, None)


def test_a_bare_usage_dict_has_counts_but_no_model() -> None:
    assert parse_usage({"input_tokens": 4, "output_tokens": 6}) == TokenUsage(4, 6, None)


@pytest.mark.parametrize("value", [-5, True, "12", 1.5, None])
def test_token_counts_that_are_not_non_negative_ints_count_as_zero(value: Any) -> None:
    assert parse_usage({"usage": {"input_tokens": value, "output_tokens": 3}}).input_tokens == 0


def test_a_model_that_is_not_a_string_is_dropped() -> None:
    assert parse_usage({"model": 4, "usage": {"input_tokens": 1, "output_tokens": 1}}).model is None


# --- PriceTable --------------------------------------------------------------------------------


def test_an_exact_model_name_finds_its_price() -> None:
    assert PRICES.price("gpt-4o") == ModelPrice(Decimal("2.50"), Decimal("10.00"))


def test_a_dated_model_falls_back_to_its_listed_prefix() -> None:
    assert PRICES.price("gpt-4o-2024-08-06") == PRICES.price("gpt-4o")


def test_the_longest_listed_prefix_wins() -> None:
    assert PRICES.price("gpt-4o-mini-2024-07-18") == ModelPrice(Decimal("0.15"), Decimal("0.60"))


def test_a_provider_prefix_falls_back_to_the_bare_name() -> None:
    assert PRICES.price("openai/gpt-4o") == PRICES.price("gpt-4o")


def test_a_provider_prefix_and_a_date_both_fall_back() -> None:
    assert PRICES.price("openai/gpt-4o-mini-2024-07-18") == PRICES.price("gpt-4o-mini")


def test_a_listed_name_with_a_provider_prefix_is_found_as_is() -> None:
    table = PriceTable({"azure/gpt-4o": ("5", "15"), "gpt-4o": ("2.5", "10")})
    assert table.price("azure/gpt-4o") == ModelPrice(Decimal(5), Decimal(15))


def test_an_unknown_model_has_no_price() -> None:
    assert PRICES.price("llama-3") is None
    assert PRICES.cost("llama-3", 100, 100) is None


def test_float_prices_go_through_str() -> None:
    assert PriceTable({"m": (0.1, 0.3)}).price("m") == ModelPrice(Decimal("0.1"), Decimal("0.3"))


def test_prices_may_be_given_as_model_price() -> None:
    price = ModelPrice.of("1", "2")
    assert PriceTable({"m": price}).price("m") is price


def test_cost_is_computed_exactly_per_million_tokens() -> None:
    # (2.50 * 1234 + 10.00 * 567) / 1e6
    assert PRICES.cost("gpt-4o", 1234, 567) == Decimal("0.008755")


def test_cost_of_one_token_is_exact() -> None:
    assert PRICES.cost("gpt-4o-mini", 1, 0) == Decimal("0.00000015")


def test_cost_of_no_tokens_is_zero() -> None:
    assert PRICES.cost("gpt-4o", 0, 0) == 0


# --- record_usage ------------------------------------------------------------------------------


def test_record_usage_outside_a_request_returns_none() -> None:
    assert current_meter() is None
    assert record_usage(cost="0.25", input_tokens=10, output_tokens=5, model="gpt-4o") is None


def test_record_usage_outside_a_request_leaves_no_meter_behind() -> None:
    record_usage(cost="0.25", response=ChatCompletion("gpt-4o", CompletionUsage(1, 1, 2)), prices=PRICES)
    assert current_meter() is None


def test_record_usage_inside_a_request_adds_to_its_meter(meter: Meter) -> None:
    assert record_usage(cost="0.01", input_tokens=10, output_tokens=2, model="gpt-4o") == Decimal("0.01")
    assert (meter.usage.cost, meter.usage.input_tokens, meter.usage.output_tokens) == (10_000_000, 10, 2)
    assert meter.usage.models == {"gpt-4o": ModelUsage(1, 10_000_000, 10, 2)}


def test_record_usage_adds_up_several_calls(meter: Meter) -> None:
    record_usage(cost=0.1, input_tokens=1)
    record_usage(cost=0.2, output_tokens=2)
    assert meter.usage.cost == 300_000_000
    assert (meter.usage.input_tokens, meter.usage.output_tokens) == (1, 2)


def test_record_usage_computes_the_cost_of_a_response_from_prices(meter: Meter) -> None:
    response = ChatCompletion("gpt-4o-2024-08-06", CompletionUsage(1234, 567, 1801))
    assert record_usage(response=response, prices=PRICES) == Decimal("0.008755")
    assert meter.usage.cost == 8_755_000
    assert (meter.usage.input_tokens, meter.usage.output_tokens) == (1234, 567)
    assert meter.usage.models == {"gpt-4o-2024-08-06": ModelUsage(1, 8_755_000, 1234, 567)}


def test_record_usage_accepts_a_plain_price_mapping(meter: Meter) -> None:
    response = Message("claude-sonnet-4-20250514", AnthropicUsage(1000, 100))
    assert record_usage(response=response, prices={"claude-sonnet-4": ("3", "15")}) == Decimal("0.0045")
    assert meter.usage.cost == 4_500_000


def test_an_explicit_cost_wins_over_prices(meter: Meter) -> None:
    response = ChatCompletion("gpt-4o", CompletionUsage(1000, 1000, 2000))
    assert record_usage("0.5", response=response, prices=PRICES) == Decimal("0.5")
    assert meter.usage.cost == 500_000_000


def test_explicit_token_counts_win_over_the_response(meter: Meter) -> None:
    record_usage(response=ChatCompletion("gpt-4o", CompletionUsage(1000, 1000, 2000)), input_tokens=7, model="x")
    assert (meter.usage.input_tokens, meter.usage.output_tokens) == (7, 1000)
    assert meter.usage.models == {"x": ModelUsage(1, 0, 7, 1000)}


def test_an_unpriced_model_records_tokens_at_no_cost(meter: Meter) -> None:
    assert record_usage(response=ChatCompletion("llama-3", CompletionUsage(5, 5, 10)), prices=PRICES) == 0
    assert (meter.usage.cost, meter.usage.input_tokens) == (0, 5)


def test_a_negative_cost_is_refused(meter: Meter) -> None:
    with pytest.raises(ValueError):
        record_usage(cost="-0.01")
    assert meter.usage.cost == 0


def test_negative_token_counts_are_refused(meter: Meter) -> None:
    with pytest.raises(ValueError):
        record_usage(input_tokens=-1)
    assert meter.usage.input_tokens == 0


def test_record_usage_rounds_sub_nano_costs_half_even(meter: Meter) -> None:
    record_usage(cost="0.0000000025")
    assert meter.usage.cost == 2
