"""Response bodies that settle their request when they end: sync (WSGI, Django) and async (Django)."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator

from ..context import Meter, bind, unbind
from .steps import Flow

__all__ = ["AsyncMeteredIterator", "MeteredIterable"]


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
            await self._flow.arun(self._flow.settlement(self._meter, error=self._failed()))
            raise
        except BaseException:
            await self._flow.arun(self._flow.settlement(self._meter, error=True))
            raise
        finally:
            unbind(token)

    def close(self) -> None:
        self._flow.settle(self._meter, error=self._failed())
