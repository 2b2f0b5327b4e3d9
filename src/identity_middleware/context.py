"""The request being served, in one ContextVar: its meter when tracked, its id when untracked.

While the garbage collector runs finalisers, no meter is current (see :func:`collecting`).
"""

from __future__ import annotations

import _thread
import gc
import sys
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextvars import Context, ContextVar, Token
from dataclasses import dataclass, field
from decimal import Decimal
from threading import get_ident
from typing import Protocol

from .core.admission import Consumed, Reservation, Settlement, Usage
from .core.errors import ErrorResponse, RequestBudgetExceeded
from .core.models import Identity
from .core.money import from_nanos
from .core.tiers import Tier
from .unmetered import LATE, drop

__all__ = ["ABANDONED", "Binding", "Meter", "OpenStream", "Reserver", "SessionCeiling", "Untracked", "bind",
           "collecting", "current", "current_cost", "current_identity", "current_meter", "current_tier",
           "finalise_abandoned_outside_requests", "unbind"]


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


class SessionCeiling(Protocol):
    """A request's session ceiling (``session=``): asked before each instrumented call, told the
    request's cost when it settles (implemented by :class:`identity_middleware.flow.ceilings.Session`)."""

    def check(self, meter: Meter) -> None: ...

    async def acheck(self, meter: Meter) -> None: ...

    def charge(self, cost: int) -> None: ...

    async def acharge(self, cost: int) -> None: ...


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
    charged: tuple[str, ...] = ()  # the project, API-key and match budgets its admission matched
    # Reentrant: a stream of this request finalised by a collection that starts inside a locked
    # section (at an allocation, before Python 3.12) adds to the meter from the same thread.
    # threading.RLock is a Python function returning _thread.RLock(): the type itself, one call fewer per request.
    lock: threading.RLock = field(default_factory=_thread.RLock)

    recorded: set[str] | None = None  # provider responses already added, by id (made on first use)
    streams: dict[OpenStream, None] | None = None  # open streams, in the order opened (made on first use)
    # Steering: the degrade tier in force, the tightest budget at admission (budget headers), the
    # request's cost ceiling (nano-USD) and its session's.
    tier: Tier | None = None
    budget: Consumed | None = None
    ceiling: int | None = None
    session: SessionCeiling | None = None

    def check_ceiling(self) -> None:
        """Before an instrumented call: :class:`RequestBudgetExceeded` once the request's recorded
        cost has reached its ceiling (the session's is asked by the caller, sync or async)."""
        ceiling = self.ceiling
        if ceiling is not None and self.usage.cost >= ceiling:
            raise RequestBudgetExceeded(from_nanos(ceiling), from_nanos(self.usage.cost))

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
            return Settlement(self.identity.id, self.usage, self.reservation, None, self.charged)


@dataclass(frozen=True, slots=True)
class Untracked:
    """A request the middleware let through without a meter: ``external_id`` is who it named
    (the store was down under the "open" policy, or unknown identities are not created), or
    ``None`` when it named nobody."""

    external_id: str | None = None


Binding = Meter | Untracked

_current: ContextVar[Binding | None] = ContextVar("identity_middleware.request", default=None)

# The thread whose garbage collection is running finalisers, while it runs them. A generator or
# stream finalised then belongs to some earlier request, not to the bystander request this thread
# serves: usage it records through the context is dropped and counted (see :mod:`.unmetered`),
# and ``current_identity()`` is ``None`` there. A plain flag, not a ContextVar set: setting a
# ContextVar inside a collection can crash CPython before 3.12 (gh-148891, a collection may run
# inside another ContextVar.set). An abandoned async generator's ``aclose()`` is scheduled by the
# event loop's finaliser hook in the context current when it was collected, to run later: see
# :func:`finalise_abandoned_outside_requests`. Streams that carry their own meter (instrumented
# calls, ``metered_stream``, ``@budgeted`` streaming bodies) are ended by their request instead.
_collector: int | None = None


