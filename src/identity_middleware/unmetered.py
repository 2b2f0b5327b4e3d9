"""Usage that could not be put on its own identity: dropped, counted per process and logged, never
charged to another.

Two cases reach here: usage recorded for a request that was already settled (a stream or a task
that outlived its request and was not closed by it), and usage recorded through the current
request's context while the garbage collector runs finalisers (whatever request is current then
is a bystander, not the owner). Both are rare once every stream is closed at its request's end;
this tally makes them visible (``identity_middleware_unmetered_*`` in the admin app's
``/metrics``) instead of silent.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from decimal import Decimal

from .core.money import from_nanos

__all__ = ["LATE", "UNOWNED", "UnmeteredUsage", "drop", "unmetered_usage"]

logger = logging.getLogger("identity_middleware")

LATE = "its request was already settled"
UNOWNED = "recorded from a finaliser run by the garbage collector, with no request of its own"


@dataclass(frozen=True, slots=True)
class UnmeteredUsage:
    """What this process dropped since it started: LLM calls, their cost and tokens."""

    calls: int = 0
    cost: Decimal = Decimal(0)
    input_tokens: int = 0
    output_tokens: int = 0


_lock = threading.RLock()  # reentrant: a finaliser run by a collection inside the locked section may drop too
_calls = _cost = _input = _output = 0


def drop(why: str, cost: int, input_tokens: int, output_tokens: int, model: str | None,
         external_id: str | None = None) -> None:
    """Count one call's usage (cost in nano-USD) as unmetered and log why."""
    global _calls, _cost, _input, _output
    with _lock:
        _calls += 1
        _cost += cost
        _input += input_tokens
        _output += output_tokens
    logger.warning("usage not metered (%s): model %r, $%s, %d input and %d output tokens%s", why, model,
                   from_nanos(cost), input_tokens, output_tokens,
                   f", identity {external_id!r}" if external_id is not None else "")


def unmetered_usage() -> UnmeteredUsage:
    """The usage this process dropped rather than charge it to the wrong identity."""
    with _lock:
        return UnmeteredUsage(_calls, from_nanos(_cost), _input, _output)
