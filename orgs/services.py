"""Writes for organisations, memberships and the audit log."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts.emails import queue_email
from accounts.models import User, normalize_email
from config.errors import ServiceError
from config.net import client_ip, user_agent
from orgs import roles
from orgs.actors import Actor
from orgs.models import (
    AuditEvent,
    Invitation,
    KycStatus,
    LeakResponse,
    Membership,
    Organization,
    Role,
)
from orgs.plans import Plan
from orgs.selectors import user_has_two_factor
from orgs.tokens import invitation_token_hash, new_invitation_token
from webhooks.events import emit

# Keys that would carry a secret; an event with one of them in `details` is refused.
FORBIDDEN_DETAIL_KEYS = frozenset(
    {"secret", "token", "password", "otp", "otp_token", "code", "recovery_code", "api_key", "key"}
)


def _check_details(details: dict[str, Any]) -> None:
    for name, value in details.items():
        if name.lower() in FORBIDDEN_DETAIL_KEYS:
            raise ValueError(f"Audit details must not carry secrets ({name!r}).")
        if isinstance(value, dict):
            _check_details(value)


def audit_record(
    *,
    action: str,
    org: Organization | None = None,
    request: HttpRequest | None = None,
    actor: Actor | None = None,
    target: models.Model | None = None,
    target_type: str = "",
    target_id: str = "",
    target_label: str = "",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one audit event.

    Invariants: events are never updated or deleted; `details` never holds a secret (keys
    such as `secret`, `token`, `code` are refused). The actor is the one given, else the
    request's signed-in user, else the system (`Actor.for_request`). IP, user agent and
    request id come from `request` when one is given.
    """
    details = dict(details or {})
    _check_details(details)
    if actor is None:
        actor = Actor.for_request(request)

    if target is not None:
        target_type = target_type or target._meta.model_name or ""
        target_id = target_id or str(getattr(target, "public_id", "") or target.pk)
        target_label = target_label or str(target)[:254]

    return AuditEvent.objects.create(
        org=org,
        action=action,
        actor_type=actor.kind,
        actor_user=actor.user,
        actor_id=actor.audit_id,
        actor_label=actor.label[:254],
        external_actor_id=actor.external_actor_id[:255],
        target_type=target_type[:40],
        target_id=target_id[:64],
        target_label=target_label[:254],
        ip=client_ip(request) if request is not None else None,
        user_agent=user_agent(request) if request is not None else "",
        request_id=getattr(request, "request_id", "") if request is not None else "",
        details=details,
        created_at=timezone.now(),
    )


# ---------------------------------------------------------------------------------------
# Organisations, memberships and invitations
# ---------------------------------------------------------------------------------------

INVITATION_TTL = timedelta(days=7)
INVITATION_EMAIL_TEMPLATE = "orgs/email/invitation"
SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?$")
SLUG_MIN_LENGTH = 2
NAME_MAX_LENGTH = 120


class OrgError(ServiceError):
    """A refused org operation (`forbidden`, `last_owner`, `slug_taken`, ...)."""


class MembershipError(OrgError):
    """A refused change to memberships or invitations (role rules, last owner, ...)."""


class InvitationError(MembershipError):
    """An invitation that cannot be used: unknown, expired, used, cancelled, not yours."""


def _lock_org(org: Organization) -> None:
    """Serialise membership changes of one org, so two concurrent demotions cannot both
    see "another owner remains" and leave the org without one."""
    Organization.objects.select_for_update().filter(pk=org.pk).first()


def _owner_count(org: Organization) -> int:
    return Membership.objects.filter(org=org, role=Role.OWNER).count()


def _check_same_org(org: Organization, *memberships: Membership | None) -> None:
    for membership in memberships:
        if membership is not None and membership.org_id != org.pk:
            raise MembershipError("That member belongs to another organisation.", code="not_found")


