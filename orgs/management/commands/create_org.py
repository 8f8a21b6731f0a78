"""`manage.py create_org SLUG --name NAME --owner EMAIL [--plan ...] [--kyc ...]`."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from accounts.models import User, normalize_email
from orgs.models import KycStatus
from orgs.plans import Plan
from orgs.services import OrgError, org_create


class Command(BaseCommand):
    help = "Create an organisation and its owner (the owner's account is created if needed)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--name", required=True)
        parser.add_argument("--owner", required=True, help="The owner's email.")
        parser.add_argument("--plan", choices=Plan.values, default=Plan.STARTER)
        parser.add_argument("--kyc", choices=KycStatus.values, default=KycStatus.NOT_SUBMITTED)

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        email = normalize_email(options["owner"])
        if "@" not in email:
            raise CommandError(f"Not an email address: {options['owner']!r}")
        owner = User.objects.filter(email=email).first()
        created_owner = owner is None
        if owner is None:
            owner = User.objects.create_user(email)
        try:
            org = org_create(
                name=options["name"],
                slug=options["slug"],
                owner=owner,
                plan=options["plan"],
                kyc_status=options["kyc"],
            )
        except OrgError as error:
            raise CommandError(error.message) from None
        account = "new account" if created_owner else "existing account"
        self.stdout.write(
            f"Created org '{org.slug}' ({org.name}, plan {org.plan}, KYC {org.kyc_status}) "
            f"owned by {owner.email} ({account})."
        )
