"""The ``identity-middleware`` command line: identities, budgets and usage over a store URL, and ``serve``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from pydantic import ValidationError

from .core.errors import IdentityExists, IdentityNotFound, StoreUnavailable
from .core.models import Budget, BudgetStatus, Identity, IdentityInput
from .core.money import format_usd, to_decimal
from .core.periods import Period
from .core.validation import InvalidIdentity
from .stores import Store, store_from_url
from .stores.base import MAX_PAGE_SIZE

__all__ = ["main"]

STORE_URL_ENV = "IDENTITY_MIDDLEWARE_STORE_URL"
TOKEN_ENV = "IDENTITY_MIDDLEWARE_ADMIN_TOKEN"

EXIT_OK = 0
EXIT_FAILED = 1  # not found, already exists, store unavailable
EXIT_USAGE = 2  # invalid input (argparse uses 2 as well)


class CommandError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def _table(rows: Sequence[Sequence[str]], numeric: set[int], out: TextIO) -> None:
    """An aligned text table; the first row is the header, ``numeric`` columns align right."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        cells = [cell.rjust(width) if index in numeric else cell.ljust(width)
                 for index, (cell, width) in enumerate(zip(row, widths, strict=True))]
        print("  ".join(cells).rstrip(), file=out)


def _print_json(data: Any, out: TextIO) -> None:
    print(json.dumps(data, indent=2), file=out)


def _all_identities(store: Store, search: str | None, tags: list[str] | None) -> list[Identity]:
    identities: list[Identity] = []
    cursor: str | None = None
    while True:
        page = store.list(limit=MAX_PAGE_SIZE, starting_after=cursor, search=search, tags=tags,
                          include_metrics=True)
        identities += page.data
        if not page.has_more or not page.data:
            return identities
        cursor = page.data[-1].id