def _acting_membership(
    actor: Actor, org: Organization, *, fresh: bool = False
) -> Membership | None:
    """The acting person's membership of `org`: the one the actor carries, or (without
    one, or `fresh`: judged now, under the org's lock) looked up in one query. None for a
    key of the org or the system, which act with an admin's powers (`orgs.roles`). A
    person who is not a member, or a key of another org, is refused."""
    if actor.api_key is not None and actor.api_key.org_id != org.pk:
        raise MembershipError("That key belongs to another organisation.", code="forbidden")
    if actor.user is None:
        return None
    membership = None if fresh else actor.membership
    if membership is None:
        membership = Membership.objects.filter(org=org, user=actor.user).first()
        if membership is None:
            raise MembershipError("You are not a member of this organisation.", code="forbidden")
    _check_same_org(org, membership)
    return membership


def _clean_name(name: str) -> str:
    name = " ".join(name.split())
    if not name:
        raise OrgError("Enter a name for the organisation.", code="name_required")
    if len(name) > NAME_MAX_LENGTH:
        raise OrgError(
            f"The name can have at most {NAME_MAX_LENGTH} characters.", code="name_too_long"
        )
    return name


def clean_slug(slug: str) -> str:
    """Normalise and validate a slug: lower-case letters, digits and inner hyphens."""
    slug = slug.strip().lower()
    if len(slug) < SLUG_MIN_LENGTH or not SLUG_RE.match(slug):
        raise OrgError(
            "Use 2 to 50 lower-case letters, digits or hyphens, starting and ending with a "
            "letter or digit.",
            code="slug_invalid",
        )
    return slug


def _check_role(role: str) -> str:
    if role not in Role.values:
        raise MembershipError("Unknown role.", code="invalid_role")
    return role


@transaction.atomic
def org_create(
    *,
    name: str,
    slug: str,
    owner: User,
    plan: str = Plan.STARTER,
    kyc_status: str = KycStatus.NOT_SUBMITTED,
    request: HttpRequest | None = None,
) -> Organization:
    """Create an org and make `owner` its first owner.

    Invariants: the slug is unique and valid (OrgError `slug_taken` / `slug_invalid`);
    every org has at least one owner from its first moment.
    """
    name = _clean_name(name)
    slug = clean_slug(slug)
    if plan not in Plan.values:
        raise OrgError("Unknown plan.", code="invalid_plan")
    if kyc_status not in KycStatus.values:
        raise OrgError("Unknown KYC status.", code="invalid_kyc_status")
    if Organization.objects.filter(slug=slug).exists():
        raise OrgError("That slug is already taken.", code="slug_taken")
    try:
        with transaction.atomic():
            org = Organization.objects.create(
                name=name, slug=slug, plan=plan, kyc_status=kyc_status
            )
    except IntegrityError:
        raise OrgError("That slug is already taken.", code="slug_taken") from None
    Membership.objects.create(org=org, user=owner, role=Role.OWNER)
    audit_record(
        action="org.created",
        org=org,
        request=request,
        actor=Actor.for_user(owner),
        target=org,
        details={"slug": slug, "plan": plan, "kyc_status": kyc_status, "owner": owner.email},
    )
    return org


def invalidate_org_keys(org: Organization) -> None:
    """Make every worker re-read the org behind its keys (name, slug, status, plan,
    limits) on its next request: the verification cache is dropped now and at commit."""
    from apikeys.cache import invalidate_org  # apikeys builds on orgs, not the reverse

    invalidate_org(org.pk)


