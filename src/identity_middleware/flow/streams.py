"""Streams that belong to a request: its open streams ended before it settles, response bodies
that run with its meter bound (``metered_stream``), and bodies that settle the request when they end.

A stream's usage is its own request's, whatever context finalises it. Every stream that can owe
usage (an instrumented call's, a :func:`metered_stream` body) takes its request's meter when it
is created and is held by the meter until it finishes. A request's settlement waits for them:
the shell calls :func:`end_streams` / :func:`aend_streams` just before it settles, which closes
each stream still open with its meter bound, so what it owes (read to its end for an
instrumented call) lands on the request before it is committed, once. Usage that arrives after
the settlement (a stream finalised later, a task that outlived its request) is dropped and
counted as unmetered (:mod:`identity_middleware.unmetered`), never put on another identity.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import TypeVar, overload

from ..context import Meter, bind, collecting, current_meter, unbind
from .steps import Flow

__all__ = ["AsyncMeteredIterator", "MeteredIterable", "aend_streams", "end_streams", "metered_stream"]

logger = logging.getLogger("identity_middleware")

T = TypeVar("T")


# -- ending a request's open streams ----------------------------------------------------------------
def end_streams(meter: Meter) -> None:
    """End the request's open streams before it settles (a WSGI or sync Django request).

    Async streams cannot be ended without their event loop: they are let go, and what they
    record when their loop finalises them is counted as unmetered.
    """
    if meter.streams is None:
        return
    while streams := meter.take_streams():
        for stream in streams:
            if stream.asynchronous:  # it needs its event loop: what it records later is logged, unmetered
                continue
            try:
                stream.end()
            except Exception:
                logger.exception("ending a stream left open by its request failed")


async def aend_streams(meter: Meter) -> None:
    """End the request's open streams before it settles (an ASGI or async Django request): async
    ones awaited, sync ones in a worker thread (ending one may read the rest of an LLM's reply).
    Shielded: a client that went away cancels the request, never its accounting."""
    import anyio

    with anyio.CancelScope(shield=True):
        while streams := meter.take_streams():
            for stream in streams:
                try:
                    if stream.asynchronous:
                        await stream.end()  # type: ignore[misc]
                    else:
                        await anyio.to_thread.run_sync(stream.end)
                except Exception:
                    logger.exception("ending a stream left open by its request failed")


# -- a response body that belongs to the request that made it ----------------------------------------
class _Owned:
    """What both body twins hold: their request's meter (which holds them until they end)."""

    asynchronous = False
    _ended = True  # until registered (a finaliser may meet a body whose construction failed)

    def __init__(self, meter: Meter) -> None:
        self._meter = meter
        self._ended = not meter.open(self)  # a request already settled: its steps still run bound

    def end(self) -> Awaitable[None] | None:
        raise NotImplementedError

    def _done(self) -> None:
        self._ended = True
        self._meter.finished(self)


class MeteredBody(_Owned, Iterator[T]):
    """A sync body run with its request's meter bound: each step, ``close()``, and its finaliser."""

    _iterator: Iterator[T] | None = None

    def __init__(self, content: Iterable[T], meter: Meter) -> None:
        self._content: Iterable[T] | None = content
        super().__init__(meter)

    def __iter__(self) -> MeteredBody[T]:
        return self

    def __next__(self) -> T:
        token = bind(self._meter)
        try:
            if self._iterator is None:
                assert self._content is not None
                self._iterator = iter(self._content)
            return next(self._iterator)
        except StopIteration:
            self._done()
            raise
        finally:
            unbind(token)

    def close(self) -> None:
        if self._ended:
            return
        self._done()
        token = bind(self._meter)
        try:
            close = getattr(self._iterator if self._iterator is not None else self._content, "close", None)
            if close is not None:
                close()
        finally:
            unbind(token)

    def end(self) -> None:
        self.close()

    def __del__(self) -> None:
        # Its request ends it; this is the fallback. Inside a collection no ContextVar is set (see
        # context.collecting): what the body records there is counted as unmetered.
        if not self._ended:
            try:
                if collecting():
                    self._done()
                    close = getattr(self._iterator if self._iterator is not None else self._content, "close", None)
                    if close is not None:
                        close()
                else:
                    self.close()
            except Exception:  # a finaliser has no caller to tell
                logger.exception("closing a response body left open failed")


class AsyncMeteredBody(_Owned, AsyncIterator[T]):
    """An async body run with its request's meter bound: each step, ``aclose()``, and its finaliser."""

    asynchronous = True
    _iterator: AsyncIterator[T] | None = None

    def __init__(self, content: AsyncIterable[T], meter: Meter) -> None:
        self._content: AsyncIterable[T] | None = content
        super().__init__(meter)

    def __aiter__(self) -> AsyncMeteredBody[T]:
        return self

    async def __anext__(self) -> T:
        token = bind(self._meter)
        try:
            if self._iterator is None:
                assert self._content is not None
                self._iterator = aiter(self._content)
            return await anext(self._iterator)
        except StopAsyncIteration:
            self._done()
            raise
        finally:
            unbind(token)

    async def aclose(self) -> None:
        if self._ended:
            return
        self._done()
        token = bind(self._meter)
        try:
            close = getattr(self._iterator if self._iterator is not None else self._content, "aclose", None)
            if close is not None:
                await close()
        finally:
            unbind(token)

    def end(self) -> Awaitable[None]:
        return self.aclose()

    def __del__(self) -> None:
        if not self._ended and not collecting():
            # Let go of the content with the meter bound: an async generator dropped here is handed
            # to its event loop's finaliser, which runs its ``aclose()`` in the context current now.
            token = bind(self._meter)
            try:
                self._iterator = self._content = None
            finally:
                unbind(token)


@overload
def metered_stream(content: AsyncIterable[T]) -> AsyncIterator[T]: ...


@overload
def metered_stream(content: Iterable[T]) -> Iterator[T]: ...


def metered_stream(content: Iterable[T] | AsyncIterable[T]) -> Iterator[T] | AsyncIterator[T]:
    """``content`` (a sync or async iterable, e.g. a ``StreamingResponse`` body) as a stream of
    the current request: every step, its close and its finaliser run with this request's meter
    bound, whatever context drives them, and the request closes it before it settles if the
    client went away first. So a body that calls ``record_usage`` (in a ``finally``, say) records
    on its own request, once. Outside a tracked request ``content`` is returned as it is.
    """
    meter = current_meter()
    if meter is None:
        return content  # type: ignore[return-value]
    if isinstance(content, AsyncIterable):
        return AsyncMeteredBody(content, meter)
    return MeteredBody(content, meter)


class MeteredIterable:
    """A response iterable whose steps run with the request's meter bound, and whose end
    (exhaustion, an error, or ``close()``, whichever comes first) settles the request once.

    ``failed()`` says whether the response is an error (status >= 400) when it ends. The inner
    iterable's ``close()`` is always called from ours (PEP 3333).
    """

    def __init__(self, inner: Iterable[bytes], meter: Meter, flow: Flow,
                 failed: Callable[[], bool] = lambda: False) -> None:
        self._inner = inner
        self._iterator: Iterator[bytes] | None = None
        self._meter = meter
        self._flow = flow
        self._failed = failed
        self._closed = False

    def _settle(self, error: bool) -> None:
        end_streams(self._meter)
        self._flow.settle(self._meter, error=error)

    def __iter__(self) -> MeteredIterable:
        return self

    def __next__(self) -> bytes:
        # Bound around each step, so a generator that calls ``record_usage`` adds to this request.
        token = bind(self._meter)
        try:
            if self._iterator is None:
                self._iterator = iter(self._inner)
            return next(self._iterator)
        except StopIteration:
            self._settle(self._failed())
            raise
        except BaseException:
            self._settle(True)
            raise
        finally:
            unbind(token)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        close = getattr(self._inner, "close", None)
        token = bind(self._meter)
        failed = True
        try:
            if close is not None:
                close()
            failed = False
        finally:
            unbind(token)
            if not self._meter.counted:  # usually settled already, when the iterable ran out
                self._settle(failed or self._failed())


class AsyncMeteredIterator:
    """Async streaming content whose steps run with the meter bound; settles (async) when it ends.

    ``close()`` is the fallback for a stream abandoned part-way: Django calls it from
    ``response.close()`` (in a worker thread under ASGI), where the sync store form is right.
    """

    def __init__(self, inner: AsyncIterable[bytes], meter: Meter, flow: Flow, failed: Callable[[], bool]) -> None:
        self._inner = inner
        self._iterator: AsyncIterator[bytes] | None = None
        self._meter = meter
        self._flow = flow
        self._failed = failed

    def __aiter__(self) -> AsyncMeteredIterator:
        return self

    async def __anext__(self) -> bytes:
        token = bind(self._meter)
        try:
            if self._iterator is None:
                self._iterator = aiter(self._inner)
            return await anext(self._iterator)
        except StopAsyncIteration:
            await aend_streams(self._meter)
            await self._flow.arun(self._flow.settlement(self._meter, error=self._failed()))
            raise
        except BaseException:
            await aend_streams(self._meter)
            await self._flow.arun(self._flow.settlement(self._meter, error=True))
            raise
        finally:
            unbind(token)

    def close(self) -> None:
        end_streams(self._meter)
        self._flow.settle(self._meter, error=self._failed())
