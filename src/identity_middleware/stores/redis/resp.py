"""Commands in the Redis protocol (RESP), for the multiplexed connection (:mod:`.mux`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .steps import Call, Eval

__all__ = ["Endpoint", "direct_command", "pack", "pack_eval"]

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


# Commands whose raw reply is what the plans take (every HGETALL is read through codec.as_map, which
# takes RESP's flat list too), so the direct paths may send them as they are, not through redis-py.
_RAW = frozenset({"hgetall"})


def direct_command(step: Call | Eval) -> bytes | None:
    """The step packed for a direct path, or ``None`` when it must take redis-py's (its methods
    rewrite arguments and replies)."""
    if isinstance(step, Eval):
        return pack_eval(step)
    if step.method in _RAW:
        return pack((step.method.upper(), *step.args))
    return None


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


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to connect: the parameters of redis-py's pool for the same URL."""

    path: str | None  # a unix socket, else TCP host and port
    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    timeout: float | None
    connect_timeout: float | None

    @classmethod
    def of(cls, pool: Any) -> Endpoint:
        kwargs = pool.connection_kwargs
        return cls(kwargs.get("path"), kwargs.get("host", "localhost"), int(kwargs.get("port", 6379)),
                   int(kwargs.get("db", 0) or 0), kwargs.get("username"), kwargs.get("password"),
                   kwargs.get("socket_timeout"), kwargs.get("socket_connect_timeout"))

    def hello(self) -> list[bytes]:
        """What a new connection sends first: AUTH and SELECT, as needed."""
        commands = []
        if self.password is not None:
            commands.append(pack(("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)))
        if self.db:
            commands.append(pack(("SELECT", self.db)))
        return commands
