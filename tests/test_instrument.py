"""instrument(client): the real openai and anthropic SDKs against a local server speaking their wire formats."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import anthropic
import anyio
import openai
import pytest

from identity_middleware import instrument, record_usage
from identity_middleware.context import Meter
from identity_middleware.core.admission import ModelUsage
from llm_servers import ProviderServer

GPT_4O_MINI_CHAT = 285_000  # 200 x $0.15 + 1000 cached x $0.075 + 300 x $0.60 per million (genai-prices)
GPT_4O_RESPONSES = 4_000_000  # 800 x $2.50 + 200 x $10 per million
SONNET_4_6_MESSAGE = 1_875_000  # 50 x $3 + 1000 read x $0.30 + 300 written x $3.75 + 20 x $15 per million


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    with ProviderServer() as running:
        yield running


def _openai(server: ProviderServer, **options: Any) -> openai.OpenAI:
    return instrument(openai.OpenAI(api_key="sk-test", base_url=f"{server.url}/v1", max_retries=0), **options)


def _aopenai(server: ProviderServer) -> openai.AsyncOpenAI:
    return instrument(openai.AsyncOpenAI(api_key="sk-test", base_url=f"{server.url}/v1", max_retries=0))


def _anthropic(server: ProviderServer) -> anthropic.Anthropic:
    return instrument(anthropic.Anthropic(api_key="sk-ant-test", base_url=server.url, max_retries=0))


def _aanthropic(server: ProviderServer) -> anthropic.AsyncAnthropic:
    return instrument(anthropic.AsyncAnthropic(api_key="sk-ant-test", base_url=server.url, max_retries=0))


HI = [{"role": "user", "content": "Hi"}]


def _totals(meter: Meter) -> tuple[int, int, int]:
    return meter.usage.cost, meter.usage.input_tokens, meter.usage.output_tokens


# -- OpenAI chat completions -----------------------------------------------------------------------
def test_a_chat_completion_is_priced_with_cached_tokens_and_names_the_identity(
        server: ProviderServer, meter: Meter) -> None:
    completion = _openai(server).chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert completion.choices[0].message.content == "Hello!"
    assert _totals(meter) == (GPT_4O_MINI_CHAT, 1200, 300)
    assert meter.usage.models == {"gpt-4o-mini": ModelUsage(1, GPT_4O_MINI_CHAT, 1200, 300)}
    assert server.requests[-1]["safety_identifier"] == "user_1"


def test_a_chat_stream_asks_for_usage_hides_its_chunk_and_is_metered_once(
        server: ProviderServer, meter: Meter) -> None:
    chunks = list(_openai(server).chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True))
    assert all(chunk.choices for chunk in chunks)  # the usage-only chunk we asked for is not shown
    assert server.requests[-1]["stream_options"] == {"include_usage": True}
    assert _totals(meter) == (GPT_4O_MINI_CHAT, 1200, 300)
    assert meter.usage.models["gpt-4o-mini"].requests == 1


def test_a_chat_stream_that_asked_for_usage_keeps_its_usage_chunk(server: ProviderServer, meter: Meter) -> None:
    chunks = list(_openai(server).chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True,
                                                          stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 1500
    assert meter.usage.cost == GPT_4O_MINI_CHAT


def test_a_chat_stream_left_early_is_still_metered_from_its_final_chunk(server: ProviderServer, meter: Meter) -> None:
    for index, _chunk in enumerate(_openai(server).chat.completions.create(model="slow-gpt-4o-mini", messages=HI,
                                                                           stream=True)):
        if index == 2:
            break
    assert _totals(meter)[1:] == (1200, 300) and meter.usage.models["slow-gpt-4o-mini"].requests == 1


def test_a_chat_stream_closed_early_is_metered(server: ProviderServer, meter: Meter) -> None:
    with _openai(server).chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True) as stream:
        next(stream)
    assert meter.usage.cost == GPT_4O_MINI_CHAT


def test_async_chat_calls_and_streams_are_metered(server: ProviderServer, meter: Meter) -> None:
    async def main() -> None:
        client = _aopenai(server)
        await client.chat.completions.create(model="gpt-4o-mini", messages=HI)
        stream = await client.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True)
        assert all([chunk.choices async for chunk in stream])
        async with await client.chat.completions.create(model="slow-gpt-4o-mini", messages=HI,
                                                        stream=True) as early:
            await early.__anext__()

    anyio.run(main)
    assert meter.usage.models["gpt-4o-mini"] == ModelUsage(2, 2 * GPT_4O_MINI_CHAT, 2400, 600)
    assert meter.usage.models["slow-gpt-4o-mini"] == ModelUsage(1, 0, 1200, 300)  # left early, read to the end


def test_the_chat_stream_helper_is_metered_from_its_final_completion(server: ProviderServer, meter: Meter) -> None:
    with _openai(server).chat.completions.stream(model="gpt-4o-mini", messages=HI) as stream:
        for _event in stream:
            break
    assert meter.usage.cost == GPT_4O_MINI_CHAT


# -- OpenAI Responses API --------------------------------------------------------------------------
def test_a_response_is_priced_and_names_the_identity(server: ProviderServer, meter: Meter) -> None:
    response = _openai(server).responses.create(model="gpt-4o", input="Hi")
    assert response.output_text == "Hello!"
    assert _totals(meter) == (GPT_4O_RESPONSES, 800, 200)
    assert server.requests[-1]["safety_identifier"] == "user_1"


def test_a_response_stream_is_metered_from_its_completed_event(server: ProviderServer, meter: Meter) -> None:
    events = list(_openai(server).responses.create(model="gpt-4o", input="Hi", stream=True))
    assert events[-1].type == "response.completed"
    assert "stream_options" not in server.requests[-1]
    assert _totals(meter) == (GPT_4O_RESPONSES, 800, 200)


def test_an_async_response_stream_left_early_is_metered(server: ProviderServer, meter: Meter) -> None:
    async def main() -> None:
        stream = await _aopenai(server).responses.create(model="slow-gpt-4o", input="Hi", stream=True)
        async for _event in stream:
            break
        await stream.close()

    anyio.run(main)
    assert _totals(meter)[1:] == (800, 200)


# -- Anthropic messages ----------------------------------------------------------------------------
def test_a_message_is_priced_with_cache_reads_and_writes_and_names_the_identity(
        server: ProviderServer, meter: Meter) -> None:
    message = _anthropic(server).messages.create(model="claude-sonnet-4-6", max_tokens=100, messages=HI)
    assert message.content[0].text == "Hello!"  # type: ignore[union-attr]
    assert _totals(meter) == (SONNET_4_6_MESSAGE, 1350, 20)
    assert server.requests[-1]["metadata"] == {"user_id": "user_1"}


def test_a_message_stream_is_metered_from_its_start_and_delta_events(server: ProviderServer, meter: Meter) -> None:
    events = list(_anthropic(server).messages.create(model="claude-sonnet-4-6", max_tokens=100, messages=HI,
                                                     stream=True))
    assert events[-1].type == "message_stop"
    assert _totals(meter) == (SONNET_4_6_MESSAGE, 1350, 20)


def test_the_message_stream_helper_left_early_is_metered(server: ProviderServer, meter: Meter) -> None:
    with _anthropic(server).messages.stream(model="slow-claude-sonnet-4-6", max_tokens=100, messages=HI) as stream:
        for _text in stream.text_stream:
            break
    assert _totals(meter)[1:] == (1350, 20)


def test_async_messages_are_metered(server: ProviderServer, meter: Meter) -> None:
    async def main() -> None:
        client = _aanthropic(server)
        await client.messages.create(model="claude-sonnet-4-6", max_tokens=100, messages=HI)
        async with client.messages.stream(model="claude-sonnet-4-6", max_tokens=100, messages=HI) as stream:
            await stream.get_final_text()

    anyio.run(main)
    assert meter.usage.cost == 2 * SONNET_4_6_MESSAGE


def test_the_callers_own_user_id_is_kept(server: ProviderServer, meter: Meter) -> None:
    _anthropic(server).messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=HI,
                                       metadata={"user_id": "theirs"})
    assert server.requests[-1]["metadata"] == {"user_id": "theirs"}


# -- the rules shared by every call ----------------------------------------------------------------
def test_outside_a_request_the_client_sends_and_records_nothing_new(server: ProviderServer) -> None:
    client = _openai(server)
    client.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True)
    assert "safety_identifier" not in server.requests[-1] and "stream_options" not in server.requests[-1]
    _anthropic(server).messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=HI)
    assert "metadata" not in server.requests[-1]


def test_a_failed_call_marks_an_error_at_no_cost(server: ProviderServer, meter: Meter) -> None:
    with pytest.raises(openai.BadRequestError):
        _openai(server).chat.completions.create(model="fail", messages=HI)
    with pytest.raises(anthropic.BadRequestError):
        _anthropic(server).messages.create(model="fail", max_tokens=10, messages=HI)
    assert meter.usage.error and meter.usage.cost == 0
    assert meter.usage.models["fail"].requests == 2


def test_hash_identity_sends_a_sha256_of_the_external_id(server: ProviderServer, meter: Meter) -> None:
    _openai(server, hash_identity=True).chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert server.requests[-1]["safety_identifier"] == hashlib.sha256(b"user_1").hexdigest()


def test_a_manual_record_of_the_same_response_is_not_counted_twice(server: ProviderServer, meter: Meter) -> None:
    completion = _openai(server).chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert record_usage(response=completion) is None
    assert meter.usage.cost == GPT_4O_MINI_CHAT and meter.usage.models["gpt-4o-mini"].requests == 1


def test_app_prices_override_genai_prices_per_model(server: ProviderServer, meter: Meter) -> None:
    _openai(server, prices={"gpt-4o-mini": ("1", "2", "0.5")}).chat.completions.create(model="gpt-4o-mini",
                                                                                     messages=HI)
    assert meter.usage.cost == 200 * 1000 + 1000 * 500 + 300 * 2000  # nano-USD per token = $ per million x 1000


def test_an_unknown_model_is_recorded_at_no_cost_and_counted_unpriced(server: ProviderServer, meter: Meter) -> None:
    _openai(server).chat.completions.create(model="in-house-llm", messages=HI)
    assert _totals(meter) == (0, 1200, 300) and meter.usage.unpriced == 1


def test_copies_made_with_options_are_instrumented(server: ProviderServer, meter: Meter) -> None:
    _openai(server).with_options(timeout=5).chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert meter.usage.cost == GPT_4O_MINI_CHAT


def test_instrument_refuses_other_objects() -> None:
    with pytest.raises(TypeError):
        instrument(object())
