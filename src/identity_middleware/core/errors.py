"""Exceptions of the domain and the pinned JSON error bodies (no framework, no I/O)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from .admission import BudgetBlock
from .money import format_usd
from .validation import InvalidIdentity

__all__ = [
    "ErrorResponse",
    "IdentityExists",
    "IdentityNotFound",
    "InvalidIdentity",
    "RequestBudgetExceeded",
    "StoreLate",
    "StoreMisconfigured",
    "StoreUnavailable",
    "budget_exceeded",
    "identity_forbidden",
    "identity_required",
    "identity_signature_invalid",
    "invalid_identity",
    "rate_limited",
    "request_budget_exceeded",
    "request_timeout",
    "store_unavailable",
]


class IdentityNotFound(LookupError):
    """No identity has that ``_id`` or ``external_id``."""


class IdentityExists(ValueError):
    """An identity with that ``external_id`` already exists."""


class StoreUnavailable(ConnectionError):
    """The store cannot be reached; the outage policy decides what the request gets."""


class StoreMisconfigured(ValueError):
    """The store cannot work as configured (a URL that names no store, a refused password, no such
    database): said at startup, naming the URL with its password masked and the cause."""


class StoreLate(StoreUnavailable):
    """The store did not answer this call within its bound, but is not known to be down (a slow or
    starved process, or the first moments of a stall): the request is refused (503), whatever the
    outage policy, because a budget must not give way just because this process is slow."""


class RequestBudgetExceeded(Exception):
    """An instrumented LLM call was not sent: the request's (or its session's) recorded cost has
    reached its ceiling (``@budgeted(max_cost=...)``, ``max_cost=``, ``session=``). A view may catch
    it; uncaught, the middleware answers ``429 request_budget_exceeded``. ``max_cost`` and
    ``spent`` are USD; ``session`` names the session key when the session's ceiling is the one reached."""

    def __init__(self, max_cost: Decimal, spent: Decimal, session: str | None = None) -> None:
        self.max_cost = max_cost
        self.spent = spent
        self.session = session
        what = f"session {session!r}" if session is not None else "request"
        super().__init__(f"this {what} has spent {format_usd(spent)} USD of its {format_usd(max_cost)} USD ceiling")

    @property
    def response(self) -> ErrorResponse:
        """The ``429 request_budget_exceeded`` answer (status, headers, JSON body bytes)."""
        return request_budget_exceeded(self)


class ErrorResponse:
    """A ready-to-send error: status, headers (as ``(str, str)`` pairs) and the JSON body bytes."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: dict[str, Any], headers: list[tuple[str, str]] | None = None) -> None:
        self.status = status
        self.body = json.dumps(body, separators=(",", ":")).encode()
        self.headers = [("content-type", "application/json"),
                        ("content-length", str(len(self.body))), *(headers or [])]


def _error(error_type: str, message: str, **details: Any) -> dict[str, Any]:
    return {"error": {"type": error_type, "message": message, **details}}


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def invalid_identity(error: InvalidIdentity) -> ErrorResponse:
    return ErrorResponse(400, _error("invalid_identity", error.message, field=error.field))


_SENT_BY = {"body": "an identity object in the JSON body", "header": "an identity header",
            "user_field": "the provider's user field in the JSON body (safety_identifier, user, metadata.user_id)"}


def identity_required(sources: Sequence[str] = ("body", "header", "auth")) -> ErrorResponse:
    """401, saying how this app lets a request name its identity (``sources``, in order)."""
    sent = [_SENT_BY[source] for source in sources if source in _SENT_BY]
    if sent:
        how = "send " + " or ".join(sent)
    else:  # the authentication of the request alone names it
        how = ("only the request's authentication names it here (sign in); an identity in the body or a "
               "header is not accepted")
    return ErrorResponse(401, _error("identity_required", f"This endpoint requires an identity: {how}."))


def budget_exceeded(external_id: str, block: BudgetBlock) -> ErrorResponse:
    resets = f"it resets at {_iso(block.resets_at)}" if block.resets_at is not None else "it never resets"
    if block.token_limit is not None and block.tokens >= block.token_limit:
        what = f"The {block.period.value} token limit of {block.token_limit} is used up"
    elif block.amount and block.spent + block.reserved >= block.amount:
        what = f"The {block.period.value} budget of {format_usd(block.amount)} USD is spent"
    elif block.amount:
        left = format_usd(block.amount - block.spent - block.reserved)
        what = (f"The {block.period.value} budget of {format_usd(block.amount)} USD has "
                f"{left} USD left, less than this request's estimate")
    else:
        what = f"The {block.period.value} budget's requests per minute are used up"
    body = _error(
        "budget_exceeded",
        f"{what}; {resets}.",
        identity=external_id,
        period=block.period.value,
        amount=format_usd(block.amount),
        spent=format_usd(block.spent),
        reserved=format_usd(block.reserved),
        resets_at=_iso(block.resets_at) if block.resets_at is not None else None,
    )
    if block.budget_id is not None:
        body["error"]["budget_id"] = block.budget_id
        body["error"]["scope"] = block.scope
    if block.token_limit is not None:
        body["error"]["token_limit"] = block.token_limit
        body["error"]["tokens"] = block.tokens
    # A budget resets in hours, not seconds: the OpenAI and Anthropic SDKs (and agents on them)
    # retry a 429 unless told not to, and they honour this header. The status stays 429 (orq's).
    return ErrorResponse(429, body, [("retry-after", str(block.retry_after)), ("x-should-retry", "false")])


def request_budget_exceeded(error: RequestBudgetExceeded) -> ErrorResponse:
    details: dict[str, Any] = {"max_cost": format_usd(error.max_cost), "spent": format_usd(error.spent)}
    if error.session is not None:
        details["session"] = error.session
    body = _error("request_budget_exceeded", f"The {'session' if error.session is not None else 'request'}'s "
                  f"LLM calls have spent {format_usd(error.spent)} USD of its {format_usd(error.max_cost)} USD "
                  "ceiling; no further call is made.", **details)
    return ErrorResponse(429, body, [("x-should-retry", "false")])


def rate_limited(external_id: str, limit: str, retry_after: int, headers: list[tuple[str, str]]) -> ErrorResponse:
    body = _error("rate_limited", f"Rate limit {limit} exceeded; retry in {retry_after} s.",
                  identity=external_id, limit=limit, retry_after=retry_after)
    return ErrorResponse(429, body, [("retry-after", str(retry_after)), *headers])


def store_unavailable() -> ErrorResponse:
    return ErrorResponse(503, _error("store_unavailable",
                                     "The identity store is unavailable; try again shortly."),
                         [("retry-after", "1")])


def identity_forbidden(principal: str, claimed: str) -> ErrorResponse:
    return ErrorResponse(403, _error("identity_forbidden",
                                     f"{principal!r} may not act for {claimed!r}.", identity=claimed))


def identity_signature_invalid(reason: str) -> ErrorResponse:
    return ErrorResponse(401, _error("identity_signature_invalid",
                                     f"The identity header needs a valid X-Identity-Signature: {reason}."))


def request_timeout(seconds: float) -> ErrorResponse:
    return ErrorResponse(408, _error("request_timeout", f"The request body did not arrive within {seconds:g} s."),
                         [("connection", "close")])
