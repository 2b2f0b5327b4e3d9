"""Resolution of a request's identity from parts already read: body bytes, a header, auth."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import msgspec

from .models import IdentityInput
from .validation import InvalidIdentity, check_id

Source = Literal["body", "header", "auth", "user_field"]


_NULL = msgspec.Raw(b"null")


class _Orq(msgspec.Struct):
    identity: msgspec.Raw = _NULL


class _Envelope(msgspec.Struct):
    # Only the two fields we need are kept, as raw JSON; msgspec skips the rest of a long chat
    # body (``messages`` and friends) without building Python objects for it.
    identity: msgspec.Raw = _NULL
    orq: msgspec.Raw = _NULL


_decode_envelope = msgspec.json.Decoder(_Envelope).decode
_decode_orq = msgspec.json.Decoder(_Orq).decode
_decode_any = msgspec.json.Decoder().decode
# What decoding hostile JSON raises: malformed or invalid UTF-8 (DecodeError), numbers out of range
# (ValidationError), nesting deeper than the decoder's stack (RecursionError).
UNREADABLE_JSON = (msgspec.DecodeError, msgspec.ValidationError, RecursionError, ValueError)

# The same callers send the same identity JSON again and again: its validated form is kept by its
# exact bytes (an IdentityInput is never mutated), so repeat requests skip the model validation.
_validated: dict[bytes, IdentityInput] = {}
_VALIDATED_MAX = 4096


@dataclass(slots=True)  # one per request: a frozen dataclass takes ~3x as long to build
class Resolved:
    """The identity a request carries: its external id, the record fields to upsert (body only)."""

    external_id: str
    source: Source
    upsert: IdentityInput | None = None


def is_json_content_type(content_type: str | None) -> bool:
    """``application/json``, ``application/*+json``, any parameters."""
    if content_type == "application/json":  # what nearly every client sends: no parsing
        return True
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def identity_from_body(body: bytes) -> IdentityInput | None:
    """The body's ``identity`` (or ``orq.identity``) validated; ``None`` when there is none.

    A body that is not JSON, or not a JSON object, carries no identity (the app still gets it).
    An ``identity`` that is present but not a valid object raises :class:`InvalidIdentity`.
    """
    if not body:
        return None
    try:
        envelope = _decode_envelope(body)
    except UNREADABLE_JSON:
        return None  # not JSON we can read: the app gets it as it came, the identity comes from elsewhere
    raw = bytes(envelope.identity)
    if raw == b"null" and bytes(envelope.orq) != b"null":
        try:
            raw = bytes(_decode_orq(envelope.orq).identity)
        except UNREADABLE_JSON:
            return None  # ``orq`` is not an object: nothing of ours in it
    if raw == b"null":
        return None
    found = _validated.get(raw)
    if found is not None:
        return found
    try:
        value = _decode_any(raw)
    except UNREADABLE_JSON as error:
        raise InvalidIdentity("identity", f"identity is not readable JSON ({error})") from None
    if not isinstance(value, dict):
        raise InvalidIdentity("identity", "identity must be an object")
    identity = IdentityInput.parse(value)
    if len(_validated) >= _VALIDATED_MAX:
        _validated.clear()
    _validated[raw] = identity
    return identity


def identity_from_header(value: str | None, header_name: str) -> str | None:
    """A header's identity id, validated (hostile values are refused, never passed on)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    return check_id(value, header_name)


def identity_from_auth(value: object) -> str | None:
    """An auth context's id (already mapped to a string by the framework shell), validated."""
    if value is None:
        return None
    if isinstance(value, IdentityInput):
        return value.id
    return check_id(str(value), "auth")


def resolve(
    body_identity: IdentityInput | None,
    header_id: str | None,
    auth_id: str | None,
) -> Resolved | None:
    """The first source that yields an identity wins: body, then header, then auth."""
    if body_identity is not None:
        return Resolved(body_identity.id, "body", body_identity)
    if header_id is not None:
        return Resolved(header_id, "header")
    if auth_id is not None:
        return Resolved(auth_id, "auth")
    return None


def resolve_body(body: bytes) -> Resolved | None:
    """The body's identity, tagging the request and upserting the record; ``None`` when it names none."""
    identity = identity_from_body(body)
    return Resolved(identity.id, "body", identity) if identity is not None else None


def resolve_auth(found: object) -> Resolved | None:
    """The identity of an auth context or resolver answer (an id, an :class:`IdentityInput` or
    ``None``); it tags the request only, it never updates the record."""
    if isinstance(found, IdentityInput):
        return Resolved(found.id, "auth")
    return resolve(None, None, identity_from_auth(found))


class _UserMetadata(msgspec.Struct):
    user_id: msgspec.Raw = _NULL


class _UserFields(msgspec.Struct):
    # The providers' own end-user fields: OpenAI ``safety_identifier`` (and its older name
    # ``user``), Anthropic ``metadata.user_id``; the rest of the body is skipped unread.
    safety_identifier: msgspec.Raw = _NULL
    user: msgspec.Raw = _NULL
    metadata: msgspec.Raw = _NULL


_decode_user_fields = msgspec.json.Decoder(_UserFields).decode
_decode_user_metadata = msgspec.json.Decoder(_UserMetadata).decode


def _user_field(raw: msgspec.Raw, field: str) -> str | None:
    if bytes(raw) == b"null":
        return None
    try:
        value = _decode_any(raw)
    except UNREADABLE_JSON:  # 1e400, a 4,301-digit number, invalid UTF-8, nesting too deep
        raise InvalidIdentity(field, f"{field} is not a readable JSON string") from None
    if not isinstance(value, str):
        raise InvalidIdentity(field, f"{field} must be a string")
    value = value.strip()
    return check_id(value, field) if value else None


def identity_from_user_field(body: bytes) -> str | None:
    """The end user a provider-shaped JSON body names: ``safety_identifier``, else ``user``, else
    ``metadata.user_id``; ``None`` when it names none (or is not a JSON object, or ``metadata`` is
    not an object). A field that is present but not a valid id string raises :class:`InvalidIdentity`."""
    if not body:
        return None
    try:
        fields = _decode_user_fields(body)
    except UNREADABLE_JSON:
        return None  # not JSON we can read: the app gets it as it came, the identity comes from elsewhere
    found = _user_field(fields.safety_identifier, "safety_identifier") or _user_field(fields.user, "user")
    if found is not None or bytes(fields.metadata) == b"null":
        return found
    try:
        metadata = _decode_user_metadata(fields.metadata)
    except UNREADABLE_JSON:
        return None  # `metadata` is not an object: nothing of ours in it
    return _user_field(metadata.user_id, "metadata.user_id")


class _Model(msgspec.Struct):
    model: msgspec.Raw = _NULL


_decode_model = msgspec.json.Decoder(_Model).decode
_decode_text = msgspec.json.Decoder(str).decode
MODEL_MAX = 255


def model_from_body(body: bytes) -> str | None:
    """The JSON body's ``model`` string (trimmed, 1..255 characters, no control characters), for
    model and provider budgets; ``None`` for anything else. Never raises, whatever the bytes."""
    if not body:
        return None
    try:
        raw = _decode_model(body).model
        if bytes(raw)[:1] != b'"':
            return None
        model = _decode_text(raw).strip()
    except (*UNREADABLE_JSON, TypeError):
        return None
    if not model or len(model) > MODEL_MAX or any(ord(char) < 32 or ord(char) == 127 for char in model):
        return None
    return model
