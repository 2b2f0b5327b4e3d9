"""``manage.py identities``: list identities with spend, set or remove a budget, reset a budget."""

from __future__ import annotations

from argparse import ArgumentParser
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ....core.errors import IdentityNotFound
from ....core.models import Budget
from ....core.money import format_usd
from ....core.periods import Period
from ...conf import get_store

PERIODS = [period.value for period in Period]


class Command(BaseCommand):
    help = "List identities with their spend and budgets; set, remove or reset a budget."

    def add_arguments(self, parser: ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        listing = actions.add_parser("list", help="identities with 30-day metrics and budgets")
        listing.add_argument("--search", default=None)
        listing.add_argument("--limit", type=int, default=50)
        budget = actions.add_parser("budget", help="set (or with --remove, remove) a budget")
        budget.add_argument("identity")
        budget.add_argument("period", choices=PERIODS)
        budget.add_argument("amount", nargs="?", help="USD, e.g. 10.00")
        budget.add_argument("--remove", action="store_true")
        reset = actions.add_parser("reset", help="zero the current period's spend of a budget")
        reset.add_argument("identity")
        reset.add_argument("period", choices=PERIODS)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            getattr(self, "_" + options["action"])(**options)
        except IdentityNotFound as error:
            raise CommandError(f"no identity {error}") from error

    def _list(self, *, search: str | None, limit: int, **options: Any) -> None:
        page = get_store().list(limit=limit, search=search, include_metrics=True, include_budgets=True)
        self.stdout.write(f"{'identity':<24} {'requests':>8} {'errors':>7} {'cost USD':>12}  budgets")
        for identity in page.data:
            metrics = identity.metrics
            budgets = ", ".join(f"{status.period.value} {format_usd(status.spent)}/{format_usd(status.amount)}"
                                for status in identity.budgets or [])
            if metrics is None:
                continue
            self.stdout.write(f"{identity.external_id:<24} {metrics.total_requests:>8} "
                              f"{metrics.error_rate:>7.0%} {format_usd(metrics.total_cost):>12}  {budgets or '-'}")

    def _budget(self, *, identity: str, period: str, amount: str | None, remove: bool, **options: Any) -> None:
        store = get_store()
        if remove:
            store.remove_budget(identity, period)
            self.stdout.write(f"removed the {period} budget of {identity}")
            return
        try:
            value = Decimal(amount or "")
        except InvalidOperation:
            raise CommandError("give the amount in USD, e.g. 10.00") from None
        if value <= 0:
            raise CommandError("the amount must be greater than 0")
        store.set_budget(identity, Budget(period=period, amount=value))
        self.stdout.write(f"{identity}: {period} budget {format_usd(value)} USD")

    def _reset(self, *, identity: str, period: str, **options: Any) -> None:
        get_store().reset_budget(identity, period)
        self.stdout.write(f"{identity}: {period} spend reset to 0")
