"""Resolution: body `identity` (or `orq.identity`) > identity header > auth context."""

from __future__ import annotations

import json
from typing import Any

import pytest

from identity_middleware.core.models import IdentityInput
from identity_middleware.core.resolve import (
    identity_from_auth,
    identity_from_body,
    identity_from_header,
    is_json_content_type,
    resolve,
)
from identity_middleware.core.validation import InvalidIdentity


def body(data: Any) -> bytes:
    return json.dumps(data).encode()


def chat_messages(size: int) -> list[dict[str, str]]:
    """Chat messages totalling at least ``size`` bytes of JSON."""
    return [{"role": "user", "content": "lorem ipsum " * 80} for _ in range(size // 900)]


# --- the body ----------------------------------------------------------------------------------


def test_a_body_identity_is_read() -> None:
    identity = identity_from_body(body({"model": "gpt-4o", "identity": {"id": "user_1", "display_name": "Ann"}}))
    assert identity is not None
    assert identity.id == "user_1"
    assert identity.changes() == {"display_name": "Ann"}


def test_an_orq_identity_is_read() -> None:
    identity = identity_from_body(body({"orq": {"identity": {"id": "user_2"}}}))
    assert identity is not None
    assert identity.id == "user_2"


def test_the_top_level_identity_wins_over_orq_identity() -> None:
    identity = identity_from_body(body({"orq": {"identity": {"id": "orq"}}, "identity": {"id": "top"}}))
    assert identity is not None
    assert identity.id == "top"


def test_a_null_identity_falls_back_to_orq_identity() -> None:
    identity = identity_from_body(body({"identity": None, "orq": {"identity": {"id": "orq"}}}))
    assert identity is not None
    assert identity.id == "orq"


def test_an_identity_at_the_end_of_a_100_kb_chat_body_is_read() -> None:
    raw = body({"model": "gpt-4o", "messages": chat_messages(100_000), "identity": {"id": "late"}})
    assert len(raw) >= 100_000
    identity = identity_from_body(raw)
    assert identity is not None
    assert identity.id == "late"


def test_an_identity_at_the_start_of_a_100_kb_chat_body_is_read() -> None:
    raw = body({"identity": {"id": "early"}, "model": "gpt-4o", "messages": chat_messages(100_000)})
    assert len(raw) >= 100_000
    identity = identity_from_body(raw)
    assert identity is not None
    assert identity.id == "early"


def test_an_identity_nested_deeper_than_orq_is_not_read() -> None:
    raw = body({"messages": [{"role": "user", "identity": {"id": "nested"}}], "metadata": {"identity": {"id": "m"}}})
    assert identity_from_body(raw) is None


def test_a_body_without_identity_has_none() -> None:
    assert identity_from_body(body({"model": "gpt-4o", "messages": []})) is None


def test_an_empty_body_has_no_identity() -> None:
    assert identity_from_body(b"") is None


@pytest.mark.parametrize("raw", [b"{", b'{"identity": {"id": "u"}', b"not json", b"\xff\xfe", b"{'identity': 1}"])
def test_malformed_json_has_no_identity(raw: bytes) -> None:
    assert identity_from_body(raw) is None


@pytest.mark.parametrize("raw", [b'[{"identity": {"id": "u"}}]', b'"identity"', b"42", b"null", b"true"])
def test_a_json_body_that_is_not_an_object_has_no_identity(raw: bytes) -> None:
    assert identity_from_body(raw) is None


@pytest.mark.parametrize("orq", ["identity", 5, [{"identity": {"id": "u"}}], True])
def test_an_orq_that_is_not_an_object_carries_no_identity(orq: object) -> None:
    assert identity_from_body(body({"orq": orq})) is None


def test_an_orq_without_identity_carries_none() -> None:
    assert identity_from_body(body({"orq": {"trace": "x"}})) is None


@pytest.mark.parametrize("value", ["x", 5, ["id"], True])
def test_an_identity_that_is_not_an_object_is_invalid(value: object) -> None:
    with pytest.raises(InvalidIdentity) as caught:
        identity_from_body(body({"identity": value}))
    assert caught.value.field == "identity"


def test_an_orq_identity_that_is_not_an_object_is_invalid() -> None:
    with pytest.raises(InvalidIdentity) as caught:
        identity_from_body(body({"orq": {"identity": "x"}}))
    assert caught.value.field == "identity"


def test_a_body_identity_without_an_id_names_the_id() -> None:
    with pytest.raises(InvalidIdentity) as caught:
        identity_from_body(body({"identity": {"display_name": "Ann"}}))
    assert caught.value.field == "id"


def test_a_body_identity_breaking_a_limit_names_the_field() -> None:
    with pytest.raises(InvalidIdentity) as caught:
        identity_from_body(body({"identity": {"id": "u", "tags": [str(n) for n in range(11)]}}))
    assert caught.value.field == "tags"


def test_a_body_identity_may_use_external_id() -> None:
    identity = identity_from_body(body({"identity": {"external_id": "ext"}}))
    assert identity is not None
    assert identity.id == "ext"


def test_a_body_identity_logo_url_becomes_avatar_url() -> None:
    identity = identity_from_body(body({"identity": {"id": "u", "logo_url": "https://x/l.png"}}))
    assert identity is not None
    assert identity.changes() == {"avatar_url": "https://x/l.png"}


# --- the header --------------------------------------------------------------------------------


def test_a_header_value_is_the_identity_id() -> None:
    assert identity_from_header("user_1", "x-identity-id") == "user_1"


def test_a_header_value_is_stripped() -> None:
    assert identity_from_header("  user_1 ", "x-identity-id") == "user_1"


def test_no_header_means_no_identity() -> None:
    assert identity_from_header(None, "x-identity-id") is None


def test_a_blank_header_means_no_identity() -> None:
    assert identity_from_header("   ", "x-identity-id") is None


def test_a_header_with_a_control_character_is_invalid_and_names_the_header() -> None:
    with pytest.raises(InvalidIdentity) as caught:
        identity_from_header("user\x001", "x-identity-id")
    assert caught.value.field == "x-identity-id"


def test_a_header_longer_than_255_characters_is_invalid() -> None:
    with pytest.raises(InvalidIdentity):
        identity_from_header("x" * 256, "x-identity-id")


def test_a_header_of_255_characters_is_accepted() -> None:
    assert identity_from_header("x" * 255, "x-identity-id") == "x" * 255


# --- the auth context --------------------------------------------------------------------------


def test_an_auth_value_is_the_identity_id() -> None:
    assert identity_from_auth("owner_7") == "owner_7"


def test_an_auth_value_is_turned_into_a_string() -> None:
    assert identity_from_auth(42) == "42"


def test_no_auth_value_means_no_identity() -> None:
    assert identity_from_auth(None) is None


def test_an_auth_identity_input_gives_its_id() -> None:
    assert identity_from_auth(IdentityInput.parse({"id": "from_auth"})) == "from_auth"


def test_an_invalid_auth_value_is_refused_as_auth() -> None:
    with pytest.raises(InvalidIdentity) as caught:
        identity_from_auth("bad\nid")
    assert caught.value.field == "auth"


def test_an_empty_auth_value_is_refused() -> None:
    with pytest.raises(InvalidIdentity):
        identity_from_auth("")


# --- order -------------------------------------------------------------------------------------


def test_the_body_wins_over_header_and_auth() -> None:
    body_identity = IdentityInput.parse({"id": "b", "email": "b@example.com"})
    resolved = resolve(body_identity, "h", "a")
    assert resolved is not None
    assert (resolved.external_id, resolved.source, resolved.upsert) == ("b", "body", body_identity)


def test_the_header_wins_over_auth() -> None:
    resolved = resolve(None, "h", "a")
    assert resolved is not None
    assert (resolved.external_id, resolved.source) == ("h", "header")


def test_auth_is_used_last() -> None:
    resolved = resolve(None, None, "a")
    assert resolved is not None
    assert (resolved.external_id, resolved.source) == ("a", "auth")


def test_header_and_auth_identities_only_tag_and_never_upsert() -> None:
    header = resolve(None, "h", None)
    auth = resolve(None, None, "a")
    assert header is not None
    assert auth is not None
    assert header.upsert is None
    assert auth.upsert is None


def test_no_source_means_no_identity() -> None:
    assert resolve(None, None, None) is None


# --- content types -----------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON", "application/vnd.api+json"])
def test_json_content_types_are_recognised(content_type: str) -> None:
    assert is_json_content_type(content_type)


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "multipart/form-data", "text/json+x",
                                          "application/x-www-form-urlencoded"])
def test_other_content_types_are_not_json(content_type: str | None) -> None:
    assert not is_json_content_type(content_type)
