"""`manage.py create_api_key --org SLUG --name NAME --env test|live --scope R:A ...`.

Prints what was created, then the secret alone on the last line so scripts can take it
with `tail -n 1`. The secret is written to stdout only: never logged or stored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from apikeys.services import ApiKeyError, apikey_create
from orgs.models import Organization


def _parse_expiry(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parse_datetime(value)
    except ValueError:
        parsed = None
    if parsed is None:
        raise CommandError(
            f"--expires-at {value!r} is not an ISO 8601 date-time (e.g. 2030-01-31T00:00:00Z)."
        )
    if timezone.is_naive(parsed):
        # A bare date-time is read as UTC, the database's zone.
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


class Command(BaseCommand):
    help = "Create an API key for an organisation and print its secret (shown only once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", required=True, help="The organisation's slug.")
        parser.add_argument("--name", required=True, help="What the key is for.")
        parser.add_argument("--env", required=True, choices=["test", "live"])
        parser.add_argument(
            "--scope",
            action="append",
            default=[],
            metavar="RESOURCE:read|write",
            help="A permission; repeat for more. Write includes read.",
        )
        parser.add_argument(
            "--expires-at", default=None, help="ISO 8601 date-time; UTC when no offset."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        org = Organization.objects.filter(slug=options["org"]).first()
        if org is None:
            raise CommandError(f"No organisation with slug {options['org']!r}.")
        if not options["scope"]:
            raise CommandError("Give at least one --scope, e.g. --scope members:read.")
        expires_at = _parse_expiry(options["expires_at"])
        try:
            key, secret = apikey_create(
                org=org,
                name=options["name"],
                environment=options["env"],
                scopes=options["scope"],
                expires_at=expires_at,
            )
        except ApiKeyError as error:
            raise CommandError(error.message) from None
        expiry = key.expires_at.isoformat() if key.expires_at else "never"
        self.stdout.write(f"Created {key.environment} key {key.public_id} for {org.slug}.")
        self.stdout.write(f"Name: {key.name}")
        self.stdout.write(f"Scopes: {' '.join(key.scopes)}")
        self.stdout.write(f"Expires: {expiry}")
        self.stdout.write("Store this secret now; it is not shown again:")
        self.stdout.write(secret)