@transaction.atomic
def org_update_settings(
    *,
    org: Organization,
    name: str,
    slug: str,
    require_two_factor: bool,
    actor: Actor,
    request: HttpRequest | None = None,
    leak_response: str | None = None,
) -> Organization:
    """Change the org's name, slug, two-factor policy and what a leak report does to a
    key (`leak_response`: "revoke" or "flag"; None leaves it).

    Invariants: admins and owners only; only an owner changes `require_two_factor`, and
    only after enrolling a second factor themselves; only an owner changes
    `leak_response` (both are security policies); the slug stays unique. Records
    `org.settings_changed` with the changed fields only.
    """
    member = _acting_membership(actor, org)
    if not roles.can_manage_members(member):
        raise OrgError("Only admins and owners can change settings.", code="forbidden")
    name = _clean_name(name)
    slug = clean_slug(slug)
    if require_two_factor != org.require_two_factor and not roles.can_change_two_factor_policy(
        member
    ):
        raise OrgError("Only an owner can change the two-factor requirement.", code="forbidden")
    if leak_response is None:
        leak_response = org.leak_response
    if leak_response not in LeakResponse.values:
        raise OrgError("A leak report either revokes or flags the key.", code="invalid")
    if leak_response != org.leak_response and not roles.can_change_two_factor_policy(member):
        raise OrgError("Only an owner can change what a leak report does.", code="forbidden")
    if (
        require_two_factor
        and not org.require_two_factor
        and actor.user is not None
        and not user_has_two_factor(user=actor.user)
    ):
        # Otherwise the owner would lock themselves out of their own org's pages.
        raise OrgError(
            "Set up two-factor authentication on your own account before requiring it.",
            code="two_factor_required",
        )
    if slug != org.slug and Organization.objects.filter(slug=slug).exclude(pk=org.pk).exists():
        raise OrgError("That slug is already taken.", code="slug_taken")

    changes: dict[str, Any] = {}
    for field, value in (
        ("name", name),
        ("slug", slug),
        ("require_two_factor", require_two_factor),
        ("leak_response", leak_response),
    ):
        old = getattr(org, field)
        if old != value:
            changes[field] = {"from": old, "to": value}
            setattr(org, field, value)
    if not changes:
        return org
    try:
        with transaction.atomic():
            org.save(update_fields=[*changes, "updated_at"])
    except IntegrityError:
        raise OrgError("That slug is already taken.", code="slug_taken") from None
    # Keys carry the org's name and slug in the verification cache (`X-Org-Id`, `me`).
    invalidate_org_keys(org)
    audit_record(
        action="org.settings_changed",
        org=org,
        request=request,
        actor=actor,
        target=org,
        details={"changes": changes},
    )
    return org


@transaction.atomic
def org_delete(
    *,
    org: Organization,
    actor: Actor,
    confirm_slug: str,
    request: HttpRequest | None = None,
) -> None:
    """Delete the org with its memberships and invitations (and, by cascade, what other
    apps keep for it). Owners only (not a key), confirmed by typing the slug. Its audit
    events stay."""
    member = _acting_membership(actor, org)
    if member is None or member.role != Role.OWNER:
        raise OrgError("Only an owner can delete the organisation.", code="forbidden")
    if confirm_slug.strip() != org.slug:
        raise OrgError("Type the organisation's slug to confirm.", code="confirmation_mismatch")
    _lock_org(org)
    audit_record(
        action="org.deleted",
        org=org,
        request=request,
        actor=actor,
        target=org,
        details={"slug": org.slug, "name": org.name},
    )
    # Before the row goes: no worker may keep accepting the org's keys from its cache.
    invalidate_org_keys(org)
    org.delete()


def _invitation_send(*, invitation: Invitation, token: str, actor: Actor) -> None:
    accept_url = f"{settings.SITE_URL}/invitations/{token}/"
    queue_email(
        to=[invitation.email],
        template=INVITATION_EMAIL_TEMPLATE,
        context={
            "org_name": invitation.org.name,
            "role": Role(invitation.role).label,
            # A key or the system invites in the org's name, without an inviter to show.
            "inviter_email": actor.user.email if actor.user is not None else "",
            "accept_url": accept_url,
            "expires_at": invitation.expires_at.strftime("%Y-%m-%d %H:%M UTC"),
        },
    )


