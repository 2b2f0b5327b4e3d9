"""What the flow decides for a request, and what a view declared: plain values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..context import Binding, Meter, Reserver, Untracked, current
from ..core.ceilings import ceiling_nanos
from ..core.errors import ErrorResponse, identity_required
from ..core.money import Money, to_nanos

__all__ = ["ANONYMOUS", "Mark", "Outcome", "Refused", "Tracked", "Untracked", "ViewReservation",
           "aenter_view", "enter_view", "view_entry"]


@dataclass(frozen=True, slots=True)
class Mark:
    """What a ``@budgeted`` view declared: the cost to reserve (nano-USD), and whether it needs
    an identity. Shells find it by routing before the view runs, so admission applies it."""

    estimate: int = 0
    require_identity: bool = False
    auto: bool = False  # estimate="auto": the most the call in the body could cost (see estimate.py)
    max_cost: int | None = None  # the request's LLM cost ceiling (nano-USD), over the middleware's

    @classmethod
    def of(cls, estimate: Money | Literal["auto"] | None, require_identity: bool, max_cost: Money | None) -> Mark:
        """A ``@budgeted`` view's mark from the decorator's arguments (USD); invalid amounts raise ``ValueError``."""
        auto = estimate == "auto"
        return cls(to_nanos(estimate) if estimate is not None and not auto else 0, require_identity, auto,
                   None if max_cost is None else ceiling_nanos(max_cost))


@dataclass(slots=True)
class Tracked:
    """Call the app; its usage goes to ``meter`` and is settled once when the response ends."""

    meter: Meter


@dataclass(frozen=True, slots=True)
class Refused:
    """Send ``error`` (400, 401, 429 or 503); the app is not called."""

    error: ErrorResponse


Outcome = Tracked | Untracked | Refused
ANONYMOUS = Untracked(None)


@dataclass(frozen=True, slots=True)
class ViewReservation:
    """A view's estimate still to hold, by whatever admitted the request: :meth:`make` from a
    sync view, :meth:`amake` from an async one; either answers an error to send, or ``None``."""

    meter: Meter
    reserver: Reserver
    estimate: int

    def make(self) -> ErrorResponse | None:
        return self.reserver.reserve(self.meter, self.estimate)

    async def amake(self) -> ErrorResponse | None:
        return await self.reserver.areserve(self.meter, self.estimate)


def view_entry(binding: Binding | None, mark: Mark) -> ErrorResponse | ViewReservation | None:
    """Entering a ``@budgeted`` view: an error to send instead, a reservation still to make, or
    ``None`` to call the view.

    Admission applies the mark when the shell found it by routing; otherwise the view reserves
    its estimate itself. A request without a meter is refused only when the view needs an
    identity and the request named none: one let through untracked (the store down under the
    "open" policy) still reaches the view.
    """
    if not isinstance(binding, Meter):
        named = binding is not None and binding.external_id is not None
        return identity_required() if mark.require_identity and not named else None
    if mark.max_cost is not None:
        binding.ceiling = mark.max_cost
    if binding.budgeted or not mark.estimate or binding.reserver is None:
        return None
    return ViewReservation(binding, binding.reserver, mark.estimate)


def enter_view(mark: Mark) -> ErrorResponse | None:
    """:func:`view_entry` for the request being served, its reservation made: the error to send, or ``None``."""
    entry = view_entry(current(), mark)
    return entry.make() if isinstance(entry, ViewReservation) else entry


async def aenter_view(mark: Mark) -> ErrorResponse | None:
    entry = view_entry(current(), mark)
    return await entry.amake() if isinstance(entry, ViewReservation) else entry
