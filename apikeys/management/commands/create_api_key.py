"""`manage.py create_api_key --org SLUG --name NAME --env test|live --scope R:A ...`, or
`manage.py create_api_key --system --name NAME --scope R:A ...` for a system key.

Prints what was created, then the secret alone on the last line so scripts can take it
with `tail -n 1`. The secret is written to stdout only: never logged or stored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from apikeys.services import ApiKeyError, apikey_create, system_apikey_create
from orgs.actors import Actor
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
        parser.add_argument("--org", help="The organisation's slug (not with --system).")
        parser.add_argument("--name", required=True, help="What the key is for.")
        parser.add_argument("--env", choices=["test", "live"], help="Not with --system.")
        parser.add_argument(
            "--system",
            action="store_true",
            help="A system key (environment sys) with system scopes, e.g. keys:verify.",
        )
        parser.add_argument(
            "--scope",
            action="append",
            default=[],
            metavar="RESOURCE:ACTION",
            help="A permission; repeat for more. An action includes what it implies.",
        )
        parser.add_argument(
            "--expires-at", default=None, help="ISO 8601 date-time; UTC when no offset."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["scope"]:
            raise CommandError("Give at least one --scope, e.g. --scope members:read.")
        if options["system"]:
            self._system(options)
            return
        if not options["org"] or not options["env"]:
            raise CommandError("Give --org and --env (or --system for a system key).")
        org = Organization.objects.filter(slug=options["org"]).first()
        if org is None:
            raise CommandError(f"No organisation with slug {options['org']!r}.")
        expires_at = _parse_expiry(options["expires_at"])
        try:
            key, secret = apikey_create(
                org=org,
                name=options["name"],
                environment=options["env"],
                scopes=options["scope"],
                expires_at=expires_at,
                actor=Actor.system(),
            )
        except ApiKeyError as error:
            raise CommandError(error.message) from None
        self._print(f"Created {key.environment} key {key.public_id} for {org.slug}.", key, secret)

    def _system(self, options: dict[str, Any]) -> None:
        if options["org"] or options["env"]:
            raise CommandError("A system key has no --org or --env.")
        try:
            key, secret = system_apikey_create(
                name=options["name"],
                scopes=options["scope"],
                actor=Actor.system(),
                expires_at=_parse_expiry(options["expires_at"]),
            )
        except ApiKeyError as error:
            raise CommandError(error.message) from None
        self._print(f"Created system key {key.public_id}.", key, secret)

    def _print(self, heading: str, key: Any, secret: str) -> None:
        expiry = key.expires_at.isoformat() if key.expires_at else "never"
        self.stdout.write(heading)
        self.stdout.write(f"Name: {key.name}")
        self.stdout.write(f"Scopes: {' '.join(key.scopes)}")
        self.stdout.write(f"Expires: {expiry}")
        self.stdout.write("Store this secret now; it is not shown again:")
        self.stdout.write(secret)
