"""Runs plans on a sync redis-py client: a step is one command, one script call or one pipeline."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import redis.exceptions

from .clients import SyncClient
from .steps import DOWN, Batch, Call, Eval, Plan, Step, loaded, unavailable

T = TypeVar("T")


class Runner:
    """Drives plans on one thread-safe sync client, built on first use (a client given is used as is)."""

    def __init__(self, build: Callable[[], SyncClient] | None, client: SyncClient | None = None) -> None:
        self._build = build
        self._client = client
        self._lock = threading.Lock()

    def client(self) -> SyncClient:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    assert self._build is not None
                    self._client = self._build()
        return self._client

    def run(self, plan: Plan[T]) -> T:
        """The plan's result; connection trouble raised as :class:`StoreUnavailable`."""
        steps = loaded(plan)
        try:
            step = next(steps)
            client = self.client()
            while True:
                try:
                    reply = execute(client, step)
                except redis.exceptions.ResponseError as error:  # a reply: the plan may handle it
                    step = steps.throw(error)
                else:
                    step = steps.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        except DOWN as error:
            raise unavailable(error) from error

    def close(self) -> None:
        """Release the connections of a client built here (a client given stays open)."""
        if self._client is not None and self._build is not None:
            self._client.close()
            self._client = None


def execute(client: Any, step: Step) -> Any:
    if isinstance(step, Call):
        return getattr(client, step.method)(*step.args)
    if isinstance(step, Eval):
        return client.evalsha(step.script.sha, len(step.keys), *step.keys, *step.args)
    return pipeline(client, step).execute(raise_on_error=False)


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