@transaction.atomic
def member_invite(
    *,
    org: Organization,
    email: str,
    role: str,
    actor: Actor,
    request: HttpRequest | None = None,
) -> Invitation:
    """Invite `email` to the org with `role` and email them a link valid for 7 days.

    Invariants: a person inviting is an admin or owner of the org, judged now (an API key
    or the system acts with an admin's powers); only owners invite owners; an address
    that is already a member, or has an open invitation, is refused. An expired open
    invitation for the same address is closed and replaced. Only the token's hash is kept.
    """
    _lock_org(org)
    email = normalize_email(email)
    if not email or "@" not in email:
        raise MembershipError("Enter a valid email address.", code="invalid_email")
    _check_role(role)
    member = _acting_membership(actor, org, fresh=True)
    if not roles.can_manage_members(member):
        raise MembershipError("Only admins and owners can invite members.", code="forbidden")
    if not roles.can_assign(member, role):
        raise MembershipError(
            f"You cannot invite someone as {Role(role).label.lower()}.", code="forbidden"
        )
    if Membership.objects.filter(org=org, user__email=email).exists():
        raise MembershipError(f"{email} is already a member.", code="already_member")

    now = timezone.now()
    open_invitation = Invitation.objects.filter(
        org=org, email=email, accepted_at__isnull=True, cancelled_at__isnull=True
    ).first()
    if open_invitation is not None:
        if open_invitation.expires_at > now:
            raise MembershipError(
                f"{email} already has a pending invitation; resend it instead.",
                code="already_invited",
            )
        open_invitation.cancelled_at = now
        open_invitation.save(update_fields=["cancelled_at"])

    token = new_invitation_token()
    invitation = Invitation.objects.create(
        org=org,
        email=email,
        role=role,
        token_hash=invitation_token_hash(token),
        invited_by=actor.user,
        invited_by_key=actor.api_key,
        sent_at=now,
        expires_at=now + INVITATION_TTL,
    )
    _invitation_send(invitation=invitation, token=token, actor=actor)
    _audit_invitation("member.invited", invitation, request=request, actor=actor)
    return invitation


def _check_can_touch_invitation(invitation: Invitation, actor: Actor) -> None:
    member = _acting_membership(actor, invitation.org)
    if not roles.can_manage_members(member):
        raise MembershipError("Only admins and owners can manage invitations.", code="forbidden")
    if not roles.can_assign(member, invitation.role):
        raise MembershipError(
            "Only an owner can manage an invitation to become an owner.", code="forbidden"
        )
    if invitation.accepted_at is not None or invitation.cancelled_at is not None:
        raise InvitationError("This invitation is no longer open.", code="invitation_closed")


def _audit_invitation(
    action: str,
    invitation: Invitation,
    *,
    request: HttpRequest | None,
    actor: Actor,
) -> None:
    audit_record(
        action=action,
        org=invitation.org,
        request=request,
        actor=actor,
        target=invitation,
        target_label=invitation.email,
        details={"email": invitation.email, "role": invitation.role},
    )


@transaction.atomic
def invitation_resend(
    *,
    invitation: Invitation,
    actor: Actor,
    request: HttpRequest | None = None,
) -> Invitation:
    """Email the invitation again with a fresh link and a fresh 7-day expiry.

    Only a hash is stored, so the old link cannot be re-sent: it stops working. The
    invitation now stands on the authority of whoever re-sent it (a member or a key).
    """
    _check_can_touch_invitation(invitation, actor)
    now = timezone.now()
    token = new_invitation_token()
    invitation.token_hash = invitation_token_hash(token)
    invitation.sent_at = now
    invitation.expires_at = now + INVITATION_TTL
    invitation.invited_by = actor.user
    invitation.invited_by_key = actor.api_key
    invitation.save(
        update_fields=["token_hash", "sent_at", "expires_at", "invited_by", "invited_by_key"]
    )
    _invitation_send(invitation=invitation, token=token, actor=actor)
    _audit_invitation("invitation.resent", invitation, request=request, actor=actor)
    return invitation


@transaction.atomic
def invitation_cancel(
    *,
    invitation: Invitation,
    actor: Actor,
    request: HttpRequest | None = None,
) -> Invitation:
    """Close an open invitation: its link stops working at once."""
    _check_can_touch_invitation(invitation, actor)
    invitation.cancelled_at = timezone.now()
    invitation.save(update_fields=["cancelled_at"])
    _audit_invitation("invitation.cancelled", invitation, request=request, actor=actor)
    return invitation


