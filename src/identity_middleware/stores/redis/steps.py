"""The plan protocol: the steps plans yield (a command, a script call, a pipelined batch).

A plan is a generator: it yields a :class:`Step`, a runner (:mod:`.runner`) has a transport
(:mod:`.transport`) execute it and sends the reply back, or throws the reply's error (a
``ResponseError``) in at the ``yield``.

Steps are values nothing changes once made, yet not frozen dataclasses: a frozen one's ``__init__``
sets each field through ``object.__setattr__``, which made an :class:`Eval` (one per admission and
per settled charge) cost 380 ns instead of 80.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .scripts import Script

T = TypeVar("T")


@dataclass(slots=True)
class Call:
    """One command: a redis-py client method and its arguments."""

    method: str
    args: tuple[Any, ...] = ()


@dataclass(slots=True)
class Eval:
    """One Lua script call by SHA."""

    script: Script
    keys: Sequence[str]
    args: Sequence[str | int]
    packed_keys: bytes = b""  # the keys already in the Redis protocol (cached with them), or b""


@dataclass(slots=True)
class Batch:
    """Several commands pipelined (not a transaction) in one round trip; the reply is the list of
    their replies, an error standing in the place of the command that failed."""

    steps: Sequence[Call | Eval]


Step = Call | Eval | Batch
Plan = Generator[Step, Any, T]
