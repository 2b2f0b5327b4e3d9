"""The plan protocol: the steps plans yield, and the one place a script call survives NOSCRIPT.

A plan is a generator: it yields a :class:`Step`, a runner executes it on some client and sends the
reply back, or throws the reply's error (a ``ResponseError``) in at the ``yield``. Connection
trouble never reaches a plan: the runner turns it into :class:`StoreUnavailable`. Runners drive
``loaded(plan)``, never the plan itself, so every path (sync, async, pipelined, multiplexed, Cluster)
reloads a script Redis forgot (a restart, ``SCRIPT FLUSH``, a failover) the same way.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.exceptions

from ...core.errors import StoreUnavailable
from .scripts import Script

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call:
    """One command: a redis-py client method and its arguments."""

    method: str
    args: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class Eval:
    """One Lua script call by SHA."""

    script: Script
    keys: Sequence[str]
    args: Sequence[str | int]
    packed_keys: bytes = b""  # the keys already in the Redis protocol (cached with them), or b""


@dataclass(frozen=True, slots=True)
class Batch:
    """Several commands pipelined (not a transaction) in one round trip; the reply is the list of
    their replies, an error standing in the place of the command that failed."""

    steps: Sequence[Call | Eval]


Step = Call | Eval | Batch
Plan = Generator[Step, Any, T]

# What means "Redis is not there" (as opposed to a reply Redis will give again).
DOWN: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.ClusterDownError,
    redis.exceptions.MaxConnectionsError, OSError)


# Error replies that refuse this client, not the plan's command (a password missing or wrong, a
# database number the server does not have): the store cannot work until it is reconfigured. They
# reach a request as an outage (its policy, never a 500); at startup they are said in words.
REFUSALS = ("DB index is out of range", "invalid DB index", "NOAUTH", "WRONGPASS", "unauthenticated",
            "invalid password", "invalid username-password", "HELLO must be called", "without any password")


def refuses_client(error: BaseException) -> bool:
    text = str(error)
    return any(words in text for words in REFUSALS)


def unavailable(error: BaseException) -> StoreUnavailable:
    return StoreUnavailable(f"redis: {error}")


class Landed(Exception):
    """A cancelled batch whose commands were all applied: its caller is cancelled all the same, but
    must not write it again (see :meth:`.mux.Direct.call_many`)."""


def loaded(plan: Plan[T]) -> Plan[T]:
    """``plan``, with each script call that meets NOSCRIPT retried once after loading its script.

    ``SCRIPT LOAD`` goes through the client's ``script_load``, which on a Cluster loads every
    primary. Errors in a batch's replies are raised here, the first one, after the retry.
    """
    try:
        step = next(plan)
        while True:
            try:
                if isinstance(step, Batch):
                    reply = yield from _batch(step)
                else:  # inline, not a sub-generator: this is every admission's path
                    try:
                        reply = yield step
                    except redis.exceptions.NoScriptError:
                        if not isinstance(step, Eval):
                            raise
                        yield Call("script_load", (step.script.source,))
                        reply = yield step
            except redis.exceptions.ResponseError as error:
                if refuses_client(error):  # an outage to the caller: its runner says so
                    raise redis.exceptions.ConnectionError(f"redis refused this client: {error}") from error
                step = plan.throw(error)
            else:
                step = plan.send(reply)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def _batch(batch: Batch) -> Generator[Step, Any, list[Any]]:
    replies = list((yield batch))
    missing = [index for index, reply in enumerate(replies) if isinstance(reply, redis.exceptions.NoScriptError)]
    if missing:
        again = [batch.steps[index] for index in missing]
        for script in {each.script: None for each in again if isinstance(each, Eval)}:
            yield Call("script_load", (script.source,))
        for index, reply in zip(missing, (yield Batch(again)), strict=True):
            replies[index] = reply
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies
