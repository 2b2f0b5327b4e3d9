"""Commands in the Redis protocol (RESP), for the multiplexed connection (:mod:`.mux`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .steps import Eval

__all__ = ["pack", "pack_eval"]

hiredis: Any
try:
    import hiredis
except ImportError:
    hiredis = None


def pack(args: Sequence[str | int]) -> bytes:
    """One command in the Redis protocol (what redis-py's ``pack_command`` makes, without its
    per-argument encoder calls): strings as UTF-8, integers in decimal."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else b"%d" % arg
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def pack_eval(step: Eval) -> bytes:
    """``EVALSHA`` of a script step, its keys taken pre-packed when the plan has them (the
    arguments are packed by hiredis in C where it is installed: the multiplexed path requires it)."""
    if not step.packed_keys:
        return pack(("EVALSHA", step.script.sha, len(step.keys), *step.keys, *step.args))
    nkeys = b"%d" % len(step.keys)
    head = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$%d\r\n%s\r\n" % (
        3 + len(step.keys) + len(step.args), step.script.sha.encode(), len(nkeys), nkeys)
    try:
        args = hiredis.pack_command(tuple(step.args))  # "*N\r\n" then the arguments: the count is ours
    except (AttributeError, TypeError):  # no hiredis, or an argument it does not take (a bool)
        args = pack(step.args)
    return b"".join([head, step.packed_keys, args[args.index(b"\n") + 1:]])
