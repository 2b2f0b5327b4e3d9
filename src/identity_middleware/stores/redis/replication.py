"""The WAIT guard: a write counts as written only once a replica holds it (``RedisOptions(wait=Wait())``).

Redis replicates asynchronously: a master acknowledges a write before any replica has it, and a
failover that promotes a replica loses what the old master had not yet sent. Settlements that
Redis acknowledged have left the write-behind buffer, so that usage would be gone.

With :class:`~.options.Wait`, :func:`replicated` sends ``WAIT <replicas> <timeout ms>`` after each
of a plan's script calls, in the same pipeline (one round trip; WAIT counts the replicas that
acknowledged everything its connection wrote, so it must follow the writes on their connection).
When fewer replicas than asked acknowledge within the timeout, the write's outcome counts as
unknown: the plan fails as an outage (``NOREPLICAS``, as a master with ``min-replicas-to-write``
would answer). A settlement batch so failed stays buffered and is sent again (its charge markers
make it a no-op where it landed), so its usage leaves the buffer only once a replica holds it; the
buffer still writes its other batches meanwhile (the master holds them, where a reader sees them);
an admission meets the outage policy.

A plain ``redis-py`` pipeline or the accelerated transports' fallback carries the batch (WAIT is
not multiplexed: it would hold up every call sharing the connection). A Cluster routes WAIT to a
node of its own choosing, not to the connection that wrote, so the guard is refused there.
"""

from __future__ import annotations

from typing import Any, TypeVar

from .options import Wait
from .steps import Batch, Call, Eval, Plan, Step
from .transport import Unreplicated

__all__ = ["replicated"]

T = TypeVar("T")


def replicated(plan: Plan[T], wait: Wait) -> Plan[T]:
    """``plan`` with ``WAIT`` pipelined after each step that runs a script: its replies as the plan
    expects them; :class:`.transport.Unreplicated` (an outage) when fewer than ``wait.replicas``
    acknowledged."""
    command = Call("wait", (wait.replicas, wait.timeout_ms))
    try:
        step: Step = next(plan)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    while True:
        try:
            if isinstance(step, Eval):
                reply, acknowledged = yield Batch([step, command])
                _check(acknowledged, wait)
            elif isinstance(step, Batch) and any(isinstance(each, Eval) for each in step.steps):
                *reply, acknowledged = yield Batch([*step.steps, command])
                _check(acknowledged, wait)
            else:  # reads
                reply = yield step
        except GeneratorExit:
            plan.close()
            raise
        except BaseException as error:  # a reply's error (or a cancellation): the plan's to handle
            try:
                step = plan.throw(error)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            continue
        try:
            step = plan.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


def _check(acknowledged: Any, wait: Wait) -> None:
    if int(acknowledged) < wait.replicas:
        raise Unreplicated(
            f"redis cannot serve this now: NOREPLICAS WAIT: {int(acknowledged)} of {wait.replicas} replicas "
            f"acknowledged the write within {wait.timeout_ms} ms; its outcome counts as unknown")
