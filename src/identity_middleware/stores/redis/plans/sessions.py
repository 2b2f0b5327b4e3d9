"""Plans for session spend (``session=``): one counter per identity and session, read with GET and
added to with INCRBY (atomic: every process adds to the same total) and EXPIRE, pipelined."""

from __future__ import annotations

from ..steps import Batch, Call, Plan

__all__ = ["charge", "spent"]


def spent(key: str) -> Plan[int]:
    reply = yield Call("get", (key,))
    return int(reply) if reply else 0


def charge(key: str, cost: int, ttl: int) -> Plan[int]:
    replies = yield Batch([Call("incrby", (key, cost)), Call("expire", (key, ttl))])
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return int(replies[0])
