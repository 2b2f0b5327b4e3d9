"""The admin API's replies: a framework-free (status, JSON bytes, headers) and its error bodies.

An error body is orq's ``ErrorResponse`` (``message``, ``code``: the HTTP status) with our typed
``error`` object beside it: ``{"message": ..., "code": 404, "error": {"type": "not_found", ...}}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..core.errors import ErrorResponse
from .wire import dumps

__all__ = [
    "AdminError",
    "Reply",
    "conflict",
    "invalid_request",
    "method_not_allowed",
    "not_found",
    "payload_too_large",
    "unauthorized",
]

_SENT_BY_SHELL = {"content-type", "content-length"}


@dataclass(frozen=True, slots=True)
class Reply:
    """What a route answers; the Starlette and Django shells turn it into their response type."""

    status: int
    content: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, status: int, body: Mapping[str, Any], headers: tuple[tuple[str, str], ...] = ()) -> Reply:
        return cls(status, dumps(body), headers)

    @classmethod
    def empty(cls, status: int = 204) -> Reply:
        return cls(status)

    @classmethod
    def from_error(cls, error: ErrorResponse) -> Reply:
        """One of the core's pinned error bodies (``invalid_identity``, ``store_unavailable``)."""
        headers = tuple((name, value) for name, value in error.headers if name.lower() not in _SENT_BY_SHELL)
        typed = json.loads(error.body)["error"]
        return cls.json(error.status, _error_body(error.status, typed), headers)


class AdminError(Exception):
    """A request the admin API refuses; raised anywhere in a route, answered by the dispatcher."""

    def __init__(self, status: int, error_type: str, message: str, *,
                 headers: tuple[tuple[str, str], ...] = (), **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = headers
        self.details = details

    def reply(self) -> Reply:
        typed = {"type": self.error_type, "message": self.message, **self.details}
        return Reply.json(self.status, _error_body(self.status, typed), self.headers)


def _error_body(status: int, typed: Mapping[str, Any]) -> dict[str, Any]:
    return {"message": typed["message"], "code": status, "error": typed}


def unauthorized() -> AdminError:
    return AdminError(401, "unauthorized", "A valid bearer token is required: send 'Authorization: Bearer <token>'.",
                      headers=(("www-authenticate", 'Bearer realm="identity-middleware"'),))


def not_found(message: str, **details: Any) -> AdminError:
    return AdminError(404, "not_found", message, **details)


def conflict(external_id: str) -> AdminError:
    return AdminError(409, "identity_exists", f"An identity with external_id {external_id!r} already exists.",
                      identity=external_id)


def invalid_request(message: str, field: str | None = None) -> AdminError:
    if field is None:
        return AdminError(400, "invalid_request", message)
    return AdminError(400, "invalid_request", message, field=field)


def method_not_allowed(allowed: list[str]) -> AdminError:
    return AdminError(405, "method_not_allowed", f"Use one of: {', '.join(allowed)}.",
                      headers=(("allow", ", ".join(allowed)),))


def payload_too_large(limit: int) -> AdminError:
    return AdminError(413, "payload_too_large", f"The request body exceeds {limit} bytes.")
