"""Cost ceilings of one inbound request's LLM calls, and of a session's (``session=``): plain values."""

from __future__ import annotations

from decimal import InvalidOperation

from .money import Money, to_nanos

__all__ = ["DEFAULT_SESSION_TTL", "Session", "ceiling_nanos"]

DEFAULT_SESSION_TTL = 86_400  # seconds a session's spend is kept after its last charge


def ceiling_nanos(value: Money) -> int:
    """A ceiling in USD as positive nano-USD; ``ValueError`` otherwise."""
    try:
        nanos = to_nanos(value)
    except (TypeError, ValueError, InvalidOperation) as error:
        raise ValueError(f"a positive USD amount such as \"0.50\", not {value!r}") from error
    if nanos <= 0:
        raise ValueError(f"a positive USD amount such as \"0.50\", not {value!r}")
    return nanos


class Session:
    """A ceiling on the LLM spend of a session: the requests of one identity that carry the same
    value in the ``header`` (e.g. ``"X-Session-Id"``) or in the JSON body's top-level ``field``
    (e.g. ``"conversation_id"``). Once the session's recorded cost reaches ``max_cost``, the next
    instrumented call is not sent (:class:`~identity_middleware.RequestBudgetExceeded`).

    The spend is a counter in the store (on Redis one key per identity and session, ``INCRBY``, so
    every process adds to the same total), charged when each request settles and kept ``ttl``
    seconds after its last charge (24 hours by default). Requests without the value have no session.
    """

    __slots__ = ("field", "header", "max_cost", "nanos", "ttl")

    def __init__(self, max_cost: Money, *, header: str | None = None, field: str | None = None,
                 ttl: int = DEFAULT_SESSION_TTL) -> None:
        self.nanos = ceiling_nanos(max_cost)
        if (header is None) == (field is None):
            raise ValueError("name the session's key once: header=\"X-Session-Id\" or field=\"session_id\"")
        for given in (header, field):
            if given is not None and (not isinstance(given, str) or not given):
                raise ValueError(f"a header or field name, not {given!r}")
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
            raise ValueError(f"ttl: a positive number of seconds, not {ttl!r}")
        self.max_cost = max_cost
        self.header = header
        self.field = field
        self.ttl = ttl

    def __repr__(self) -> str:
        key = f"header={self.header!r}" if self.header is not None else f"field={self.field!r}"
        return f"Session(max_cost={str(self.max_cost)!r}, {key}, ttl={self.ttl})"
