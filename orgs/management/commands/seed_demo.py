"""Demo data for `make run`: idempotent, safe to run on every start."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.models import User
from orgs.models import KycStatus, Membership, Organization, Role
from orgs.services import org_create

DEMO_OWNER_EMAIL = "owner@demo.latchkey.test"
DEMO_ORG_SLUG = "demo"
DEMO_ORG_NAME = "Demo Inc."


class Command(BaseCommand):
    help = "Create the demo organisation and its owner (idempotent)."

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        owner = User.objects.filter(email=DEMO_OWNER_EMAIL).first()
        if owner is None:
            owner = User.objects.create_user(DEMO_OWNER_EMAIL)
        org = Organization.objects.filter(slug=DEMO_ORG_SLUG).first()
        if org is None:
            org = org_create(
                name=DEMO_ORG_NAME,
                slug=DEMO_ORG_SLUG,
                owner=owner,
                kyc_status=KycStatus.APPROVED,
            )
            self.stdout.write(f"Created demo org '{org.slug}' owned by {owner.email}.")
            return
        # Already there: make sure the demo owner still owns it, change nothing else.
        membership = Membership.objects.filter(org=org, user=owner).first()
        if membership is None:
            Membership.objects.create(org=org, user=owner, role=Role.OWNER)
        elif membership.role != Role.OWNER:
            membership.role = Role.OWNER
            membership.save(update_fields=["role"])
        self.stdout.write(f"Kept demo org '{org.slug}' owned by {owner.email}.")
