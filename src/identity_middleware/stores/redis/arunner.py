"""Runs plans on an event loop's client: script calls multiplexed where the loop has that, else redis-py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.exceptions

from ...core.errors import StoreUnavailable
from .clients import decoded
from .loops import LoopClient
from .resp import direct_command
from .runner import pipeline
from .steps import DOWN, Batch, Call, Eval, Landed, Plan, Step, loaded, unavailable

T = TypeVar("T")


async def arun(state: LoopClient, plan: Plan[T], timeout: float | None = None, *, landed_cancels: bool = False) -> T:
    """The plan's result; connection trouble raised as :class:`StoreUnavailable` (the twin of
    :meth:`.runner.Runner.run`). :class:`.steps.Landed` passes through for the caller to judge
    (a flush), or with ``landed_cancels`` is the cancellation it is (a read, an admission).
    With ``timeout``, the whole plan must be answered within that many seconds."""
    if timeout is not None and state.direct is None:
        return await within(timeout, arun(state, plan, landed_cancels=landed_cancels))
    # On the multiplexed connection the deadline rides with each call: no timeout context per call.
    deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
    steps = loaded(plan)
    try:
        step = next(steps)
        while True:
            try:
                reply = await aexecute(state, step, deadline)
            except redis.exceptions.ResponseError as error:  # a reply: the plan may handle it
                step = steps.throw(error)
            else:
                step = steps.send(reply)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    except DOWN as error:
        raise unavailable(error) from error
    except Landed:  # the batch was answered, but the caller was cancelled meanwhile
        if landed_cancels:
            raise asyncio.CancelledError from None
        raise


async def within(seconds: float, awaitable: Awaitable[T]) -> T:
    """``awaitable``'s result, or :class:`StoreUnavailable` once ``seconds`` have passed (it is then
    cancelled; a multiplexed call's late reply is read and dropped, a redis-py connection closed)."""
    try:
        async with asyncio.timeout(seconds):
            return await awaitable
    except TimeoutError:
        raise StoreUnavailable(f"redis: no reply within {seconds} s") from None


def aexecute(state: LoopClient, step: Step, deadline: float | None = None) -> Awaitable[Any]:
    """The step's reply, to await: the multiplexed connection's call where the step can take it
    (no coroutine of ours in between: every admission's path), else redis-py's."""
    direct = state.direct
    if direct is not None:
        if not isinstance(step, Batch):
            packed = direct_command(step)
            if packed is not None:
                return direct.call(packed, deadline)
        else:
            commands = [direct_command(each) for each in step.steps]
            if None not in commands:
                return direct.call_many(commands, deadline)  # type: ignore[arg-type]
    return _through_redis_py(state, step, deadline)


async def _through_redis_py(state: LoopClient, step: Step, deadline: float | None) -> Any:
    if state.direct is not None and deadline is not None:
        # A command that cannot go multiplexed (a script load) is bounded the same.
        left = max(0.0, deadline - asyncio.get_running_loop().time())
        try:
            return await asyncio.wait_for(_through_redis_py(state, step, None), left)
        except TimeoutError:
            raise redis.exceptions.TimeoutError("no reply from redis in time") from None
    if state.limiter is None:
        reply = await _aexecute(state.client, step)
    else:
        async with state.limiter:
            reply = await _aexecute(state.client, step)
    return decoded(reply) if state.decode else reply


async def _aexecute(client: Any, step: Step) -> Any:
    if isinstance(step, Call):
        return await getattr(client, step.method)(*step.args)
    if isinstance(step, Eval):
        return await client.evalsha(step.script.sha, len(step.keys), *step.keys, *step.args)
    return await pipeline(client, step).execute(raise_on_error=False)
