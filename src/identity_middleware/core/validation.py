"""The limits an identity must respect, checked on plain values; errors name the field."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MAX_ID_LENGTH = 255
MAX_METADATA_FIELDS = 20
MAX_TAGS = 10
MAX_TAG_LENGTH = 255
MAX_TEXT_LENGTH = 1024

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Basic shape only: one @, something on each side, a dot in the domain, no spaces.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class InvalidIdentity(ValueError):
    """An identity breaks a rule; ``field`` names which part (``id``, ``email``, ``metadata``...)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def check_id(value: object, field: str = "id") -> str:
    if not isinstance(value, str):
        raise InvalidIdentity(field, f"{field} must be a string")
    if not 1 <= len(value) <= MAX_ID_LENGTH:
        raise InvalidIdentity(field, f"{field} must be 1 to {MAX_ID_LENGTH} characters")
    if _CONTROL.search(value):
        raise InvalidIdentity(field, f"{field} must not contain control characters")
    return value


def check_text(value: object, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidIdentity(field, f"{field} must be a string")
    if len(value) > MAX_TEXT_LENGTH:
        raise InvalidIdentity(field, f"{field} must be at most {MAX_TEXT_LENGTH} characters")
    if _CONTROL.search(value):
        raise InvalidIdentity(field, f"{field} must not contain control characters")
    return value


def check_email(value: object) -> str | None:
    text = check_text(value, "email")
    if text is not None and not _EMAIL.match(text):
        raise InvalidIdentity("email", "email is not a valid address")
    return text


def check_metadata(value: object) -> dict[str, Any] | None:
    """An object, or an array of objects merged left to right; at most 20 fields once merged."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        merged = dict(value)
    elif isinstance(value, list):
        merged = {}
        for part in value:
            if not isinstance(part, Mapping):
                raise InvalidIdentity("metadata", "metadata must be an object or an array of objects")
            merged.update(part)
    else:
        raise InvalidIdentity("metadata", "metadata must be an object or an array of objects")
    if not all(isinstance(key, str) for key in merged):
        raise InvalidIdentity("metadata", "metadata keys must be strings")
    if len(merged) > MAX_METADATA_FIELDS:
        raise InvalidIdentity("metadata", f"metadata may hold at most {MAX_METADATA_FIELDS} fields")
    return merged


def check_tags(value: object) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise InvalidIdentity("tags", "tags must be an array of strings")
    if len(value) > MAX_TAGS:
        raise InvalidIdentity("tags", f"at most {MAX_TAGS} tags are allowed")
    for tag in value:
        if not 1 <= len(tag) <= MAX_TAG_LENGTH or _CONTROL.search(tag):
            raise InvalidIdentity("tags", "each tag must be 1 to 255 characters without control characters")
    # Keep the caller's order, drop repeats.
    return list(dict.fromkeys(value))
