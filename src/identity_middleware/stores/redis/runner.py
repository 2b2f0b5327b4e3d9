"""Runs plans on a sync redis-py client: a step is one command, one script call or one pipeline."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import redis
import redis.exceptions

from .clients import SyncClient, decoded, decodes
from .resp import direct_command
from .steps import DOWN, Batch, Call, Eval, Plan, Step, loaded, unavailable
from .wire import SyncDirect

T = TypeVar("T")


class Runner:
    """Drives plans on one thread-safe sync client, built on first use (a client given is used as is).
    With ``direct``, script calls take a plain socket per thread (:mod:`.wire`), the rest the client."""

    def __init__(self, build: Callable[[], SyncClient] | None, client: SyncClient | None = None, *,
                 direct: bool = False) -> None:
        self._build = build
        self._client = client
        self._lock = threading.Lock()
        self._wants_direct = direct and client is None
        self._direct: SyncDirect | None = None
        self._decode = client is not None and not decodes(client)  # a client given that answers in bytes

    def client(self) -> SyncClient:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    assert self._build is not None
                    client = self._build()
                    if self._wants_direct and isinstance(client, redis.Redis):
                        self._direct = SyncDirect(client.connection_pool)
                    self._client = client
        return self._client

    def run(self, plan: Plan[T]) -> T:
        """The plan's result; connection trouble raised as :class:`StoreUnavailable`."""
        steps = loaded(plan)
        try:
            step = next(steps)
            client = self.client()
            direct = self._direct
            while True:
                try:
                    reply = execute(client, step) if direct is None else direct_execute(direct, client, step)
                except redis.exceptions.ResponseError as error:  # a reply: the plan may handle it
                    step = steps.throw(error)
                else:
                    step = steps.send(decoded(reply) if self._decode else reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        except DOWN as error:
            raise unavailable(error) from error

    def close(self) -> None:
        """Release the connections of a client built here (a client given stays open)."""
        if self._direct is not None:
            self._direct.close()
        if self._client is not None and self._build is not None:
            self._client.close()
            self._client = None


def execute(client: Any, step: Step) -> Any:
    if isinstance(step, Call):
        return getattr(client, step.method)(*step.args)
    if isinstance(step, Eval):
        return client.evalsha(step.script.sha, len(step.keys), *step.keys, *step.args)
    return pipeline(client, step).execute(raise_on_error=False)


def direct_execute(direct: SyncDirect, client: Any, step: Step) -> Any:
    if not isinstance(step, Batch):
        packed = direct_command(step)
        if packed is not None:
            return direct.call(packed)
    else:
        commands = [direct_command(each) for each in step.steps]
        if None not in commands:
            return direct.call_many(commands)  # type: ignore[arg-type]
    return execute(client, step)


def pipeline(client: Any, batch: Batch) -> Any:
    """A redis-py pipeline (sync or async) holding the batch's commands, not yet executed."""
    pipe = client.pipeline(transaction=False)
    for step in batch.steps:
        queue(pipe, step)
    return pipe


def queue(pipe: Any, step: Call | Eval) -> None:
    if isinstance(step, Call):
        getattr(pipe, step.method)(*step.args)
    else:
        # execute_command, not evalsha: cluster pipelines refuse the named method but route
        # EVALSHA by its keys when given as a raw command.
        pipe.execute_command("EVALSHA", step.script.sha, len(step.keys), *step.keys, *step.args)

