import pytest
from django.core.management import call_command

from orgs.models import Membership, Organization, Role


@pytest.mark.django_db
def test_seed_demo_is_idempotent() -> None:
    call_command("seed_demo")
    call_command("seed_demo")
    org = Organization.objects.get(slug="demo")
    membership = Membership.objects.get(org=org)
    assert membership.role == Role.OWNER
    assert membership.user.email == "owner@demo.latchkey.test"
