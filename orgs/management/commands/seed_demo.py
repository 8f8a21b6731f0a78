"""Demo data for `make run`: idempotent, safe to run on every start."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.models import User
from orgs.models import KycStatus, Membership, Organization, Role

DEMO_OWNER_EMAIL = "owner@demo.latchkey.test"
DEMO_ORG_SLUG = "demo"


class Command(BaseCommand):
    help = "Create the demo organisation and its owner (idempotent)."

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        owner, _ = User.objects.get_or_create(email=DEMO_OWNER_EMAIL)
        org, created = Organization.objects.get_or_create(
            slug=DEMO_ORG_SLUG,
            defaults={"name": "Demo Inc.", "kyc_status": KycStatus.APPROVED},
        )
        Membership.objects.get_or_create(org=org, user=owner, defaults={"role": Role.OWNER})
        verb = "Created" if created else "Kept"
        self.stdout.write(f"{verb} demo org '{org.slug}' owned by {owner.email}.")
