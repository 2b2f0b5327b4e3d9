"""Commands in the Redis protocol (RESP), error replies as redis-py raises them, and where to connect."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.exceptions as errors

from ..scripts import ALL
from ..steps import Call, Eval

__all__ = ["LOAD_SCRIPTS", "Endpoint", "direct_command", "pack", "pack_eval", "reply_error"]

import hiredis

_pack_command: Any = hiredis.pack_command  # its stub takes a 1-tuple; it takes any tuple of arguments

# Error replies as redis-py raises them (its own table is private): NOSCRIPT told apart (to reload),
# and LOADING / auth refusals counted as outages, as they are through redis-py.
_ERRORS: dict[str, type[errors.RedisError]] = {
    "NOSCRIPT": errors.NoScriptError, "LOADING": errors.BusyLoadingError, "READONLY": errors.ReadOnlyError,
    "NOAUTH": errors.AuthenticationError, "WRONGPASS": errors.AuthenticationError,
    "NOPERM": errors.NoPermissionError, "OOM": errors.OutOfMemoryError,
}


def reply_error(message: str) -> errors.RedisError:
    code, _, rest = message.partition(" ")
    kind = _ERRORS.get(code)
    return kind(rest) if kind is not None else errors.ResponseError(message)


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
        args = _pack_command(tuple(step.args))  # "*N\r\n" then the arguments: the count is ours
    except TypeError:  # an argument it does not take (a bool)
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


def _load_scripts() -> bytes:
    return b"".join(pack(("SCRIPT", "LOAD", script.source)) for script in ALL)


#: Every script of the store loaded, in one write: what a connection sends when Redis answers
#: NOSCRIPT (a restart, ``SCRIPT FLUSH``, a failover), before it sends that command again.
LOAD_SCRIPTS = _load_scripts()
SCRIPT_COUNT = len(ALL)
