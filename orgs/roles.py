"""The role rules of docs/product.md#organisations, in one place. Services enforce them;
views read them only to decide which controls to show.

- owner: everything, including other owners' and admins' roles, ownership transfer and
  deleting the org;
- admin: members (not owners and not other admins), org settings other than two-factor
  enforcement, invitations as member or admin;
- member: read-only.

Each rule takes the acting person's membership (`member`). A `member` of None is not a
person: an API key with `members:write` or the system (`orgs.actors.Actor`). It acts with
an admin's powers (ADR 0020).
"""

from __future__ import annotations

from orgs.models import ROLE_RANK, Membership, Role


def member_role(member: Membership | None) -> str:
    return Role.ADMIN if member is None else member.role


def assignable_roles(member: Membership | None) -> list[str]:
    """Roles the member may give by invitation or role change, highest first."""
    role = member_role(member)
    if role == Role.OWNER:
        return [Role.OWNER, Role.ADMIN, Role.MEMBER]
    if role == Role.ADMIN:
        return [Role.ADMIN, Role.MEMBER]
    return []


def can_assign(member: Membership | None, role: str) -> bool:
    return role in assignable_roles(member)


def can_manage(member: Membership | None, target: Membership) -> bool:
    """Whether the member may change the target's role or remove it (not themselves)."""
    if member is not None and member.pk == target.pk:
        return False
    role = member_role(member)
    if role == Role.OWNER:
        return True
    return role == Role.ADMIN and target.role == Role.MEMBER


def can_manage_members(member: Membership | None) -> bool:
    return ROLE_RANK[member_role(member)] >= ROLE_RANK[Role.ADMIN]


def can_change_two_factor_policy(member: Membership | None) -> bool:
    # docs/product.md#accounts: "An org owner can require two-factor for all members".
    return member is not None and member.role == Role.OWNER
