"""The commands on scoped budgets (orq's Budgets API): ``budgets list|create|show|delete|reset``, and
credits: ``budgets top-up|top-ups`` (an identity's one-time budget topped up once per idempotency key).

``budget set|remove|reset|status`` (:mod:`.identities`) stays the per-identity view by period; these
reach every budget by its id: identity, model, provider, workspace, project, API-key and match (CEL)
ones (``--scope team --target ml`` is the match budget ``metadata.team == "ml"``), with token limits,
requests per minute, one-time periods and alerts; ``budgets check`` asks whether a request would pass.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from ..core.budgets import Alert, BudgetPeriod, BudgetSpec, BudgetUsage, ForecastAlert, ScopedBudget, ScopeKind
from ..core.check import BudgetCheck
from ..core.credits import TopUp, TopUpConflict
from ..core.money import format_usd
from ..core.periods import UTC
from ..stores import Store
from ..stores.base import MAX_PAGE_SIZE
from .output import EXIT_USAGE, CommandFailed, Define, Output, Subcommands, pairs, print_json, say, table


def budget_json(budget: ScopedBudget, usage: BudgetUsage) -> dict[str, Any]:
    """A budget and its usage as JSON, money as decimal strings (as on our own routes)."""
    data = {"id": budget.id, **budget.model_dump(mode="json", exclude={"id"})}
    data["amount"] = None if budget.amount is None else format_usd(budget.amount)
    data["usage"] = {"amount": format_usd(usage.amount), "tokens": usage.tokens, "requests": usage.requests}
    if usage.forecast is not None:
        data["forecast"] = usage.forecast.model_dump(mode="json")
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
        rows.append([budget.id, budget.scope.value, budget.target or budget.match or "", budget.period.value,
                     _limit(format_usd(usage.amount), amount), _limit(str(usage.tokens), budget.token_limit),
                     _limit(str(usage.requests), budget.requests_per_minute),
                     "yes" if budget.live(now) else "no"])
    table(rows, {4, 5, 6}, out)


def team_expression(team: str) -> str:
    """The match expression of a team's budget: the identities whose ``metadata.team`` is ``team``."""
    return f"metadata.team == {json.dumps(team)}"


def _scope(args: argparse.Namespace) -> tuple[ScopeKind, str | None, str | None]:
    """The scope kind, target and match expression the options give (``team`` is a match budget)."""
    if args.scope == "team":
        if not args.target:
            raise CommandFailed("--scope team needs --target TEAM (the identities' metadata.team)", EXIT_USAGE)
        return ScopeKind.MATCH, None, team_expression(args.target)
    if (args.scope == ScopeKind.MATCH.value) != (args.match is not None):
        raise CommandFailed("--match CEL goes with --scope match, and --scope match needs it", EXIT_USAGE)
    return ScopeKind(args.scope), args.target, args.match


def cmd_budgets_create(store: Store, args: argparse.Namespace, out: Output) -> None:
    notifiers = tuple(args.notify or ())
    scope, target, match = _scope(args)
    spec = BudgetSpec(scope=scope, target=target, match=match, period=BudgetPeriod(args.period),
                      amount=args.amount, token_limit=args.tokens, requests_per_minute=args.rpm,
                      is_active=not args.inactive, alerts=tuple(_alert(text, notifiers) for text in args.alert or ()),
                      forecast_alert=ForecastAlert(notifier_ids=notifiers) if args.forecast_alert else None)
    budget = store.create_budget(spec)
    print_json(budget_json(budget, store.budget_usage(budget.id)), out)


def cmd_budgets_show(store: Store, args: argparse.Namespace, out: Output) -> None:
    budget = store.retrieve_budget(args.budget_id)
    print_json(budget_json(budget, store.budget_usage(budget.id)), out)


def check_json(result: BudgetCheck) -> dict[str, Any]:
    """A check's answer as JSON, money as decimal strings."""
    def dimension(info: Any) -> dict[str, Any] | None:
        if info is None:
            return None
        return {name: format_usd(value) if not isinstance(value, int) else value
                for name, value in (("limit", info.limit), ("consumed", info.consumed), ("remaining", info.remaining))}

    rejection = result.rejection
    return {"allowed": result.allowed,
            "rejection": None if rejection is None else {
                "scope_kind": rejection.scope_kind, "scope_target_id": rejection.scope_target_id,
                "dimension": rejection.dimension, "budget_id": rejection.budget_id, "message": rejection.message},
            "cost": dimension(result.cost), "tokens": dimension(result.tokens), "requests": dimension(result.requests)}


def cmd_budgets_check(store: Store, args: argparse.Namespace, out: Output) -> None:
    metadata = pairs(args.metadata, "--metadata") if args.metadata else None
    result = store.check(args.identity, model=args.model, provider=args.provider, project=args.project,
                         api_key=args.api_key, metadata=metadata, headers=pairs(args.header, "--header") or None,
                         estimate=args.estimate or 0)
    print_json(check_json(result), out)
    if not result.allowed:
        raise CommandFailed(f"refused by {result.rejection.budget_id if result.rejection else 'a budget'}", 1)


def cmd_budgets_delete(store: Store, args: argparse.Namespace, out: Output) -> None:
    store.delete_budget(args.budget_id)
    say(out, f"deleted budget {args.budget_id}")


def cmd_budgets_reset(store: Store, args: argparse.Namespace, out: Output) -> None:
    store.reset_budget_consumption(args.budget_id)
    usage = store.budget_usage(args.budget_id)
    say(out, f"reset budget {args.budget_id}: spent {format_usd(usage.amount)} USD, {usage.tokens} tokens")


