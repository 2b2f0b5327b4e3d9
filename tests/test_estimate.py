"""estimate_from_body: the most an LLM request could cost, from its body, in nano-USD."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from identity_middleware.estimate import BYTES_PER_TOKEN, estimate_from_body

MESSAGES = [{"role": "user", "content": "Hello there, how are you?"}]
PROMPT_TOKENS = -(-len(json.dumps(MESSAGES, separators=(",", ":"))) // BYTES_PER_TOKEN)


def body(**fields: object) -> bytes:
    return json.dumps({"messages": MESSAGES, **fields}, separators=(",", ":")).encode()


def test_a_chat_request_reserves_its_prompt_and_max_completion_tokens_at_the_app_price() -> None:
    estimate = estimate_from_body(body(model="mine", max_completion_tokens=1000), prices={"mine": ("3", "15")})
    assert estimate == PROMPT_TOKENS * 3_000 + 1000 * 15_000  # $ per million = nano-USD per thousand tokens


def test_max_tokens_counts_like_max_completion_tokens() -> None:
    assert estimate_from_body(body(model="mine", max_tokens=10), prices={"mine": ("0", "1")}) == 10_000


def test_a_responses_request_reads_input_and_max_output_tokens() -> None:
    payload = json.dumps({"model": "mine", "input": "x" * 30, "max_output_tokens": 5}).encode()
    assert estimate_from_body(payload, prices={"mine": ("1", "1")}) == (-(-32 // BYTES_PER_TOKEN) + 5) * 1000


def test_an_anthropic_request_counts_its_system_prompt() -> None:
    bare = estimate_from_body(body(model="mine", max_tokens=1), prices={"mine": ("1", "0")})
    with_system = estimate_from_body(body(model="mine", max_tokens=1, system="s" * 300), prices={"mine": ("1", "0")})
    assert bare is not None and with_system is not None and with_system - bare >= 100 * 1000


def test_a_known_model_is_priced_by_genai_prices() -> None:
    estimate = estimate_from_body(body(model="gpt-4o-mini", max_completion_tokens=1_000_000))
    assert estimate is not None and 600_000_000 < estimate < 601_000_000  # $0.60 per million output tokens


@pytest.mark.parametrize("payload", [
    b"", b"{", b"[]", b'"x"', body(max_tokens=10), body(model="gpt-4o"), body(model="gpt-4o", max_tokens=0),
    body(model="gpt-4o", max_tokens="10"), body(model="gpt-4o", max_tokens=True), body(model=7, max_tokens=10),
    body(model="no-such-model-anywhere", max_tokens=10), body(model="gpt-4o", max_tokens=10**40),
])
def test_it_answers_none_when_it_cannot_tell(payload: bytes) -> None:
    assert estimate_from_body(payload) is None


@given(st.binary(max_size=200))
def test_hostile_bytes_never_raise(payload: bytes) -> None:
    estimate_from_body(payload)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)  # a shared 2-core machine
@given(st.dictionaries(st.sampled_from(["model", "max_tokens", "max_completion_tokens", "messages", "input"]),
                       st.none() | st.booleans() | st.integers() | st.text(max_size=10) | st.lists(st.integers()),
                       max_size=5))
def test_any_json_object_gives_a_non_negative_int_or_none(fields: dict[str, object]) -> None:
    found = estimate_from_body(json.dumps(fields).encode(), prices={"m": ("1", "1")})
    assert found is None or found >= 0
