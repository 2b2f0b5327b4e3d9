"""The request being served, in one ContextVar: its meter when tracked, its id when untracked.

While the garbage collector runs finalisers, no request is current (see :data:`COLLECTING`).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Awaitable
from contextlib import suppress
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Protocol

from .core.admission import Reservation, Settlement, Usage
from .core.errors import ErrorResponse
from .core.models import Identity
from .unmetered import LATE, drop

__all__ = ["COLLECTING", "Binding", "Meter", "OpenStream", "Reserver", "Untracked", "bind", "current",
           "current_identity", "current_meter", "unbind"]


class Reserver(Protocol):
    """What admitted a request, asked by a ``@budgeted`` view to hold its estimate when admission
    could not see the view's mark (implemented by :class:`identity_middleware.flow.Flow`)."""

    def reserve(self, meter: Meter, estimate: int) -> ErrorResponse | None: ...

    async def areserve(self, meter: Meter, estimate: int) -> ErrorResponse | None: ...


class OpenStream(Protocol):
    """A stream a request opened and has not finished (an instrumented call's, a response body).

    The request ends it before it settles, so its usage is the request's: ``end()`` closes it and
    records what it still owes (an awaitable when ``asynchronous``). See :mod:`.flow.streams`.
    """

    @property
    def asynchronous(self) -> bool: ...

    def end(self) -> Awaitable[None] | None: ...


@dataclass(slots=True, eq=False)
class Meter:
    """One tracked request: its identity, its reservation and the usage gathered so far.

    Framework threadpools copy the context, so a view running in a worker thread adds to the
    same meter; the lock keeps concurrent additions (parallel LLM calls) exact.
    """

    identity: Identity
    reservation: Reservation | None = None
    usage: Usage = field(default_factory=Usage)
    budgeted: bool = False  # the view's mark (estimate, identity requirement) was applied at admission
    counted: bool = False  # the store has this request already: settled, or counted when blocked
    reserver: Reserver | None = None
    allowance: int | None = None  # admitted by the local allowance in an outage: the estimate held there
    lock: threading.Lock = field(default_factory=threading.Lock)

    recorded: set[str] | None = None  # provider responses already added, by id (made on first use)
    streams: dict[OpenStream, None] | None = None  # open streams, in the order opened (made on first use)

    def add(self, cost: int, input_tokens: int, output_tokens: int, model: str | None, *,
            unpriced: bool = False, key: str | None = None) -> bool:
        """Add one LLM call; ``False`` (and nothing added) when ``key`` was added before, or when
        the request is already settled: then the call is dropped and counted as unmetered."""
        with self.lock:
            if self.counted:
                late = True
            else:
                late = False
                if key is not None:
                    if self.recorded is None:
                        self.recorded = set()
                    elif key in self.recorded:
                        return False
                    self.recorded.add(key)
                self.usage.add(cost, input_tokens, output_tokens, model, unpriced=unpriced)
        if late:
            drop(LATE, cost, input_tokens, output_tokens, model, self.identity.external_id)
            return False
        return True

    def open(self, stream: OpenStream) -> bool:
        """Hold ``stream`` until it finishes or the request ends; ``False`` when the request is
        already settled (its usage can no longer be the request's)."""
        with self.lock:
            if self.counted:
                return False
            if self.streams is None:
                self.streams = {}
            self.streams[stream] = None
            return True

    def finished(self, stream: OpenStream) -> None:
        """``stream`` has recorded what it owed: no longer held."""
        with self.lock:
            if self.streams is not None:
                self.streams.pop(stream, None)

    def take_streams(self) -> list[OpenStream]:
        """The streams still open, handed over to be ended (the request is ending)."""
        with self.lock:
            found, self.streams = self.streams, None
        return list(found) if found else []

    def fail(self) -> None:
        """Mark the request as an error (an LLM call failed), whatever the response status."""
        with self.lock:
            self.usage.error = True

    def take(self, error: bool) -> Settlement | None:
        """The settlement to commit, the first time only (later calls answer ``None``)."""
        with self.lock:
            if self.counted:
                return None
            self.counted = True
            self.usage.error = self.usage.error or error
            return Settlement(self.identity.id, self.usage, self.reservation)


@dataclass(frozen=True, slots=True)
class Untracked:
    """A request the middleware let through without a meter: ``external_id`` is who it named
    (the store was down under the "open" policy, or unknown identities are not created), or
    ``None`` when it named nobody."""

    external_id: str | None = None


Binding = Meter | Untracked

_current: ContextVar[Binding | None] = ContextVar("identity_middleware.request", default=None)

#: What is current while the garbage collector runs finalisers in a thread serving a tracked
#: request: a generator or stream finalised then belongs to some earlier request, not to this
#: bystander, so usage it records through the context is dropped (see :mod:`.unmetered`), and
#: ``current_identity()`` is ``None``. (asyncio copies the context when it schedules an abandoned
#: async generator's ``aclose()``, so that too runs without the bystander's meter.) Streams that
#: carry their own meter (instrumented calls, ``metered_stream``) are not affected.
COLLECTING = Untracked(None)
_collecting: Token[Binding | None] | None = None


def _guard_collection(phase: str, info: dict[str, int]) -> None:
    # Collections never overlap (one runs at a time, process-wide), so one slot holds the token.
    global _collecting
    if phase == "start":
        if type(_current.get()) is Meter:
            _collecting = _current.set(COLLECTING)
    elif _collecting is not None:
        token, _collecting = _collecting, None
        with suppress(ValueError):  # a finaliser left another context entered: nothing of ours to undo there
            _current.reset(token)


gc.callbacks.append(_guard_collection)


def bind(binding: Binding) -> Token[Binding | None]:
    """Make ``binding`` the current request's; pass the token to :func:`unbind` when it ends."""
    return _current.set(binding)


def unbind(token: Token[Binding | None]) -> None:
    _current.reset(token)


def current() -> Binding | None:
    """What the middleware decided for the request being served; ``None`` when no middleware saw it."""
    return _current.get()


def current_meter() -> Meter | None:
    found = _current.get()
    return found if type(found) is Meter else None


def current_identity() -> Identity | None:
    """The identity of the request being served, or ``None`` outside a tracked request.

    ``None`` also inside a request the middleware let through untracked: one that named no
    identity (when none is required), or, with the store down under ``on_store_error="open"``, one
    that did (:func:`current` then says who: ``Untracked(external_id)``). View code must handle it
    (``identity.external_id if identity else None``); ``on_store_error="closed"`` or an
    ``Allowance`` never runs a view untracked for a named identity."""
    found = _current.get()
    return found.identity if type(found) is Meter else None
