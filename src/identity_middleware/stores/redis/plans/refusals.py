"""The refusal log on Redis: an admission plan that logs its refusal, and the plan that reads the log.

Key (``P`` the store's prefix)::

    P:refusals   LIST   the newest refusals first, each a JSON :class:`~...refusals.Refusal`; trimmed to
                        REFUSAL_LOG_SIZE on every push, expires REFUSAL_TTL after the newest push
                        (a global key in its own Cluster slot, like ``P:identities``)

The entry is pushed by the admission's own plan, in the round trip after the admission script
answered with the block: the store records the refusal itself, whichever shell asked.
"""

from __future__ import annotations

from datetime import datetime

from ....core.admission import Admission, AdmissionRequest
from ...refusals import REFUSAL_LOG_SIZE, REFUSAL_TTL, Refusal, refusal_of
from ..steps import Batch, Call, Plan
from . import codec

__all__ = ["logging_refusal", "recent_refusals", "refusal_key"]


def refusal_key(prefix: str) -> str:
    return f"{prefix}:refusals"


def logging_refusal(admitted: Admission, key: str, request: AdmissionRequest) -> Plan[Admission]:
    """``admitted``, the admit plan's answer, its refusal pushed onto the log first when it refused
    the request on a budget. The admit plan's last step, ``yield from`` only on a refusal: an
    admitted request's plan has no generator of this one's (one object fewer per admission)."""
    block, identity = admitted.blocked, admitted.identity
    if block is not None and identity is not None:
        entry = refusal_of(block, identity.external_id, identity.id, request.estimate, codec.now_or(request.now))
        yield Batch([Call("lpush", (key, entry.encode())), Call("ltrim", (key, 0, REFUSAL_LOG_SIZE - 1)),
                     Call("expire", (key, int(REFUSAL_TTL.total_seconds())))])
    return admitted


def recent_refusals(key: str, limit: int, now: datetime) -> Plan[list[Refusal]]:
    """At most ``limit`` logged refusals younger than REFUSAL_TTL, newest first."""
    oldest = now - REFUSAL_TTL
    entries = [Refusal.decode(text) for text in (yield Call("lrange", (key, 0, limit - 1)))]
    return [entry for entry in entries if entry.at >= oldest]
