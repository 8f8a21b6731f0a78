"""The role rules of docs/product.md#organisations, in one place. Services enforce them;
views read them only to decide which controls to show.

- owner: everything, including other owners' and admins' roles, ownership transfer and
  deleting the org;
- admin: members (not owners and not other admins), org settings other than two-factor
  enforcement, invitations as member or admin;
- member: read-only.

An actor of `None` is not a person: an API key with `members:write` or the system. It acts
with an admin's powers (ADR 0020).
"""

from __future__ import annotations

from orgs.models import ROLE_RANK, Membership, Role


def actor_role(actor: Membership | None) -> str:
    return Role.ADMIN if actor is None else actor.role


def assignable_roles(actor: Membership | None) -> list[str]:
    """Roles the actor may give by invitation or role change, highest first."""
    role = actor_role(actor)
    if role == Role.OWNER:
        return [Role.OWNER, Role.ADMIN, Role.MEMBER]
    if role == Role.ADMIN:
        return [Role.ADMIN, Role.MEMBER]
    return []


def can_assign(actor: Membership | None, role: str) -> bool:
    return role in assignable_roles(actor)


def can_manage(actor: Membership | None, target: Membership) -> bool:
    """Whether the actor may change the target's role or remove it (not themselves)."""
    if actor is not None and actor.pk == target.pk:
        return False
    role = actor_role(actor)
    if role == Role.OWNER:
        return True
    return role == Role.ADMIN and target.role == Role.MEMBER


def can_manage_members(actor: Membership | None) -> bool:
    return ROLE_RANK[actor_role(actor)] >= ROLE_RANK[Role.ADMIN]


def can_change_two_factor_policy(actor: Membership | None) -> bool:
    # docs/product.md#accounts: "An org owner can require two-factor for all members".
    return actor is not None and actor.role == Role.OWNER