@transaction.atomic
def invitation_accept(
    *,
    user: User,
    token: str | None = None,
    invitation: Invitation | None = None,
    request: HttpRequest | None = None,
) -> Membership:
    """Turn an open invitation into a membership of `user`.

    Invariants: usable once, before it expires, only by the user whose email it names
    (InvitationError otherwise). If the user is already a member, the invitation is used
    up and the existing membership is returned unchanged.
    """
    if (token is None) == (invitation is None):
        raise TypeError("Pass exactly one of token or invitation.")
    lookup: dict[str, Any] = (
        {"token_hash": invitation_token_hash(token)}
        if token is not None
        else {"pk": getattr(invitation, "pk", None)}
    )
    invitation = (
        Invitation.objects.select_for_update().select_related("org").filter(**lookup).first()
    )
    if invitation is None or not invitation.is_usable:
        raise InvitationError(
            "This invitation is invalid, expired or already used.", code="invitation_invalid"
        )
    if normalize_email(user.email) != invitation.email:
        raise InvitationError(
            "This invitation was sent to another email address.", code="invitation_not_yours"
        )
    org = invitation.org
    _lock_org(org)
    if invitation.invited_by_id is not None:
        # The inviter's powers are judged now, not when they sent it: an admin who has since
        # been removed or demoted cannot bring anyone (or themselves) back in.
        inviter = Membership.objects.filter(org=org, user_id=invitation.invited_by_id).first()
        if inviter is None or not roles.can_assign(inviter, invitation.role):
            raise InvitationError(
                "The person who sent this invitation can no longer invite with this role. "
                "Ask an admin of the organisation for a new invitation.",
                code="invitation_invalid",
            )
    if invitation.invited_by_key_id is not None and not _key_still_stands(
        invitation.invited_by_key
    ):
        # What an API key did on behalf of the org ends with the key (docs/product.md#reliability).
        raise InvitationError(
            "The API key that sent this invitation has since been revoked, has expired or "
            "was deleted. Ask an admin of the organisation for a new invitation.",
            code="invitation_invalid",
        )
    membership, created = Membership.objects.get_or_create(
        org=org, user=user, defaults={"role": invitation.role}
    )
    invitation.accepted_at = timezone.now()
    invitation.accepted_by = user
    invitation.save(update_fields=["accepted_at", "accepted_by"])
    audit_record(
        action="invitation.accepted",
        org=org,
        request=request,
        actor=Actor.for_user(user),
        target=membership,
        target_label=user.email,
        details={
            "email": invitation.email,
            "role": membership.role,
            "invitation": invitation.public_id,
            "already_member": not created,
        },
    )
    if created:
        emit(org, "member.joined", {"member": _member_data(membership)})
    return membership


def _key_still_stands(key: Any) -> bool:
    """Whether the key (or, once it was rotated, its successor) is still usable (ADR 0079).

    A rotation hands the key's authority on to its successor, and deleting a rotated key
    afterwards is housekeeping. A revocation says the key is not trusted: it ends what
    the key did, rotated or not (rotate, then revoke the old key, is how a leak is met).
    Expiry or deletion of a key that was never rotated ends it too.
    """
    now = timezone.now()
    for _ in range(32):  # a chain of rotations, never a cycle
        if key is None:
            return False
        # Deleting marks a key revoked at the same instant; an earlier revocation is the
        # org's own word.
        if key.revoked_at is not None and key.revoked_at != key.deleted_at:
            return False
        if key.deleted_at is None and key.is_usable(now):
            return True
        if key.rotated_at is None:
            return False
        key = key.successors.order_by("created_at").first()
    return False


@transaction.atomic
def membership_change_role(
    *,
    membership: Membership,
    role: str,
    actor: Actor,
    request: HttpRequest | None = None,
) -> Membership:
    """Give a member another role.

    Invariants: owners change anyone's role; admins only promote or keep `member`s (up to
    admin); nobody changes their own role here; the last owner cannot be demoted.
    """
    _check_role(role)
    org = membership.org
    member = _acting_membership(actor, org)
    _lock_org(org)
    membership.refresh_from_db(fields=["role"])
    if member is not None:
        # Judge the actor by their role now, not as loaded before the lock.
        member.refresh_from_db(fields=["role"])
    if member is not None and member.pk == membership.pk:
        raise MembershipError(
            "You cannot change your own role; ask another owner, or transfer ownership.",
            code="forbidden",
        )
    if not roles.can_manage(member, membership) or not roles.can_assign(member, role):
        raise MembershipError("Your role does not allow this change.", code="forbidden")
    if membership.role == role:
        return membership
    if membership.role == Role.OWNER and _owner_count(org) <= 1:
        raise MembershipError("The last owner cannot be demoted.", code="last_owner")
    old_role = membership.role
    membership.role = role
    membership.save(update_fields=["role"])
    audit_record(
        action="member.role_changed",
        org=org,
        request=request,
        actor=actor,
        target=membership,
        target_label=membership.user.email,
        details={"email": membership.user.email, "from": old_role, "to": role},
    )
    return membership


