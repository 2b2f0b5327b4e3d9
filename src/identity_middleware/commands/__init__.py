"""The operators' commands, defined once: argparse subcommands and their runs against a ``Store``.

Two faces use them with the same grammar, output and exit codes: the ``identity-middleware``
console script (``cli.py``, which adds ``--store-url`` and ``serve``) and Django's
``manage.py identities`` (which takes the middleware's store). The commands on identities and their
per-identity budgets are in :mod:`.identities`, those on scoped budgets (``budgets ...``) in
:mod:`.budgets`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pydantic import ValidationError

from ..core.budgets import BudgetExists, BudgetNotFound, InvalidBudget
from ..core.errors import IdentityExists, IdentityNotFound, StoreUnavailable
from ..core.validation import InvalidIdentity
from ..stores import Store
from .budgets import add_budget_commands
from .identities import add_identity_commands
from .output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Command, CommandFailed, Output, Subcommands

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "Command", "CommandFailed", "Output", "add_command",
           "add_commands", "execute"]


def _first(error: BaseException) -> str:
    return str(error.args[0]) if error.args else ""


# -- running -------------------------------------------------------------------------------------------
def execute(store: Store, args: argparse.Namespace, out: Output) -> None:
    """Run the command ``args`` was parsed into; every failure is raised as :class:`CommandFailed`."""
    func: Command = args.func
    try:
        func(store, args, out)
    except IdentityNotFound as error:
        raise CommandFailed(f"identity {_first(error)!r} not found") from None
    except IdentityExists as error:
        raise CommandFailed(f"identity {_first(error)!r} already exists") from None
    except InvalidIdentity as error:
        raise CommandFailed(f"invalid {error.field}: {error.message}", EXIT_USAGE) from None
    except BudgetNotFound as error:
        raise CommandFailed(f"budget {_first(error)!r} not found") from None
    except BudgetExists as error:
        raise CommandFailed(f"a budget for this scope, target and period exists already: {_first(error)}") from None
    except (InvalidBudget, ValidationError) as error:
        raise CommandFailed(f"invalid budget: {_invalid(error)}", EXIT_USAGE) from None
    except (StoreUnavailable, ConnectionError, TimeoutError) as error:
        raise CommandFailed(f"store unavailable: {error}") from None


def _invalid(error: InvalidBudget | ValidationError) -> str:
    if isinstance(error, InvalidBudget):
        return error.message
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


# -- parsing -------------------------------------------------------------------------------------------
def add_command(on: Subcommands, name: str, func: Command, help_text: str,
                parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    """One subcommand ``name`` under ``on`` that runs ``func``; ``parents`` lend it shared options."""
    sub = on.add_parser(name, parents=list(parents), help=help_text, description=help_text)
    sub.set_defaults(func=func)
    return sub


def add_commands(parser: argparse.ArgumentParser, parents: Sequence[argparse.ArgumentParser] = ()) -> Subcommands:
    """Add every operation to ``parser`` as subcommands; returns them, so a face can add its own."""
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Command, help_text: str, on: Subcommands = commands) -> argparse.ArgumentParser:
        return add_command(on, name, func, help_text, parents)

    add_identity_commands(commands, command)
    add_budget_commands(commands, command)
    return commands
