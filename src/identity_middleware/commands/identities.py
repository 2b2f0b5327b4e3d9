"""The commands on identities, their per-identity budgets (``budget set|remove|reset|status``) and usage."""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import ValidationError

from ..core.models import Budget, BudgetStatus, Identity, IdentityInput
from ..core.money import format_usd, to_decimal
from ..core.periods import Period
from ..stores import Store
from ..stores.base import MAX_PAGE_SIZE
from .output import EXIT_USAGE, CommandFailed, Define, Output, Subcommands, pairs, print_json, say, table


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
def cmd_list(store: Store, args: argparse.Namespace, out: Output) -> None:
    identities = _all_identities(store, args.search, args.tag or None)
    if args.json:
        print_json([identity.to_json() for identity in identities], out)
        return
    if not identities:
        say(out, "no identities")
        return
    rows = [["EXTERNAL_ID", "DISPLAY_NAME", "EMAIL", "TAGS", "REQUESTS", "TOKENS", "COST_USD", "ERROR_RATE", "_ID"]]
    for identity in identities:
        metrics = identity.metrics
        assert metrics is not None  # asked for with include_metrics
        rows.append([identity.external_id, identity.display_name or "", identity.email or "",
                     ",".join(identity.tags), str(metrics.total_requests), str(metrics.total_tokens),
                     format_usd(metrics.total_cost), f"{metrics.error_rate:.1%}", identity.id])
    table(rows, {4, 5, 6, 7}, out)


def cmd_show(store: Store, args: argparse.Namespace, out: Output) -> None:
    identity = store.retrieve(args.id)
    record = identity.model_copy(update={"metrics": store.metrics(identity.id),
                                         "budgets": store.budget_status(identity.id)})
    print_json(record.to_json(), out)


def cmd_create(store: Store, args: argparse.Namespace, out: Output) -> None:
    fields: dict[str, Any] = {"id": args.id}
    for name in ("display_name", "email", "avatar_url"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    if args.tag:
        fields["tags"] = args.tag
    if args.metadata:
        fields["metadata"] = pairs(args.metadata, "--metadata")
    print_json(store.create(IdentityInput.parse(fields)).to_json(), out)


def cmd_delete(store: Store, args: argparse.Namespace, out: Output) -> None:
    identity = store.retrieve(args.id)
    store.delete(identity.id)
    say(out, f"deleted {identity.external_id}")


def _status_line(identity_id: str, status: BudgetStatus) -> str:
    shown = status.model_dump(mode="json")  # money and times exactly as the admin API writes them
    return (f"{identity_id} {status.period.value}: spent {shown['spent']} of {shown['amount']} USD "
            f"({status.percent:g}%), resets {shown['resets_at']}")


def _budget_of(store: Store, identity_id: str, period: Period) -> BudgetStatus:
    for status in store.budget_status(identity_id):
        if status.period is period:
            return status
    raise CommandFailed(f"identity {identity_id!r} has no {period.value} budget")


def cmd_budget_set(store: Store, args: argparse.Namespace, out: Output) -> None:
    try:
        budget = Budget(period=Period(args.period), amount=args.amount)
    except ValidationError as error:
        message = error.errors()[0]["msg"].removeprefix("Value error, ")
        raise CommandFailed(f"invalid amount {args.amount!r}: {message}", EXIT_USAGE) from None
    identity = store.retrieve(args.id)
    store.set_budget(identity.id, budget)
    say(out, _status_line(args.id, _budget_of(store, identity.id, budget.period)))


def cmd_budget_remove(store: Store, args: argparse.Namespace, out: Output) -> None:
    period = Period(args.period)
    _budget_of(store, args.id, period)
    store.remove_budget(args.id, period)
    say(out, f"removed the {period.value} budget of {args.id}")


def cmd_budget_reset(store: Store, args: argparse.Namespace, out: Output) -> None:
    period = Period(args.period)
    _budget_of(store, args.id, period)
    store.reset_budget(args.id, period)
    say(out, _status_line(args.id, _budget_of(store, args.id, period)))


def cmd_budget_status(store: Store, args: argparse.Namespace, out: Output) -> None:
    statuses = store.budget_status(args.id)
    if args.json:
        print_json([status.model_dump(mode="json") for status in statuses], out)
        return
    if not statuses:
        say(out, f"{args.id} has no budgets")
        return
    rows = [["PERIOD", "AMOUNT", "SPENT", "RESERVED", "REMAINING", "PERCENT", "RESETS_AT"]]
    for status in statuses:
        shown = status.model_dump(mode="json")  # as the admin API writes them
        rows.append([status.period.value, shown["amount"], shown["spent"], shown["reserved"], shown["remaining"],
                     f"{status.percent:g}%", shown["resets_at"]])
    table(rows, {1, 2, 3, 4, 5}, out)


def cmd_record(store: Store, args: argparse.Namespace, out: Output) -> None:
    try:
        cost = to_decimal(args.cost)
    except ValueError as error:
        raise CommandFailed(f"invalid --cost: {error}", EXIT_USAGE) from None
    if cost < 0 or args.input_tokens < 0 or args.output_tokens < 0:
        raise CommandFailed("--cost and token counts must not be negative", EXIT_USAGE)
    store.record(args.id, cost=cost, input_tokens=args.input_tokens, output_tokens=args.output_tokens,
                 model=args.model, error=args.error)
    say(out, f"recorded {format_usd(cost)} USD, {args.input_tokens}+{args.output_tokens} tokens for {args.id}")


# -- parsing -------------------------------------------------------------------------------------------
def add_identity_commands(commands: Subcommands, command: Define) -> None:
    """``list``, ``show``, ``create``, ``delete``, ``budget set|remove|reset|status`` and ``record``."""
    periods = [period.value for period in Period]

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

    budget = commands.add_parser("budget", help="an identity's budget by period: set, remove, reset, status")
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
