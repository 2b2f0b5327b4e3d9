"""Streams of an instrumented call: items pass through a tap; the call is metered from the final
usage item, read to the end when the consumer stops early (close, ``with``, or a broken loop).

A stream carries its request's meter from the moment the call returns and is held open by it
(:meth:`~identity_middleware.context.Meter.open`): whichever comes first of its own end (read
out, closed, its loop left and finalised) and its request's end (which ends it before settling,
see :mod:`identity_middleware.flow.streams`) meters it, once. An async loop left with ``break``
and never closed is the case the request's end is for: its async generator is finalised only
when the garbage collector and the event loop get to it.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import TYPE_CHECKING, Any

from ..context import Meter
from ..usage import record_call
from .calls import Finish, Options, Tap, meter_failure, record_response

if TYPE_CHECKING:
    import anyio

__all__ = ["AsyncMeteredStream", "MeteredStream", "metered_manager"]


def _settle(tap: Tap, meter: Meter, options: Options, model: Any, failed: bool) -> None:
    if tap.usage is not None:
        usage, key = tap.usage
        record_call(usage, prices=options.prices, key=key, meter=meter)
    elif failed:
        meter_failure(meter, model)


class _Tapped:
    """What both stream twins hold; every other attribute is the wrapped stream's."""

    asynchronous = False

    def __init__(self, stream: Any, tap: Tap, meter: Meter, options: Options, model: Any) -> None:
        self._stream, self._tap, self._meter, self._options, self._model = stream, tap, meter, options, model
        self._settled = False
        meter.open(self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _settle(self, failed: bool) -> None:
        _settle(self._tap, self._meter, self._options, self._model, failed)
        self._meter.finished(self)


class MeteredStream(_Tapped):
    """An SDK ``Stream`` seen through a tap."""

    _items: Iterator[Any] | None = None

    def __init__(self, stream: Any, tap: Tap, meter: Meter, options: Options, model: Any) -> None:
        # Its end may be reached from two threads at once (the request's end, a finaliser): the second waits.
        self._finishing = threading.RLock()
        super().__init__(stream, tap, meter, options, model)

    def __iter__(self) -> Iterator[Any]:
        # A generator, so a loop that breaks finalises it (and the rest is read for the usage).
        failed = False
        try:
            for item in self._stream:
                if not self._tap.observe(item):
                    yield item
        except Exception:
            failed = True
            raise
        finally:
            self._finish(failed)

    def __next__(self) -> Any:
        if self._items is None:
            self._items = iter(self)
        return next(self._items)

    def __enter__(self) -> MeteredStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._finish(False)
        self._stream.close()

    def end(self) -> None:
        self.close()

    def _finish(self, failed: bool) -> None:
        with self._finishing:
            if self._settled:
                return
            self._settled = True
            if self._tap.usage is None and not failed:
                try:
                    for item in self._stream:  # the consumer stopped early: the usage comes last
                        self._tap.observe(item)
                except Exception:
                    failed = True
            self._settle(failed)


class AsyncMeteredStream(_Tapped):
    """An SDK ``AsyncStream`` seen through a tap (close it, or use ``async with``, to stop early)."""

    asynchronous = True
    _items: AsyncIterator[Any] | None = None
    _finished: anyio.Event | None = None  # set once metered: a second closer waits for the first

    async def __aiter__(self) -> AsyncIterator[Any]:
        failed = False
        try:
            async for item in self._stream:
                if not self._tap.observe(item):
                    yield item
        except Exception:
            failed = True
            raise
        finally:
            await self._finish(failed)

    async def __anext__(self) -> Any:
        if self._items is None:
            self._items = self.__aiter__()
        return await self._items.__anext__()

    async def __aenter__(self) -> AsyncMeteredStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._finish(False)
        await self._stream.close()

    def end(self) -> Awaitable[None]:
        return self.close()

    async def _finish(self, failed: bool) -> None:
        if self._settled:
            if self._finished is not None:
                await self._finished.wait()
            return
        self._settled = True
        import anyio

        self._finished = anyio.Event()
        try:
            if self._tap.usage is None and not failed:
                try:
                    async for item in self._stream:
                        self._tap.observe(item)
                except Exception:
                    failed = True
            self._settle(failed)
        finally:
            self._finished.set()


class _Manager:
    """A helper stream manager (``messages.stream``, ``chat.completions.stream``, ...) whose stream
    is metered from its final response when the block ends (read to the end if left early), or
    when its request ends if the block was entered by hand and never left."""

    def __init__(self, manager: Any, final: str, meter: Meter, options: Options, model: Any) -> None:
        self._manager, self._final, self._meter, self._options, self._model = manager, final, meter, options, model
        self._stream: Any = None
        self._exited = False
        self.asynchronous = False

    def _record(self, response: Any) -> None:
        record_response(response, self._meter, self._options)

    def __enter__(self) -> Any:
        try:
            self._stream = self._manager.__enter__()
        except Exception:
            meter_failure(self._meter, self._model)
            raise
        self._meter.open(self)
        return self._stream

    def __exit__(self, *exc_info: Any) -> Any:
        if self._exited:  # its request's end left it already
            return None
        self._exited = True
        self._meter.finished(self)
        try:
            response = getattr(self._stream, self._final)()
        except Exception:
            meter_failure(self._meter, self._model)
        else:
            self._record(response)
        return self._manager.__exit__(*exc_info)

    async def __aenter__(self) -> Any:
        try:
            self._stream = await self._manager.__aenter__()
        except Exception:
            meter_failure(self._meter, self._model)
            raise
        self.asynchronous = True
        self._meter.open(self)
        return self._stream

    async def __aexit__(self, *exc_info: Any) -> Any:
        if self._exited:
            return None
        self._exited = True
        self._meter.finished(self)
        try:
            response = await getattr(self._stream, self._final)()
        except Exception:
            meter_failure(self._meter, self._model)
        else:
            self._record(response)
        return await self._manager.__aexit__(*exc_info)

    def end(self) -> Awaitable[None] | None:
        """Leave the block its request's code never left."""
        if self.asynchronous:
            return self.__aexit__(None, None, None)
        self.__exit__(None, None, None)
        return None


def metered_manager(final: str) -> Finish:
    """A ``finish`` for :func:`~.calls.wrap` of a method returning a stream manager whose stream
    has ``final`` (``get_final_message``, ...)."""

    def finish(manager: Any, meter: Meter, options: Options, tap: Tap | None, model: Any) -> Any:
        return _Manager(manager, final, meter, options, model)

    return finish