def top_up_json(top_up: TopUp) -> dict[str, Any]:
    """A ledger entry as JSON, money as decimal strings."""
    return top_up.model_dump(mode="json")


def cmd_budgets_top_up(store: Store, args: argparse.Namespace, out: Output) -> None:
    try:
        made = store.top_up(args.budget_id, args.amount, args.idempotency_key)
    except TopUpConflict as error:
        raise CommandFailed(str(error)) from None
    if args.json:
        print_json(top_up_json(made), out)
        return
    say(out, f"budget {made.budget_id}: topped up {format_usd(made.amount)} USD under key {made.idempotency_key!r}, "
             f"limit now {format_usd(made.new_limit)} USD")


def cmd_budgets_top_ups(store: Store, args: argparse.Namespace, out: Output) -> None:
    ledger = store.top_ups(args.budget_id)
    if args.json:
        print_json([top_up_json(entry) for entry in ledger], out)
        return
    if not ledger:
        say(out, "no top-ups")
        return
    rows = [["CREATED", "AMOUNT_USD", "NEW_LIMIT_USD", "IDEMPOTENCY_KEY"]]
    rows += [[entry.created.isoformat().replace("+00:00", "Z"), format_usd(entry.amount), format_usd(entry.new_limit),
              entry.idempotency_key] for entry in ledger]
    table(rows, {1, 2}, out)


def add_budget_commands(commands: Subcommands, command: Define) -> None:
    group = commands.add_parser("budgets",
                                help="scoped budgets by id: list, create, show, delete, reset, check, top-up",
                                description="Budgets of an identity, a model, a provider, a project, an API key, "
                                            "a team (or any CEL match expression) or the whole app (workspace), "
                                            "by id.")
    budgets = group.add_subparsers(dest="budgets_command", required=True, metavar="ACTION")
    listing = command("list", cmd_budgets_list, "every budget with its usage", budgets)
    listing.add_argument("--scope-kind", action="append", choices=[kind.value for kind in ScopeKind],
                         help="keep budgets of these scopes (repeatable)")
    listing.add_argument("--target", help="keep budgets of this target (external id, model, provider, project "
                                           "or API key)")
    listing.add_argument("--json", action="store_true", help="print JSON records instead of a table")

    create = command("create", cmd_budgets_create, "create a budget (give at least one limit)", budgets)
    create.add_argument("--scope", required=True, choices=[*(kind.value for kind in ScopeKind), "team"])
    create.add_argument("--target", help="the identity's external id, the model (openai/gpt-4o), the provider, the "
                                         "project, the API key or the team (metadata.team); none for the workspace")
    create.add_argument("--match", metavar="CEL", help='with --scope match: the expression, e.g. '
                                                        'metadata.team == "ml" && provider == "openai"')
    create.add_argument("--period", required=True, choices=[period.value for period in BudgetPeriod])
    create.add_argument("--amount", help="USD, e.g. 10.00")
    create.add_argument("--tokens", type=int, help="token limit")
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--alert", action="append", metavar="PERCENT",
                        help="notify once per period at this share of the amount; repeatable")
    create.add_argument("--notify", action="append", metavar="NOTIFIER_ID",
                        help="the notifier ids the alerts go to (repeatable)")
    create.add_argument("--forecast-alert", action="store_true",
                        help="notify once per period when the budget is forecast to run out before it resets")
    create.add_argument("--inactive", action="store_true", help="create it switched off")

    check = command("check", cmd_budgets_check, "would a request pass now? (JSON; exit 1 when refused)", budgets)
    check.add_argument("--identity", help="the identity's external id")
    check.add_argument("--model", help="the model, e.g. openai/gpt-4o")
    check.add_argument("--provider", help="the provider, e.g. openai")
    check.add_argument("--project", help="the project")
    check.add_argument("--api-key", help="the API key's id")
    check.add_argument("--metadata", action="append", metavar="NAME=VALUE",
                       help="instead of the identity's metadata (repeatable)")
    check.add_argument("--header", action="append", metavar="NAME=VALUE", help="a request header (repeatable)")
    check.add_argument("--estimate", help="USD the request would reserve, e.g. 0.50")

    for name, func, text in [("show", cmd_budgets_show, "one budget with its usage (JSON)"),
                             ("delete", cmd_budgets_delete, "delete a budget"),
                             ("reset", cmd_budgets_reset, "zero a budget's consumption this period")]:
        command(name, func, text, budgets).add_argument("budget_id", help="the budget's id (bg_... or bi_...)")

    top_up = command("top-up", cmd_budgets_top_up, "add to an identity's one-time budget (a prepaid balance), "
                     "once per idempotency key", budgets)
    top_up.add_argument("budget_id", help="the one-time identity budget's id (bi_..._one_time)")
    top_up.add_argument("amount", help="USD to add, e.g. 25.00")
    top_up.add_argument("--idempotency-key", required=True, metavar="KEY",
                        help="names this top-up: the same key again adds nothing and prints the same top-up")
    top_up.add_argument("--json", action="store_true", help="print the top-up as JSON")
    ledger = command("top-ups", cmd_budgets_top_ups, "the budget's top-ups, oldest first", budgets)
    ledger.add_argument("budget_id", help="the one-time identity budget's id")
    ledger.add_argument("--json", action="store_true", help="print JSON records instead of a table")
