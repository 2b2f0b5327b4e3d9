"""identity_from_user_field: the providers' own end-user fields of a JSON body, read with msgspec."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from identity_middleware.core.resolve import identity_from_user_field
from identity_middleware.core.validation import InvalidIdentity


def body(**fields: object) -> bytes:
    return json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], **fields}).encode()


def test_openai_safety_identifier_names_the_identity() -> None:
    assert identity_from_user_field(body(safety_identifier="user_1")) == "user_1"


def test_openai_user_names_the_identity() -> None:
    assert identity_from_user_field(body(user="user_2")) == "user_2"


def test_safety_identifier_wins_over_user() -> None:
    assert identity_from_user_field(body(user="old", safety_identifier="new")) == "new"


def test_anthropic_metadata_user_id_names_the_identity() -> None:
    assert identity_from_user_field(body(metadata={"user_id": "user_3", "other": 1})) == "user_3"


def test_a_top_level_field_wins_over_metadata() -> None:
    assert identity_from_user_field(body(user="top", metadata={"user_id": "nested"})) == "top"


@pytest.mark.parametrize("payload", [b"", b"not json", b"[1, 2]", b'"text"', body(), body(metadata={"tag": "x"}),
                                     body(metadata="not an object"), body(user=None), body(user="  ")])
def test_a_body_naming_nobody_gives_none(payload: bytes) -> None:
    assert identity_from_user_field(payload) is None


@pytest.mark.parametrize(("fields", "field"), [
    ({"safety_identifier": 42}, "safety_identifier"),
    ({"user": {"id": "x"}}, "user"),
    ({"user": "a\x00b"}, "user"),
    ({"user": "x" * 256}, "user"),
    ({"metadata": {"user_id": ["x"]}}, "metadata.user_id"),
])
def test_a_wrong_shaped_value_is_invalid_and_names_its_field(fields: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidIdentity) as raised:
        identity_from_user_field(body(**fields))
    assert raised.value.field == field


@given(st.binary(max_size=200))
def test_hostile_bytes_never_raise_anything_but_invalid_identity(payload: bytes) -> None:
    with contextlib.suppress(InvalidIdentity):
        identity_from_user_field(payload)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=10))
def test_any_json_value_in_the_fields_gives_a_string_none_or_invalid_identity(value: object) -> None:
    for name in ("safety_identifier", "user", "metadata"):
        try:
            found = identity_from_user_field(body(**{name: value}))
        except InvalidIdentity:
            continue
        assert found is None or isinstance(found, str)