def _guard_collection(phase: str, info: dict[str, int]) -> None:
    global _collector  # collections never overlap, process-wide: one slot
    _collector = get_ident() if phase == "start" else None


gc.callbacks.append(_guard_collection)


def collecting() -> bool:
    """Whether this thread is running the garbage collector's finalisers now."""
    return _collector is not None and _collector == get_ident()


# What an abandoned async generator's ``aclose()`` runs under: no request. Usage it records is
# dropped and counted as unmetered, never put on the request its collection happened to run in.
ABANDONED = Untracked()
_abandoned = Context()
_abandoned.run(_current.set, ABANDONED)  # set once, here: never inside a collection


class _FinaliseAbandoned:
    """An event loop's async-generator finaliser hook, run in a copy of ``_abandoned``: the loop's
    own hook schedules ``aclose()`` in the context current when it is called, so the task it makes
    (and the generator's ``finally``) runs as no request's. Entering a context sets no ContextVar."""

    __slots__ = ("hook",)

    def __init__(self, hook: Callable[[AsyncGenerator[object, object]], object]) -> None:
        self.hook = hook

    def __call__(self, generator: AsyncGenerator[object, object]) -> None:
        _abandoned.copy().run(self.hook, generator)


def finalise_abandoned_outside_requests() -> None:
    """Make the running event loop's thread finalise abandoned async generators as no request's.

    asyncio (and uvloop) finalise an async generator that was dropped unfinished by scheduling its
    ``aclose()`` in the context current when the collector found it: that of whatever request was
    being served then, so a plain streaming body's ``finally: record_usage(...)`` would charge a
    bystander. Called by the ASGI middleware per request; costs one hooks lookup once installed.
    The loop restores its hooks when it stops, so each loop gets the wrapper anew."""
    hooks = sys.get_asyncgen_hooks()
    if hooks.finalizer is not None and type(hooks.finalizer) is not _FinaliseAbandoned:
        sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=_FinaliseAbandoned(hooks.finalizer))


def bind(binding: Binding) -> Token[Binding | None]:
    """Make ``binding`` the current request's; pass the token to :func:`unbind` when it ends."""
    return _current.set(binding)


def unbind(token: Token[Binding | None]) -> None:
    _current.reset(token)


def current() -> Binding | None:
    """What the middleware decided for the request being served; ``None`` when no middleware saw it."""
    return _current.get()


def current_meter() -> Meter | None:
    """The meter of the tracked request being served (``None`` in a finaliser the collector runs)."""
    found = _current.get()
    if type(found) is not Meter or (_collector is not None and collecting()):
        return None
    return found


def current_tier() -> Tier | None:
    """The degrade tier (``degrade=``) in force for the request being served: ``None`` outside a
    tracked request and when its budgets reach no tier. Instrumented calls apply it themselves; a
    view applies it to calls it makes otherwise (``tier.model(name)``, ``tier.max_tokens``)."""
    found = current_meter()
    return found.tier if found is not None else None


def current_cost() -> Decimal | None:
    """The LLM cost (USD) the request being served has recorded so far: ``None`` outside a tracked
    request. A streamed answer's last event can carry it (see docs: Steering, "Budget headers")."""
    found = current_meter()
    return from_nanos(found.usage.cost) if found is not None else None


def current_identity() -> Identity | None:
    """The identity of the request being served, or ``None`` outside a tracked request.

    ``None`` also inside a request the middleware let through untracked: one that named no
    identity (when none is required), or, with the store down under ``on_store_error="open"``, one
    that did (:func:`current` then says who: ``Untracked(external_id)``). View code must handle it
    (``identity.external_id if identity else None``); ``on_store_error="closed"`` or an
    ``Allowance`` never runs a view untracked for a named identity."""
    found = current_meter()
    return found.identity if found is not None else None
