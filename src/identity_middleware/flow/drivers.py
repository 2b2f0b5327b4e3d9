"""Drive a flow plan: perform each effect with the store's sync operations, or await its async twins.

The two drivers are the only place where the sync and async flows differ, and they differ only by
``await``: every decision lives in the plans.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..core.errors import StoreUnavailable
from .effects import Admit, Effect, HitLimit, Plan, Settle

if TYPE_CHECKING:
    from ..ratelimit import RateLimiter
    from ..stores.base import Store

__all__ = ["Auth", "arun", "run"]

T = TypeVar("T")
# The shell's auth lookup: its framework's authenticated user, else the app's resolver. An async
# shell may answer an awaitable (an async resolver, Django's ``request.auser()``).
Auth = Callable[[], object]


def run(plan: Plan[T], store: Store, limiter: RateLimiter | None, auth: Auth | None = None) -> T:
    """Drive ``plan`` to its value with blocking calls (WSGI, sync Django)."""
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
                reply = store.admit(effect.request)
            elif type(effect) is Settle:
                store.settle(effect.settlement)
            elif type(effect) is HitLimit:
                assert limiter is not None
                reply = limiter.hit(effect.external_id)
            elif auth is not None:
                reply = auth()
                if inspect.isawaitable(reply):
                    _close(reply)
                    raise TypeError("a sync request cannot await its resolver: make it a plain function")
        except StoreUnavailable as error:
            failure = error


async def arun(plan: Plan[T], store: Store, limiter: RateLimiter | None, auth: Auth | None = None) -> T:
    """Drive ``plan`` to its value awaiting the async twins (ASGI, async Django)."""
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
                reply = await store.aadmit(effect.request)
            elif type(effect) is Settle:
                await store.asettle(effect.settlement)
            elif type(effect) is HitLimit:
                assert limiter is not None
                reply = await limiter.ahit(effect.external_id)
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