# -- commands ------------------------------------------------------------------------------------------
def cmd_list(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    identities = _all_identities(store, args.search, args.tag or None)
    if args.json:
        _print_json([identity.to_json() for identity in identities], out)
        return EXIT_OK
    if not identities:
        print("no identities", file=out)
        return EXIT_OK
    rows = [["EXTERNAL_ID", "DISPLAY_NAME", "EMAIL", "TAGS", "REQUESTS", "TOKENS", "COST_USD", "ERROR_RATE", "_ID"]]
    for identity in identities:
        metrics = identity.metrics
        assert metrics is not None  # asked for with include_metrics
        rows.append([identity.external_id, identity.display_name or "", identity.email or "",
                     ",".join(identity.tags), str(metrics.total_requests), str(metrics.total_tokens),
                     format_usd(metrics.total_cost), f"{metrics.error_rate:.1%}", identity.id])
    _table(rows, {4, 5, 6, 7}, out)
    return EXIT_OK


def cmd_show(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    identity = store.retrieve(args.id)
    record = identity.model_copy(update={"metrics": store.metrics(identity.id),
                                         "budgets": store.budget_status(identity.id)})
    _print_json(record.to_json(), out)
    return EXIT_OK


def _metadata(pairs: Sequence[str]) -> dict[str, str]:
    metadata: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CommandError(f"--metadata takes KEY=VALUE, got {pair!r}", EXIT_USAGE)
        metadata[key] = value
    return metadata


def cmd_create(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    fields: dict[str, Any] = {"id": args.id}
    for name in ("display_name", "email", "avatar_url"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    if args.tag:
        fields["tags"] = args.tag
    if args.metadata:
        fields["metadata"] = _metadata(args.metadata)
    identity = store.create(IdentityInput.parse(fields))
    _print_json(identity.to_json(), out)
    return EXIT_OK


def cmd_delete(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    identity = store.retrieve(args.id)
    store.delete(identity.id)
    print(f"deleted {identity.external_id}", file=out)
    return EXIT_OK


def _status_line(identity_id: str, status: BudgetStatus) -> str:
    return (f"{identity_id} {status.period.value}: spent {format_usd(status.spent)} of "
            f"{format_usd(status.amount)} USD ({status.percent:g}%), resets {status.resets_at.isoformat()}")


def _budget_of(store: Store, identity_id: str, period: Period) -> BudgetStatus:
    for status in store.budget_status(identity_id):
        if status.period is period:
            return status
    raise CommandError(f"identity {identity_id!r} has no {period.value} budget")


def cmd_budget_set(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    try:
        budget = Budget(period=Period(args.period), amount=args.amount)
    except ValidationError as error:
        message = error.errors()[0]["msg"].removeprefix("Value error, ")
        raise CommandError(f"invalid amount {args.amount!r}: {message}", EXIT_USAGE) from None
    identity = store.retrieve(args.id)
    store.set_budget(identity.id, budget)
    print(_status_line(args.id, _budget_of(store, identity.id, budget.period)), file=out)
    return EXIT_OK


def cmd_budget_remove(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    period = Period(args.period)
    _budget_of(store, args.id, period)
    store.remove_budget(args.id, period)
    print(f"removed the {period.value} budget of {args.id}", file=out)
    return EXIT_OK


def cmd_budget_reset(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    period = Period(args.period)
    _budget_of(store, args.id, period)
    store.reset_budget(args.id, period)
    print(_status_line(args.id, _budget_of(store, args.id, period)), file=out)
    return EXIT_OK


def cmd_budget_status(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    statuses = store.budget_status(args.id)
    if args.json:
        _print_json([status.model_dump(mode="json") for status in statuses], out)
        return EXIT_OK
    if not statuses:
        print(f"{args.id} has no budgets", file=out)
        return EXIT_OK
    rows = [["PERIOD", "AMOUNT", "SPENT", "RESERVED", "REMAINING", "PERCENT", "RESETS_AT"]]
    rows += [[status.period.value, format_usd(status.amount), format_usd(status.spent), format_usd(status.reserved),
              format_usd(status.remaining), f"{status.percent:g}%", status.resets_at.isoformat()]
             for status in statuses]
    _table(rows, {1, 2, 3, 4, 5}, out)
    return EXIT_OK


def cmd_record(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    try:
        cost = to_decimal(args.cost)
    except ValueError as error:
        raise CommandError(f"invalid --cost: {error}", EXIT_USAGE) from None
    if cost < 0 or args.input_tokens < 0 or args.output_tokens < 0:
        raise CommandError("--cost and token counts must not be negative", EXIT_USAGE)
    store.record(args.id, cost=cost, input_tokens=args.input_tokens, output_tokens=args.output_tokens,
                 model=args.model, error=args.error)
    print(f"recorded {format_usd(cost)} USD, {args.input_tokens}+{args.output_tokens} tokens for {args.id}",
          file=out)
    return EXIT_OK


def cmd_serve(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    try:
        import uvicorn
    except ImportError:
        raise CommandError("serve needs uvicorn: pip install 'identity-middleware[fastapi]'") from None
    from .admin import create_admin_app

    uvicorn.run(create_admin_app(store, token=args.resolved_token), host=args.host, port=args.port,
                log_level=args.log_level)
    return EXIT_OK


# -- parsing -------------------------------------------------------------------------------------------
Command = Callable[[Store, argparse.Namespace, TextIO], int]


def build_parser() -> argparse.ArgumentParser:
    store_option = argparse.ArgumentParser(add_help=False)
    store_option.add_argument("--store-url", default=argparse.SUPPRESS,
                              help=f"memory:// or a Redis URL (default: ${STORE_URL_ENV} or memory://)")
    parser = argparse.ArgumentParser(
        prog="identity-middleware", parents=[store_option],
        description="Identities, budgets and 30-day usage metrics in an identity-middleware store.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    periods = [period.value for period in Period]

    def command(name: str, func: Command, help_text: str, on: Any = commands) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = on.add_parser(name, parents=[store_option], help=help_text,
                                                     description=help_text)
        sub.set_defaults(func=func)
        return sub

    listing = command("list", cmd_list, "list identities with their 30-day metrics")
    listing.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    listing.add_argument("--search", help="case-insensitive substring of external id, display name or email")
    listing.add_argument("--tag", action="append", help="keep identities with any of these tags (repeatable)")

    command("show", cmd_show, "show one identity with its metrics and budgets (JSON)").add_argument(
        "id", help="external id or _id")

    create = command("create", cmd_create, "create an identity")
    create.add_argument("id", help="the external id")
    create.add_argument("--display-name")
    create.add_argument("--email")
    create.add_argument("--avatar-url")
    create.add_argument("--tag", action="append", help="repeatable")
    create.add_argument("--metadata", action="append", metavar="KEY=VALUE", help="repeatable")

    command("delete", cmd_delete, "delete an identity, its budgets and counters").add_argument("id")

    budget = commands.add_parser("budget", help="set, remove, reset or show budgets")
    budgets = budget.add_subparsers(dest="budget_command", required=True, metavar="ACTION")
    budget_set = command("set", cmd_budget_set, "set a budget: budget set ID PERIOD AMOUNT", budgets)
    budget_set.add_argument("id")
    budget_set.add_argument("period", choices=periods)
    budget_set.add_argument("amount", help="USD, e.g. 10.00")
    for name, func, text in [("remove", cmd_budget_remove, "remove a budget"),
                             ("reset", cmd_budget_reset, "zero the current period's spend")]:
        sub = command(name, func, text, budgets)
        sub.add_argument("id")
        sub.add_argument("period", choices=periods)
    status = command("status", cmd_budget_status, "live status of every budget", budgets)
    status.add_argument("id")
    status.add_argument("--json", action="store_true")

    record = command("record", cmd_record, "record one request's usage")
    record.add_argument("id")
    record.add_argument("--cost", default="0", help="USD, e.g. 0.0125")
    record.add_argument("--input-tokens", type=int, default=0)
    record.add_argument("--output-tokens", type=int, default=0)
    record.add_argument("--model")
    record.add_argument("--error", action="store_true", help="count the request as an error")

    serve = command("serve", cmd_serve, "serve the admin REST API with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--token", help=f"bearer token (default: ${TOKEN_ENV})")
    serve.add_argument("--no-auth", action="store_true", help="serve without a token (trusted networks only)")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 1 not found/exists/store down, 2 invalid input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    out, err = sys.stdout, sys.stderr
    if args.func is cmd_serve:
        args.resolved_token = args.token or os.environ.get(TOKEN_ENV) or None
        if args.resolved_token is None and not args.no_auth:
            print(f"error: refusing to serve without a token: pass --token, set ${TOKEN_ENV}, or --no-auth",
                  file=err)
            return EXIT_USAGE
    url = getattr(args, "store_url", None) or os.environ.get(STORE_URL_ENV) or "memory://"
    try:
        store = store_from_url(url)
    except (ValueError, ImportError) as error:
        print(f"error: cannot open store {url!r}: {error}", file=err)
        return EXIT_USAGE
    try:
        return int(args.func(store, args, out))
    except CommandError as error:
        print(f"error: {error}", file=err)
        return error.code
    except IdentityNotFound as error:
        print(f"error: identity {error.args[0] if error.args else ''!r} not found", file=err)
        return EXIT_FAILED
    except IdentityExists as error:
        print(f"error: identity {error.args[0] if error.args else ''!r} already exists", file=err)
        return EXIT_FAILED
    except InvalidIdentity as error:
        print(f"error: invalid {error.field}: {error.message}", file=err)
        return EXIT_USAGE
    except (StoreUnavailable, ConnectionError, TimeoutError) as error:
        print(f"error: store unavailable: {error}", file=err)
        return EXIT_FAILED
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
