"""An admitted request's life, written once: bind its identity, call the app, decide "error", settle once, unbind.

Every shell (ASGI, WSGI, Django sync and async, the ``@budgeted`` decorators) does only this with
it, in its own I/O::

    with life:                      # async with, under ASGI and async Django
        response = call_the_app()   # raised: settled at once as an error
    life.answered(status)           # the status the app answered (none answered: 500)
    life.settle()                   # or hand the meter to a streamed body, which settles at its end

A shell whose response has ended when the app's call returns (ASGI: the app sends its body
itself) does all of it in one call, one coroutine for the request's whole life::

    await life.acall(app, scope, receive, send)   # bind, call, unbind, settle (raised: as an error)

The error rule is here alone: the app raised, or answered a status of 400 or more. Streams the
app left open (an instrumented call's, a response body's) are ended before the request settles.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import Token
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar, TypeVarTuple

from ..context import Binding, Meter, bind, unbind
from .streams import aend_streams, end_streams

if TYPE_CHECKING:
    from .steps import Flow

__all__ = ["RequestLife"]

Ts = TypeVarTuple("Ts")
T = TypeVar("T")


class RequestLife:
    """One admitted request (tracked or untracked) from the app's call to its settlement.

    ``binding`` is its meter when tracked (usage is added to it while the app runs, and settled
    once), or :class:`~identity_middleware.context.Untracked`: bound all the same, nothing to settle.
    """

    __slots__ = ("binding", "flow", "raised", "status", "token")

    def __init__(self, flow: Flow, binding: Binding) -> None:
        self.flow = flow
        self.binding = binding
        self.status = 500  # an app that never answers failed
        self.raised = False
        self.token: Token[Binding | None] | None = None

    @property
    def meter(self) -> Meter | None:
        binding = self.binding
        return binding if type(binding) is Meter else None

    @property
    def failed(self) -> bool:
        """The error rule: the app raised, or answered 400 or more."""
        return self.raised or self.status >= 400

    def answered(self, status: int) -> None:
        self.status = status

    # -- the app's call, with the identity bound -----------------------------------------------------
    def __enter__(self) -> RequestLife:
        self.token = bind(self.binding)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._unbind()
        if kind is not None:
            self.raised = True
            self.settle()

    async def __aenter__(self) -> RequestLife:
        self.token = bind(self.binding)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        self._unbind()
        if kind is not None:
            self.raised = True
            await self.asettle()

    async def acall(self, app: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T:
        """``await app(*args)`` with the identity bound, then the settlement with the
        status answered meanwhile (an app that raised is settled as an error, then the error
        raised): ``async with`` and :meth:`asettle` in one coroutine, for a shell whose response
        has ended when the call returns."""
        token = bind(self.binding)
        try:
            return await app(*args)
        except BaseException:
            self.raised = True
            raise
        finally:
            unbind(token)
            meter = self.binding
            if type(meter) is Meter:  # :meth:`asettle`, written out: a coroutine fewer per request
                if meter.streams:
                    await aend_streams(meter)
                await self.flow.asettle(meter, error=self.failed)

    def _unbind(self) -> None:
        token, self.token = self.token, None
        if token is not None:
            unbind(token)

    # -- the settlement, exactly once ----------------------------------------------------------------
    def settle(self) -> None:
        """End the streams the app left open (their usage is this request's), then commit the
        request's usage with the store's sync ``settle`` (later calls do nothing)."""
        meter = self.meter
        if meter is not None:
            if meter.streams:
                end_streams(meter)
            self.flow.settle(meter, error=self.failed)

    async def asettle(self) -> None:
        """:meth:`settle` with the store's async ``asettle``, which takes it before its first ``await``
        (the store protocol's promise): a client that disconnects cancels the request, never its
        accounting."""
        meter = self.meter
        if meter is not None:
            if meter.streams:
                await aend_streams(meter)
            await self.flow.asettle(meter, error=self.failed)
