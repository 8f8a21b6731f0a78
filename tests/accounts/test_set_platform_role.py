from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.models import PlatformRole, User
from orgs.models import AuditEvent

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command("set_platform_role", *args, stdout=out)
    return out.getvalue()


def test_grants_and_revokes_a_platform_role(user: User) -> None:
    assert "platform_admin" in run("ALICE@example.com", "platform_admin")
    user.refresh_from_db()
    assert user.platform_role == PlatformRole.PLATFORM_ADMIN and user.is_platform_staff
    run(user.email, "none")
    user.refresh_from_db()
    assert user.platform_role == PlatformRole.NONE
    event = AuditEvent.objects.filter(action="user.platform_role_changed").latest("created_at")
    assert event.details == {"from": "platform_admin", "to": "none"}


def test_an_unknown_user_is_an_error(db: None) -> None:
    with pytest.raises(CommandError, match="No user"):
        run("ghost@example.com", "platform_admin")


def test_an_unknown_role_is_an_error(user: User) -> None:
    with pytest.raises(CommandError):
        run(user.email, "superhero")


def test_the_last_platform_owner_cannot_be_demoted(user: User) -> None:
    run(user.email, "platform_owner")
    with pytest.raises(CommandError, match="last platform owner"):
        run(user.email, "platform_admin")
    user.refresh_from_db()
    assert user.platform_role == PlatformRole.PLATFORM_OWNER

    second = User.objects.create_user("bob@example.com")
    run(second.email, "platform_owner")
    run(user.email, "none")
    user.refresh_from_db()
    assert user.platform_role == PlatformRole.NONE
