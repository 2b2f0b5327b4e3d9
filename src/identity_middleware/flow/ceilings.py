"""A request's session ceiling (``session=``): the session's spend read before each instrumented
call, the request's cost added to it when the request settles."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..core.errors import RequestBudgetExceeded, StoreUnavailable
from ..core.money import from_nanos
from ..core.resolve import UNREADABLE_JSON

if TYPE_CHECKING:
    from ..context import Meter
    from ..core.ceilings import Session
    from ..stores.base import Store
    from .request import Request

__all__ = ["SessionSpend", "session_value"]

logger = logging.getLogger("identity_middleware")

MAX_SESSION_VALUE = 256  # characters: a longer value names no session


def session_value(session: Session, request: Request) -> str | None:
    """The session the request names: its header's value, or the JSON body's top-level field (a
    string or a whole number); ``None`` when it names none."""
    if session.header is not None:
        found: object = request.header(session.header)
    else:
        if not request.body:
            return None
        import msgspec

        try:
            decoded = msgspec.json.decode(request.body)
        except UNREADABLE_JSON:
            return None
        found = decoded.get(session.field) if isinstance(decoded, dict) else None
        if isinstance(found, int) and not isinstance(found, bool):
            found = str(found)
    if not isinstance(found, str) or not found.strip() or len(found) > MAX_SESSION_VALUE:
        return None
    return found.strip()


class SessionSpend:
    """One request's session: :meth:`check` before each instrumented call (the store's figure plus
    what this request has recorded and not yet added), :meth:`charge` when it settles."""

    __slots__ = ("external_id", "key", "nanos", "store", "ttl")

    def __init__(self, store: Store, external_id: str, key: str, session: Session) -> None:
        self.store = store
        self.external_id = external_id
        self.key = key
        self.nanos = session.nanos
        self.ttl = session.ttl

    def _judge(self, spent: int, meter: Meter) -> None:
        total = spent + meter.usage.cost
        if total >= self.nanos:
            raise RequestBudgetExceeded(from_nanos(self.nanos), from_nanos(total), session=self.key)

    def check(self, meter: Meter) -> None:
        try:
            spent = self.store.session_cost(self.external_id, self.key)
        except StoreUnavailable:  # the store is down: the request's own cost is all that is known
            spent = 0
        self._judge(spent, meter)

    async def acheck(self, meter: Meter) -> None:
        try:
            spent = await self.store.asession_cost(self.external_id, self.key)
        except StoreUnavailable:
            spent = 0
        self._judge(spent, meter)

    def charge(self, cost: int) -> None:
        if cost:
            try:
                self.store.add_session_cost(self.external_id, self.key, cost, self.ttl)
            except StoreUnavailable:
                logger.warning("identity store: the cost of a request of session %r was not added to the "
                               "session's spend (store unavailable)", self.key)

    async def acharge(self, cost: int) -> None:
        if cost:
            try:
                await self.store.aadd_session_cost(self.external_id, self.key, cost, self.ttl)
            except StoreUnavailable:
                logger.warning("identity store: the cost of a request of session %r was not added to the "
                               "session's spend (store unavailable)", self.key)
