"""The request's meter in a ContextVar: who is calling, what they reserved, what they used."""

from __future__ import annotations

import threading
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .core.admission import Reservation, Usage
from .core.models import Identity

if TYPE_CHECKING:
    from .gate import Gate


@dataclass(slots=True, eq=False)
class Meter:
    """One tracked request: its identity, its reservation and the usage gathered so far.

    Framework threadpools copy the context, so a view running in a worker thread adds to the
    same meter; the lock keeps concurrent additions (parallel LLM calls) exact.
    """

    identity: Identity
    reservation: Reservation | None = None
    usage: Usage = field(default_factory=Usage)
    budgeted: bool = False  # an estimate or identity requirement was applied at admission
    counted: bool = False  # the store already counted this request (blocked in a view decorator)
    gate: Gate | None = None  # the gate that admitted it, for a view's own reservation
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, cost: int, input_tokens: int, output_tokens: int, model: str | None) -> None:
        with self.lock:
            self.usage.add(cost, input_tokens, output_tokens, model)


_meter: ContextVar[Meter | None] = ContextVar("identity_middleware.meter", default=None)


def current_meter() -> Meter | None:
    return _meter.get()


def bind(meter: Meter | None) -> Token[Meter | None]:
    """Make ``meter`` current; pass the token to :func:`unbind` when the request ends."""
    return _meter.set(meter)


def unbind(token: Token[Meter | None]) -> None:
    _meter.reset(token)


# The external id of a request that was identified but let through untracked (the store was
# down under the "open" policy, or creation of unknown identities is off): it is not anonymous.
_untracked: ContextVar[str | None] = ContextVar("identity_middleware.untracked", default=None)


def bind_untracked(external_id: str) -> Token[str | None]:
    return _untracked.set(external_id)


def unbind_untracked(token: Token[str | None]) -> None:
    _untracked.reset(token)


def untracked_identity() -> str | None:
    return _untracked.get()


def current_identity() -> Identity | None:
    """The identity of the request being served, or ``None`` outside a tracked request."""
    meter = _meter.get()
    return meter.identity if meter is not None else None