@transaction.atomic
def membership_remove(
    *,
    membership: Membership,
    actor: Actor,
    request: HttpRequest | None = None,
) -> None:
    """Remove someone else from the org. Owners remove anyone, admins remove `member`s;
    the last owner cannot be removed; leaving oneself goes through `membership_leave`."""
    org = membership.org
    member = _acting_membership(actor, org)
    _lock_org(org)
    membership.refresh_from_db(fields=["role"])
    if member is not None:
        # Judge the actor by their role now, not as loaded before the lock.
        member.refresh_from_db(fields=["role"])
    if member is not None and member.pk == membership.pk:
        raise MembershipError("To leave the organisation, use “Leave” instead.", code="forbidden")
    if not roles.can_manage(member, membership):
        raise MembershipError("Your role does not allow removing this member.", code="forbidden")
    if membership.role == Role.OWNER and _owner_count(org) <= 1:
        raise MembershipError("The last owner cannot be removed.", code="last_owner")
    _membership_delete(membership=membership, action="member.removed", actor=actor, request=request)


@transaction.atomic
def membership_leave(*, membership: Membership, request: HttpRequest | None = None) -> None:
    """The member leaves the org. The last owner cannot leave (transfer ownership or
    delete the org instead)."""
    org = membership.org
    _lock_org(org)
    membership.refresh_from_db(fields=["role"])
    if membership.role == Role.OWNER and _owner_count(org) <= 1:
        raise MembershipError(
            "You are the last owner: transfer ownership or delete the organisation first.",
            code="last_owner",
        )
    _membership_delete(
        membership=membership,
        action="member.left",
        actor=Actor.for_member(membership),
        request=request,
    )


def _membership_delete(
    *,
    membership: Membership,
    action: str,
    actor: Actor,
    request: HttpRequest | None,
) -> None:
    audit_record(
        action=action,
        org=membership.org,
        request=request,
        actor=actor,
        target=membership,
        target_label=membership.user.email,
        details={"email": membership.user.email, "role": membership.role},
    )
    emit(
        membership.org,
        "member.removed",
        {
            "member": _member_data(membership),
            "how": "left" if action == "member.left" else "removed",
        },
    )
    membership.delete()


def _member_data(membership: Membership) -> dict[str, Any]:
    """What a webhook tells of a member: ids, email and role."""
    return {
        "id": membership.public_id,
        "user": {"email": membership.user.email},
        "role": membership.role,
    }


@transaction.atomic
def ownership_transfer(
    *,
    org: Organization,
    to_membership: Membership,
    actor: Actor,
    request: HttpRequest | None = None,
) -> Membership:
    """Make another member the owner; the acting owner becomes an admin (ADR 0021).

    Invariants: only an owner (a person, not a key) transfers, to another member of the
    same org; the org has an owner at every moment. Returns the new owner's membership.
    """
    member = _acting_membership(actor, org)
    _check_same_org(org, to_membership)
    _lock_org(org)
    if member is not None:
        member.refresh_from_db(fields=["role"])
    to_membership.refresh_from_db(fields=["role"])
    if member is None or member.role != Role.OWNER:
        raise MembershipError("Only an owner can transfer ownership.", code="forbidden")
    if to_membership.pk == member.pk:
        raise MembershipError("Choose another member to transfer ownership to.", code="invalid")
    if to_membership.role == Role.OWNER:
        raise MembershipError(f"{to_membership.user.email} is already an owner.", code="invalid")
    previous_role = to_membership.role
    to_membership.role = Role.OWNER
    to_membership.save(update_fields=["role"])
    member.role = Role.ADMIN
    member.save(update_fields=["role"])
    audit_record(
        action="org.ownership_transferred",
        org=org,
        request=request,
        actor=actor,
        target=to_membership,
        target_label=to_membership.user.email,
        details={
            "from": actor.label,
            "to": to_membership.user.email,
            "new_owner_previous_role": previous_role,
            "previous_owner_role": Role.ADMIN,
        },
    )
    return to_membership
