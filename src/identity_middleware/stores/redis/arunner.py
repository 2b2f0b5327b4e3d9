"""Runs plans on an event loop's client: script calls multiplexed where the loop has that, else redis-py."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.exceptions

from ...core.errors import StoreUnavailable
from .loops import LoopClient
from .mux import pack_eval
from .runner import pipeline
from .steps import DOWN, Batch, Call, Eval, Plan, Step, loaded, unavailable

T = TypeVar("T")


async def arun(state: LoopClient, plan: Plan[T]) -> T:
    """The plan's result; connection trouble raised as :class:`StoreUnavailable` (the twin of
    :meth:`.runner.Runner.run`; :class:`.steps.Landed` passes through for the caller to judge)."""
    steps = loaded(plan)
    try:
        step = next(steps)
        while True:
            try:
                reply = await aexecute(state, step)
            except redis.exceptions.ResponseError as error:  # a reply: the plan may handle it
                step = steps.throw(error)
            else:
                step = steps.send(reply)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    except DOWN as error:
        raise unavailable(error) from error


async def within(seconds: float, awaitable: Awaitable[T]) -> T:
    """``awaitable``'s result, or :class:`StoreUnavailable` once ``seconds`` have passed (it is then
    cancelled; a multiplexed call's late reply is read and dropped, a redis-py connection closed)."""
    try:
        if sys.version_info >= (3, 11):
            async with asyncio.timeout(seconds):
                return await awaitable
        return await asyncio.wait_for(awaitable, seconds)
    except asyncio.TimeoutError:
        raise StoreUnavailable(f"redis: no reply within {seconds} s") from None


async def aexecute(state: LoopClient, step: Step) -> Any:
    direct = state.direct
    if direct is not None:
        if isinstance(step, Eval):
            return await direct.call(pack_eval(step))
        if isinstance(step, Batch) and all(isinstance(each, Eval) for each in step.steps):
            return await direct.call_many([pack_eval(each) for each in step.steps])  # type: ignore[arg-type]
    if state.limiter is None:
        return await _aexecute(state.client, step)
    async with state.limiter:
        return await _aexecute(state.client, step)


async def _aexecute(client: Any, step: Step) -> Any:
    if isinstance(step, Call):
        return await getattr(client, step.method)(*step.args)
    if isinstance(step, Eval):
        return await client.evalsha(step.script.sha, len(step.keys), *step.keys, *step.args)
    return await pipeline(client, step).execute(raise_on_error=False)
