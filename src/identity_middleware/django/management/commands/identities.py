"""``manage.py identities``: the console script's commands, run against the middleware's store."""

from __future__ import annotations

from argparse import ArgumentParser, Namespace
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ....commands import CommandFailed, add_commands, execute
from ...conf import get_store


class Command(BaseCommand):
    help = ("Identities, budgets and usage in the middleware's store: "
            "list, show, create, delete, budget set|remove|reset|status, "
            "budgets list|create|show|delete|reset, record.")

    def add_arguments(self, parser: ArgumentParser) -> None:
        add_commands(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            execute(get_store(), Namespace(**options), self.stdout)
        except CommandFailed as error:
            raise CommandError(str(error), returncode=error.code) from None
