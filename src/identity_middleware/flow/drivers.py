"""Drive a flow plan: perform each effect with the store's sync operations, or await its async twins.

The two drivers are the only place where the sync and async flows differ, and they differ only by
``await``: every decision lives in the plans.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..core.errors import StoreUnavailable
from .effects import Admit, ChargeSession, Effect, HitLimit, Plan, Settle

if TYPE_CHECKING:
    from ..ratelimit import RateLimiter
    from ..stores.base import Store

__all__ = ["Auth", "Drivers"]

T = TypeVar("T")
# The shell's auth lookup: its framework's authenticated user, else the app's resolver. An async
# shell may answer an awaitable (an async resolver, Django's ``request.auser()``).
Auth = Callable[[], object]


class Drivers:
    """Drive a plan to its value against ``store`` and ``limiter``; :class:`~.steps.Flow` is one."""

    store: Store
    limiter: RateLimiter | None

    def run(self, plan: Plan[T], auth: Auth | None = None) -> T:
        """With blocking calls (WSGI, sync Django)."""
        reply: Any = None
        failure: StoreUnavailable | None = None
        while True:
            try:
                effect: Effect = plan.send(reply) if failure is None else plan.throw(failure)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            reply, failure = None, None
            try:
                if type(effect) is Admit:
                    reply = self.store.admit(effect)
                elif type(effect) is Settle:
                    self.store.settle(effect.settlement)
                elif type(effect) is HitLimit:
                    assert self.limiter is not None
                    reply = self.limiter.hit(effect.external_id)
                elif type(effect) is ChargeSession:
                    effect.session.charge(effect.cost)
                elif auth is not None:
                    reply = auth()
                    if inspect.isawaitable(reply):
                        _close(reply)
                        raise TypeError("a sync request cannot await its resolver: make it a plain function")
            except StoreUnavailable as error:
                failure = error

    async def arun(self, plan: Plan[T], auth: Auth | None = None) -> T:
        """Awaiting the async twins (ASGI, async Django)."""
        reply: Any = None
        failure: StoreUnavailable | None = None
        while True:
            try:
                effect: Effect = plan.send(reply) if failure is None else plan.throw(failure)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            reply, failure = None, None
            try:
                if type(effect) is Admit:
                    reply = await self.store.aadmit(effect)
                elif type(effect) is Settle:
                    await self.store.asettle(effect.settlement)
                elif type(effect) is HitLimit:
                    assert self.limiter is not None
                    reply = await self.limiter.ahit(effect.external_id)
                elif type(effect) is ChargeSession:
                    await effect.session.acharge(effect.cost)
                elif auth is not None:
                    reply = auth()
                    if inspect.isawaitable(reply):
                        reply = await reply
            except StoreUnavailable as error:
                failure = error


def _close(awaitable: object) -> None:
    close = getattr(awaitable, "close", None)  # a coroutine never awaited warns unless closed
    if close is not None:
        close()
