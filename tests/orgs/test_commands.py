from __future__ import annotations

from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from accounts.models import User
from orgs.models import AuditEvent, Membership, Organization, Role
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_create_org_creates_the_owner_account_when_needed() -> None:
    out = StringIO()
    call_command(
        "create_org",
        "initech",
        "--name",
        "Initech",
        "--owner",
        "Bill@Initech.test",
        "--plan",
        "growth",
        "--kyc",
        "approved",
        stdout=out,
    )
    org = Organization.objects.get(slug="initech")
    assert (org.name, org.plan, org.kyc_status) == ("Initech", "growth", "approved")
    owner = User.objects.get(email="bill@initech.test")
    assert Membership.objects.get(org=org, user=owner).role == Role.OWNER
    assert AuditEvent.objects.filter(org=org, action="org.created").exists()
    assert "initech" in out.getvalue()


def test_create_org_uses_an_existing_account_and_defaults() -> None:
    existing = UserFactory.create(email="pat@example.com")
    call_command(
        "create_org", "pats", "--name", "Pat's", "--owner", "pat@example.com", stdout=StringIO()
    )
    org = Organization.objects.get(slug="pats")
    assert (org.plan, org.kyc_status) == ("starter", "not_submitted")
    assert Membership.objects.get(org=org).user == existing


def test_create_org_refuses_a_taken_slug(org: Organization) -> None:
    with pytest.raises(CommandError, match="already taken"):
        call_command(
            "create_org", "acme", "--name", "X", "--owner", "x@example.com", stdout=StringIO()
        )
    assert not User.objects.filter(email="x@example.com").exists()


def test_seed_demo_uses_the_services_and_stays_idempotent(settings: Any, tmp_path: Path) -> None:
    settings.PRIVATE_MEDIA_ROOT = tmp_path / "private"  # the demo KYC document
    call_command("seed_demo", stdout=StringIO())
    call_command("seed_demo", stdout=StringIO())
    org = Organization.objects.get(slug="demo")
    assert org.kyc_status == "approved"
    assert Membership.objects.get(org=org).user.email == "owner@demo.latchkey.test"
    assert AuditEvent.objects.filter(org=org, action="org.created").count() == 1
