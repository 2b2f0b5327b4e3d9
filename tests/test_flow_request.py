"""What the flow reads of a request: the JSON body policy (one place for every shell) and header text."""

from __future__ import annotations

import pytest

from identity_middleware.flow import JsonBody, header_text


@pytest.mark.parametrize(("content_type", "content_length", "wanted"), [
    ("application/json", "10", True),
    ("application/json; charset=utf-8", None, True),
    ("application/vnd.api+json", "", True),
    ("text/plain", "10", False),
    (None, "10", False),
    ("application/json", "101", False),  # declared over the limit: never read
    ("application/json", "-1", False),
    ("application/json", "ten", False),
    ("application/json", "100", True),  # exactly at the limit
])
def test_which_bodies_are_read(content_type: str | None, content_length: str | None, wanted: bool) -> None:
    assert JsonBody.allowed(content_type, content_length, 100) is wanted


def test_a_body_within_the_limit_is_whole_in_any_chunks() -> None:
    reader = JsonBody(10)
    assert reader.feed(b"12345") and reader.feed(b"") and reader.feed(b"67890")
    assert reader.body() == b"1234567890" and reader.read_so_far() == b"1234567890"


def test_a_body_whose_last_chunk_crosses_the_limit_is_not_resolved() -> None:
    # A chunked body without a length, its final chunk (more_body=False) crossing the limit.
    reader = JsonBody(10)
    assert reader.feed(b"12345")
    assert not reader.feed(b"678901")
    assert reader.body() is None
    assert reader.read_so_far() == b"12345678901"  # still replayed to the app byte for byte


def test_header_text_is_utf8_else_latin1() -> None:
    assert header_text("¡hola 👋".encode()) == "¡hola 👋"
    assert header_text(b"caf\xe9") == "café"
