"""`manage.py set_org_limits SLUG [--per-minute N] [--burst N] [--monthly N] [--reset]`

Custom limits override the org's plan field by field. N is a whole number (0 means
unlimited) or `plan` to go back to the plan's value; options left out keep their value.
"""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from config.errors import InvalidFields
from orgs.actors import Actor
from orgs.models import Organization
from platform_admin.services import LIMIT_MAX, org_set_limits

PLAN = "plan"


def limit_value(raw: str) -> int | str:
    if raw.strip().lower() == PLAN:
        return PLAN
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number (or 'plan').") from None
    if not 0 <= value <= LIMIT_MAX:
        raise argparse.ArgumentTypeError(f"Use a number from 0 to {LIMIT_MAX}.")
    return value


def _show(value: int) -> str:
    return "unlimited" if value == 0 else f"{value:,}"


class Command(BaseCommand):
    help = "Set an organisation's custom rate limits and monthly quota (0 means unlimited)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--per-minute", type=limit_value, help="requests per minute per key")
        parser.add_argument("--burst", type=limit_value, help="requests per second per key")
        parser.add_argument("--monthly", type=limit_value, help="requests per month for the org")
        parser.add_argument(
            "--reset", action="store_true", help="drop every custom limit (use the plan's)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        org = Organization.objects.filter(slug=options["slug"]).first()
        if org is None:
            raise CommandError(f"No organisation with slug {options['slug']!r}.")
        current = {
            "per_minute": org.custom_per_minute,
            "burst": org.custom_burst,
            "monthly": org.custom_monthly,
        }
        given = {name: options[name] for name in current}
        if options["reset"]:
            current = dict.fromkeys(current)
        elif all(value is None for value in given.values()):
            raise CommandError("Give at least one of --per-minute, --burst, --monthly or --reset.")
        for name, value in given.items():
            if value is not None:
                current[name] = None if value == PLAN else int(value)
        try:
            org_set_limits(
                org=org,
                per_minute=current["per_minute"],
                burst=current["burst"],
                monthly=current["monthly"],
                actor=Actor.system(),
            )
        except InvalidFields as exc:
            raise CommandError("; ".join(exc.messages)) from None
        limits = org.limits
        self.stdout.write(
            f"{org.slug}: {_show(limits.per_minute)} requests/minute, burst "
            f"{_show(limits.burst)}/second, {_show(limits.monthly)} requests/month "
            f"(plan {org.plan})."
        )
