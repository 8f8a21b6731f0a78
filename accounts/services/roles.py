"""Platform roles (platform_admin, platform_owner) given to users by operators."""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest

from accounts.models import PlatformRole, User, normalize_email
from accounts.services._common import AccountError
from orgs.actors import Actor
from orgs.services import audit_record


@transaction.atomic
def user_set_platform_role(
    *,
    email: str,
    role: str,
    actor: Actor,
    request: HttpRequest | None = None,
) -> User:
    """Give `role` to the user with `email`: the operator's command line only
    (`actor=Actor.system()`); staff change roles through `platform_admin.services.
    platform_role_set`, which checks the platform owner.

    Invariants: only the system actor; the user must exist; the last platform_owner
    cannot be demoted, so the platform always keeps someone able to manage staff.
    """
    if not actor.is_system:
        raise AccountError("forbidden", "Platform roles are given from the command line.")
    if role not in PlatformRole.values:
        raise AccountError("invalid_role", f"Unknown role {role!r}.")
    # Lock the owners so two concurrent demotions cannot both pass the last-owner check.
    owners = list(
        User.objects.select_for_update()
        .filter(platform_role=PlatformRole.PLATFORM_OWNER)
        .values_list("pk", flat=True)
    )
    user = User.objects.select_for_update().filter(email=normalize_email(email)).first()
    if user is None:
        raise AccountError("no_user", f"No user with email {normalize_email(email)}.")
    previous = user.platform_role
    if previous == role:
        return user
    if previous == PlatformRole.PLATFORM_OWNER and owners == [user.pk]:
        raise AccountError("last_owner", "The last platform owner cannot be demoted.")
    user.platform_role = role
    user.save(update_fields=["platform_role"])
    audit_record(
        action="user.platform_role_changed",
        request=request,
        actor=actor,
        target=user,
        details={"from": previous, "to": role},
    )
    return user
