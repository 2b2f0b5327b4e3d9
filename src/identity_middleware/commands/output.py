"""What every command shares: exit codes, the failure it raises, and how it writes (lines, tables, JSON)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeAlias

from ..stores import Store

EXIT_OK = 0
EXIT_FAILED = 1  # not found, already exists, store unavailable
EXIT_USAGE = 2  # invalid input (argparse uses 2 as well)


class Output(Protocol):
    """Where a command writes: a text stream, or Django's ``OutputWrapper`` (which ends lines itself)."""

    def write(self, text: str, /) -> object: ...


class CommandFailed(Exception):
    """A command could not do what it was asked; ``code`` is the exit code (1 failed, 2 invalid input)."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


Command = Callable[[Store, argparse.Namespace, Output], None]
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class Define(Protocol):
    """Adds one subcommand (under the top level, or ``on`` a group) with the face's shared options."""

    def __call__(self, name: str, func: Command, help_text: str, on: Subcommands = ..., /) -> argparse.ArgumentParser:
        ...


def say(out: Output, text: str) -> None:
    # One write per line, newline included: Django's OutputWrapper adds "\n" only to text lacking one.
    out.write(text + "\n")


def table(rows: Sequence[Sequence[str]], numeric: set[int], out: Output) -> None:
    """An aligned text table; the first row is the header, ``numeric`` columns align right."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        cells = [cell.rjust(width) if index in numeric else cell.ljust(width)
                 for index, (cell, width) in enumerate(zip(row, widths, strict=True))]
        say(out, "  ".join(cells).rstrip())


def print_json(data: Any, out: Output) -> None:
    say(out, json.dumps(data, indent=2))


def pairs(items: Sequence[str] | None, option: str) -> dict[str, str]:
    """``NAME=VALUE`` option values (``--metadata team=ml``) as a dict; a usage error otherwise."""
    found: dict[str, str] = {}
    for item in items or ():
        name, equals, value = item.partition("=")
        if not equals or not name:
            raise CommandFailed(f"{option} takes KEY=VALUE, got {item!r}", EXIT_USAGE)
        found[name] = value
    return found
