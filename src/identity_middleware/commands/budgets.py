"""The commands on scoped budgets (orq's Budgets API): ``budgets list|create|show|delete|reset``.

``budget set|remove|reset|status`` (:mod:`.identities`) stays the per-identity view by period; these
reach every budget by its id: identity, model, provider and workspace ones, with token limits,
requests per minute, one-time periods and alerts.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from ..core.budgets import Alert, BudgetPeriod, BudgetSpec, BudgetUsage, ScopedBudget, ScopeKind
from ..core.money import format_usd
from ..core.periods import UTC
from ..stores import Store
from ..stores.base import MAX_PAGE_SIZE
from .output import EXIT_USAGE, CommandFailed, Define, Output, Subcommands, print_json, say, table


def budget_json(budget: ScopedBudget, usage: BudgetUsage) -> dict[str, Any]:
    """A budget and its usage as JSON, money as decimal strings (as on our own routes)."""
    data = {"id": budget.id, **budget.model_dump(mode="json", exclude={"id"})}
    data["amount"] = None if budget.amount is None else format_usd(budget.amount)
    data["usage"] = {"amount": format_usd(usage.amount), "tokens": usage.tokens, "requests": usage.requests}
    return data


def _alert(text: str, notifiers: tuple[str, ...]) -> Alert:
    try:  # alerts watch cost: orq rejects a TOKENS alert
        return Alert(threshold_percent=int(text), notifier_ids=notifiers)
    except ValueError:
        raise CommandFailed(f"--alert takes PERCENT (1..100) of the amount, got {text!r}", EXIT_USAGE) from None


def _all_budgets(store: Store, kinds: list[str] | None, target: str | None) -> list[tuple[ScopedBudget, BudgetUsage]]:
    found: list[tuple[ScopedBudget, BudgetUsage]] = []
    cursor: str | None = None
    while True:
        page = store.list_budgets(limit=MAX_PAGE_SIZE, starting_after=cursor, scope_kinds=kinds, target=target)
        found += page.data
        if not page.has_more or not page.data:
            return found
        cursor = page.data[-1][0].id


def _limit(used: str, limit: object) -> str:
    return used if limit is None else f"{used}/{limit}"


def cmd_budgets_list(store: Store, args: argparse.Namespace, out: Output) -> None:
    budgets = _all_budgets(store, args.scope_kind or None, args.target)
    if args.json:
        print_json([budget_json(budget, usage) for budget, usage in budgets], out)
        return
    if not budgets:
        say(out, "no budgets")
        return
    now = datetime.now(UTC)
    rows = [["ID", "SCOPE", "TARGET", "PERIOD", "SPENT_USD", "TOKENS", "REQUESTS/MIN", "ACTIVE"]]
    for budget, usage in budgets:
        amount = None if budget.amount is None else format_usd(budget.amount)
        rows.append([budget.id, budget.scope.value, budget.target or "", budget.period.value,
                     _limit(format_usd(usage.amount), amount), _limit(str(usage.tokens), budget.token_limit),
                     _limit(str(usage.requests), budget.requests_per_minute),
                     "yes" if budget.live(now) else "no"])
    table(rows, {4, 5, 6}, out)


def cmd_budgets_create(store: Store, args: argparse.Namespace, out: Output) -> None:
    notifiers = tuple(args.notify or ())
    spec = BudgetSpec(scope=ScopeKind(args.scope), target=args.target, period=BudgetPeriod(args.period),
                      amount=args.amount, token_limit=args.tokens, requests_per_minute=args.rpm,
                      is_active=not args.inactive, alerts=tuple(_alert(text, notifiers) for text in args.alert or ()))
    budget = store.create_budget(spec)
    print_json(budget_json(budget, store.budget_usage(budget.id)), out)


def cmd_budgets_show(store: Store, args: argparse.Namespace, out: Output) -> None:
    budget = store.retrieve_budget(args.budget_id)
    print_json(budget_json(budget, store.budget_usage(budget.id)), out)


def cmd_budgets_delete(store: Store, args: argparse.Namespace, out: Output) -> None:
    store.delete_budget(args.budget_id)
    say(out, f"deleted budget {args.budget_id}")


def cmd_budgets_reset(store: Store, args: argparse.Namespace, out: Output) -> None:
    store.reset_budget_consumption(args.budget_id)
    usage = store.budget_usage(args.budget_id)
    say(out, f"reset budget {args.budget_id}: spent {format_usd(usage.amount)} USD, {usage.tokens} tokens")


def add_budget_commands(commands: Subcommands, command: Define) -> None:
    group = commands.add_parser("budgets", help="scoped budgets by id: list, create, show, delete, reset",
                                description="Budgets of an identity, a model, a provider or the whole app "
                                            "(workspace), by id.")
    budgets = group.add_subparsers(dest="budgets_command", required=True, metavar="ACTION")
    listing = command("list", cmd_budgets_list, "every budget with its usage", budgets)
    listing.add_argument("--scope-kind", action="append", choices=[kind.value for kind in ScopeKind],
                         help="keep budgets of these scopes (repeatable)")
    listing.add_argument("--target", help="keep budgets of this target (external id, model or provider)")
    listing.add_argument("--json", action="store_true", help="print JSON records instead of a table")

    create = command("create", cmd_budgets_create, "create a budget (give at least one limit)", budgets)
    create.add_argument("--scope", required=True, choices=[kind.value for kind in ScopeKind])
    create.add_argument("--target", help="the identity's external id, the model (openai/gpt-4o) or the provider; "
                                         "none for the workspace")
    create.add_argument("--period", required=True, choices=[period.value for period in BudgetPeriod])
    create.add_argument("--amount", help="USD, e.g. 10.00")
    create.add_argument("--tokens", type=int, help="token limit")
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--alert", action="append", metavar="PERCENT",
                        help="notify once per period at this share of the amount; repeatable")
    create.add_argument("--notify", action="append", metavar="NOTIFIER_ID",
                        help="the notifier ids the alerts go to (repeatable)")
    create.add_argument("--inactive", action="store_true", help="create it switched off")

    for name, func, text in [("show", cmd_budgets_show, "one budget with its usage (JSON)"),
                             ("delete", cmd_budgets_delete, "delete a budget"),
                             ("reset", cmd_budgets_reset, "zero a budget's consumption this period")]:
        command(name, func, text, budgets).add_argument("budget_id", help="the budget's id (bg_... or bi_...)")
