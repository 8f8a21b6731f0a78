"""Org services: creation, the role rules of docs/product.md#organisations, invitations,
audit events."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from orgs import services
from orgs.actors import Actor
from orgs.models import AuditEvent, Invitation, Membership, Organization, Role
from orgs.services import InvitationError, MembershipError, OrgError
from orgs.tokens import invitation_token_hash
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

TOKEN_RE = re.compile(r"/invitations/([A-Za-z0-9_-]+)/")


def _actions(org: Organization) -> list[str]:
    return list(AuditEvent.objects.filter(org=org).values_list("action", flat=True))


def _invite(
    capture: Any, *, org: Organization, email: str, role: str, by: User
) -> tuple[Invitation, str]:
    """Invite and return the invitation with the token read from the sent email."""
    with capture(execute=True):
        invitation = services.member_invite(
            org=org, email=email, role=role, actor=Actor.for_user(by)
        )
    match = TOKEN_RE.search(str(mail.outbox[-1].body))
    assert match is not None
    return invitation, match.group(1)


def _m(user: User, org: Organization) -> Membership:
    return Membership.objects.get(user=user, org=org)


# --- org_create ------------------------------------------------------------------------


def test_org_create_makes_the_creator_owner_and_records_the_event(user: User) -> None:
    org = services.org_create(name="  Initech  ", slug="Initech", owner=user)
    assert (org.name, org.slug, org.plan, org.kyc_status) == (
        "Initech",
        "initech",
        "starter",
        "not_submitted",
    )
    assert _m(user, org).role == Role.OWNER
    event = AuditEvent.objects.get(org=org, action="org.created")
    assert event.actor_user == user
    assert event.target_id == org.public_id


def test_org_create_refuses_a_taken_or_invalid_slug(user: User, org: Organization) -> None:
    with pytest.raises(OrgError) as taken:
        services.org_create(name="Other", slug="acme", owner=user)
    assert taken.value.code == "slug_taken"
    for bad in ["a", "-acme", "acme-", "ac me", "ac_me", "x" * 51, "ac\x00me", "é"]:
        with pytest.raises(OrgError) as invalid:
            services.org_create(name="Other", slug=bad, owner=user)
        assert invalid.value.code == "slug_invalid"
    assert not Membership.objects.filter(user=user).exists()


def test_org_create_takes_plan_and_kyc(user: User) -> None:
    org = services.org_create(
        name="Big", slug="big", owner=user, plan="enterprise", kyc_status="approved"
    )
    assert (org.plan, org.kyc_status) == ("enterprise", "approved")
    with pytest.raises(OrgError):
        services.org_create(name="Bad", slug="bad", owner=user, plan="platinum")


# --- invitations -------------------------------------------------------------------------


def test_invitation_email_links_to_the_token_whose_hash_alone_is_stored(
    owner: User, org: Organization, django_capture_on_commit_callbacks: Any
) -> None:
    invitation, token = _invite(
        django_capture_on_commit_callbacks,
        org=org,
        email=" New@Example.COM ",
        role="admin",
        by=owner,
    )
    assert invitation.email == "new@example.com"
    assert invitation.role == Role.ADMIN
    assert invitation.token_hash == invitation_token_hash(token)
    assert len(token) >= 43  # 32 random bytes
    assert not Invitation.objects.filter(token_hash=token).exists()
    message = mail.outbox[-1]
    assert message.to == ["new@example.com"]
    assert "Acme" in message.subject
    html = str(getattr(message, "alternatives")[0][0])
    assert f"/invitations/{token}/" in html
    assert invitation.expires_at - invitation.sent_at == timedelta(days=7)
    event = AuditEvent.objects.get(org=org, action="member.invited")
    assert token not in str(event.details) and event.details == {
        "email": "new@example.com",
        "role": "admin",
    }


def test_invite_refuses_members_duplicates_and_roles_above_the_inviter(
    owner: User, admin_user: User, member_user: User, org: Organization
) -> None:
    with pytest.raises(MembershipError) as by_member:
        services.member_invite(
            org=org, email="x@example.com", role="member", actor=Actor.for_user(member_user)
        )
    assert by_member.value.code == "forbidden"
    with pytest.raises(MembershipError) as owner_by_admin:
        services.member_invite(
            org=org, email="x@example.com", role="owner", actor=Actor.for_user(admin_user)
        )
    assert owner_by_admin.value.code == "forbidden"
    with pytest.raises(MembershipError) as already:
        services.member_invite(
            org=org, email="MEMBER@acme.test", role="member", actor=Actor.for_user(owner)
        )
    assert already.value.code == "already_member"
    services.member_invite(
        org=org, email="x@example.com", role="admin", actor=Actor.for_user(admin_user)
    )
    with pytest.raises(MembershipError) as twice:
        services.member_invite(
            org=org, email="x@example.com", role="member", actor=Actor.for_user(owner)
        )
    assert twice.value.code == "already_invited"
    outsider = UserFactory.create()
    with pytest.raises(MembershipError):
        services.member_invite(
            org=org, email="y@example.com", role="member", actor=Actor.for_user(outsider)
        )
    # Only owners invite owners.
    services.member_invite(
        org=org, email="co@example.com", role="owner", actor=Actor.for_user(owner)
    )


def test_an_expired_open_invitation_is_replaced_by_a_new_one(
    owner: User, org: Organization
) -> None:
    old = services.member_invite(
        org=org, email="x@example.com", role="member", actor=Actor.for_user(owner)
    )
    Invitation.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    new = services.member_invite(
        org=org, email="x@example.com", role="admin", actor=Actor.for_user(owner)
    )
    old.refresh_from_db()
    assert old.cancelled_at is not None and new.is_usable


def test_accepting_makes_a_membership_once_and_only_for_the_invited_email(
    owner: User, org: Organization, django_capture_on_commit_callbacks: Any
) -> None:
    invitation, token = _invite(
        django_capture_on_commit_callbacks, org=org, email="bob@example.com", role="admin", by=owner
    )
    mallory = UserFactory.create(email="mallory@example.com")
    with pytest.raises(InvitationError) as not_yours:
        services.invitation_accept(token=token, user=mallory)
    assert not_yours.value.code == "invitation_not_yours"
    assert not Membership.objects.filter(user=mallory).exists()

    bob = UserFactory.create(email="bob@example.com")
    membership = services.invitation_accept(token=token, user=bob)
    assert (membership.org, membership.role) == (org, Role.ADMIN)
    invitation.refresh_from_db()
    assert invitation.accepted_by == bob and invitation.accepted_at is not None
    assert "invitation.accepted" in _actions(org)

    with pytest.raises(InvitationError) as reused:
        services.invitation_accept(token=token, user=bob)
    assert reused.value.code == "invitation_invalid"
    with pytest.raises(InvitationError):
        services.invitation_accept(token="not-a-token", user=bob)


def test_expired_and_cancelled_invitations_cannot_be_accepted(
    owner: User, org: Organization, django_capture_on_commit_callbacks: Any
) -> None:
    bob = UserFactory.create(email="bob@example.com")
    invitation, token = _invite(
        django_capture_on_commit_callbacks, org=org, email=bob.email, role="member", by=owner
    )
    Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now())
    with pytest.raises(InvitationError):
        services.invitation_accept(token=token, user=bob)

    carol = UserFactory.create(email="carol@example.com")
    invitation, token = _invite(
        django_capture_on_commit_callbacks, org=org, email=carol.email, role="member", by=owner
    )
    services.invitation_cancel(invitation=invitation, actor=Actor.for_member(_m(owner, org)))
    with pytest.raises(InvitationError):
        services.invitation_accept(token=token, user=carol)
    assert "invitation.cancelled" in _actions(org)
    assert not Membership.objects.filter(user__in=[bob, carol]).exists()


def test_resending_issues_a_new_link_and_voids_the_old_one(
    owner: User, org: Organization, django_capture_on_commit_callbacks: Any
) -> None:
    invitation, old_token = _invite(
        django_capture_on_commit_callbacks,
        org=org,
        email="bob@example.com",
        role="member",
        by=owner,
    )
    Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now())
    invitation.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        services.invitation_resend(invitation=invitation, actor=Actor.for_member(_m(owner, org)))
    match = TOKEN_RE.search(str(mail.outbox[-1].body))
    assert match is not None
    new_token = match.group(1)
    assert new_token != old_token
    invitation.refresh_from_db()
    assert invitation.is_usable
    bob = UserFactory.create(email="bob@example.com")
    with pytest.raises(InvitationError):
        services.invitation_accept(token=old_token, user=bob)
    assert services.invitation_accept(token=new_token, user=bob).role == Role.MEMBER
    assert "invitation.resent" in _actions(org)


def test_admins_cannot_manage_owner_invitations_and_members_none(
    owner: User, admin_user: User, member_user: User, org: Organization
) -> None:
    invitation = services.member_invite(
        org=org, email="co@example.com", role="owner", actor=Actor.for_user(owner)
    )
    for actor in (_m(admin_user, org), _m(member_user, org)):
        with pytest.raises(MembershipError):
            services.invitation_cancel(invitation=invitation, actor=Actor.for_member(actor))
        with pytest.raises(MembershipError):
            services.invitation_resend(invitation=invitation, actor=Actor.for_member(actor))
    invitation.refresh_from_db()
    assert invitation.is_usable


def test_services_refuse_an_actor_from_another_org(
    owner: User, org: Organization, other_org: Organization
) -> None:
    outsider = MembershipFactory.create(org=other_org, role=Role.OWNER)
    invitation = services.member_invite(
        org=org, email="x@example.com", role="member", actor=Actor.for_user(owner)
    )
    with pytest.raises(MembershipError):
        services.invitation_cancel(invitation=invitation, actor=Actor.for_member(outsider))
    with pytest.raises(MembershipError):
        services.membership_remove(membership=_m(owner, org), actor=Actor.for_member(outsider))
    with pytest.raises(MembershipError):
        services.membership_change_role(
            membership=_m(owner, org), role="member", actor=Actor.for_member(outsider)
        )


# --- roles ----------------------------------------------------------------------------


def test_role_changes_follow_spec_section_4(
    owner: User, admin_user: User, member_user: User, org: Organization
) -> None:
    owner_m, admin_m, member_m = _m(owner, org), _m(admin_user, org), _m(member_user, org)
    other_admin = MembershipFactory.create(org=org, role=Role.ADMIN)

    # Members change nothing.
    with pytest.raises(MembershipError):
        services.membership_change_role(
            membership=admin_m, role="member", actor=Actor.for_member(member_m)
        )
    # Admins: members only, up to admin; never owners or other admins.
    with pytest.raises(MembershipError):
        services.membership_change_role(
            membership=other_admin, role="member", actor=Actor.for_member(admin_m)
        )
    with pytest.raises(MembershipError):
        services.membership_change_role(
            membership=owner_m, role="member", actor=Actor.for_member(admin_m)
        )
    with pytest.raises(MembershipError):
        services.membership_change_role(
            membership=member_m, role="owner", actor=Actor.for_member(admin_m)
        )
    services.membership_change_role(
        membership=member_m, role="admin", actor=Actor.for_member(admin_m)
    )
    assert _m(member_user, org).role == Role.ADMIN
    # Owners: anyone, any role.
    services.membership_change_role(
        membership=other_admin, role="member", actor=Actor.for_member(owner_m)
    )
    services.membership_change_role(
        membership=admin_m, role="owner", actor=Actor.for_member(owner_m)
    )
    assert _m(admin_user, org).role == Role.OWNER
    event = AuditEvent.objects.filter(org=org, action="member.role_changed").first()
    assert event is not None and event.details["to"] == "owner"


def test_nobody_changes_their_own_role(owner: User, admin_user: User, org: Organization) -> None:
    MembershipFactory.create(org=org, role=Role.OWNER)
    admin_m = _m(admin_user, org)
    with pytest.raises(MembershipError):
        services.membership_change_role(
            membership=admin_m, role="member", actor=Actor.for_member(admin_m)
        )
    owner_m = _m(owner, org)
    with pytest.raises(MembershipError):
        services.membership_change_role(
            membership=owner_m, role="admin", actor=Actor.for_member(owner_m)
        )


def test_the_last_owner_cannot_be_demoted_removed_or_leave(owner: User, org: Organization) -> None:
    owner_m = _m(owner, org)
    with pytest.raises(MembershipError) as leave:
        services.membership_leave(membership=owner_m)
    assert leave.value.code == "last_owner"
    co_owner = MembershipFactory.create(org=org, role=Role.OWNER)
    stale_co_owner = Membership.objects.get(pk=co_owner.pk)
    # Two owners demoting each other at once: the first wins, the second is refused
    # because its actor is no longer an owner, so one owner always remains.
    services.membership_change_role(
        membership=co_owner, role="admin", actor=Actor.for_member(owner_m)
    )
    with pytest.raises(MembershipError):
        services.membership_change_role(
            membership=owner_m, role="admin", actor=Actor.for_member(stale_co_owner)
        )
    with pytest.raises(MembershipError):
        services.membership_remove(membership=owner_m, actor=Actor.for_member(stale_co_owner))
    # Neither can an API key (admin powers) demote or remove the last owner.
    with pytest.raises(MembershipError):
        services.membership_change_role(membership=owner_m, role="admin", actor=Actor.system())
    with pytest.raises(MembershipError):
        services.membership_remove(membership=owner_m, actor=Actor.system())
    assert _m(owner, org).role == Role.OWNER
    with pytest.raises(MembershipError):
        services.membership_leave(membership=owner_m)


def test_a_second_owner_can_leave_and_be_removed(owner: User, org: Organization) -> None:
    co_owner = MembershipFactory.create(org=org, role=Role.OWNER)
    services.membership_leave(membership=co_owner)
    assert "member.left" in _actions(org)
    co_owner = MembershipFactory.create(org=org, role=Role.OWNER)
    services.membership_remove(membership=co_owner, actor=Actor.for_member(_m(owner, org)))
    assert "member.removed" in _actions(org)
    assert list(Membership.objects.filter(org=org).values_list("role", flat=True)) == ["owner"]


def test_removal_rules(owner: User, admin_user: User, member_user: User, org: Organization) -> None:
    admin_m, member_m = _m(admin_user, org), _m(member_user, org)
    other_admin = MembershipFactory.create(org=org, role=Role.ADMIN)
    with pytest.raises(MembershipError):
        services.membership_remove(membership=other_admin, actor=Actor.for_member(admin_m))
    with pytest.raises(MembershipError):
        services.membership_remove(membership=_m(owner, org), actor=Actor.for_member(admin_m))
    with pytest.raises(MembershipError):
        services.membership_remove(membership=admin_m, actor=Actor.for_member(member_m))
    with pytest.raises(MembershipError):
        services.membership_remove(membership=admin_m, actor=Actor.for_member(admin_m))
    services.membership_remove(membership=member_m, actor=Actor.for_member(admin_m))
    assert not Membership.objects.filter(user=member_user).exists()
    event = AuditEvent.objects.get(org=org, action="member.removed")
    assert event.actor_user == admin_user and event.target_label == "member@acme.test"


def test_ownership_transfer_makes_the_previous_owner_an_admin(
    owner: User, admin_user: User, member_user: User, org: Organization, other_org: Organization
) -> None:
    owner_m = _m(owner, org)
    with pytest.raises(MembershipError):
        services.ownership_transfer(
            org=org, to_membership=_m(owner, org), actor=Actor.for_member(_m(admin_user, org))
        )
    with pytest.raises(MembershipError):
        services.ownership_transfer(org=org, to_membership=owner_m, actor=Actor.for_member(owner_m))
    stranger = MembershipFactory.create(org=other_org)
    with pytest.raises(MembershipError):
        services.ownership_transfer(
            org=org, to_membership=stranger, actor=Actor.for_member(owner_m)
        )

    services.ownership_transfer(
        org=org, to_membership=_m(member_user, org), actor=Actor.for_member(owner_m)
    )
    assert _m(member_user, org).role == Role.OWNER
    assert _m(owner, org).role == Role.ADMIN
    event = AuditEvent.objects.get(org=org, action="org.ownership_transferred")
    assert event.details["from"] == owner.email and event.details["to"] == member_user.email


# --- settings and deletion -------------------------------------------------------------


def test_settings_update_records_only_what_changed(
    owner: User, admin_user: User, org: Organization, other_org: Organization
) -> None:
    TOTPDevice.objects.create(user=owner, name="app", confirmed=True)
    services.org_update_settings(
        org=org,
        name="Acme Ltd",
        slug="acme-ltd",
        require_two_factor=True,
        actor=Actor.for_member(_m(owner, org)),
    )
    org.refresh_from_db()
    assert (org.name, org.slug, org.require_two_factor) == ("Acme Ltd", "acme-ltd", True)
    event = AuditEvent.objects.get(org=org, action="org.settings_changed")
    assert event.details == {
        "changes": {
            "name": {"from": "Acme", "to": "Acme Ltd"},
            "slug": {"from": "acme", "to": "acme-ltd"},
            "require_two_factor": {"from": False, "to": True},
        }
    }
    with pytest.raises(OrgError) as taken:
        services.org_update_settings(
            org=org,
            name="Acme",
            slug="globex",
            require_two_factor=True,
            actor=Actor.for_member(_m(owner, org)),
        )
    assert taken.value.code == "slug_taken"


def test_an_owner_without_two_factor_cannot_require_it(owner: User, org: Organization) -> None:
    TOTPDevice.objects.create(user=owner, name="pending", confirmed=False)
    with pytest.raises(OrgError) as refused:
        services.org_update_settings(
            org=org,
            name="Acme",
            slug="acme",
            require_two_factor=True,
            actor=Actor.for_member(_m(owner, org)),
        )
    assert refused.value.code == "two_factor_required"
    org.refresh_from_db()
    assert org.require_two_factor is False


def test_admins_change_settings_but_not_the_two_factor_policy(
    admin_user: User, member_user: User, org: Organization
) -> None:
    admin_m = _m(admin_user, org)
    services.org_update_settings(
        org=org,
        name="Acme 2",
        slug="acme",
        require_two_factor=False,
        actor=Actor.for_member(admin_m),
    )
    with pytest.raises(OrgError):
        services.org_update_settings(
            org=org,
            name="Acme 2",
            slug="acme",
            require_two_factor=True,
            actor=Actor.for_member(admin_m),
        )
    with pytest.raises(OrgError):
        services.org_update_settings(
            org=org,
            name="Mine",
            slug="acme",
            require_two_factor=False,
            actor=Actor.for_member(_m(member_user, org)),
        )
    org.refresh_from_db()
    assert (org.name, org.require_two_factor) == ("Acme 2", False)


def test_only_an_owner_deletes_the_org_after_typing_its_slug(
    owner: User, admin_user: User, org: Organization
) -> None:
    with pytest.raises(OrgError):
        services.org_delete(
            org=org, actor=Actor.for_member(_m(admin_user, org)), confirm_slug="acme"
        )
    with pytest.raises(OrgError):
        services.org_delete(org=org, actor=Actor.for_member(_m(owner, org)), confirm_slug="acm")
    services.member_invite(
        org=org, email="x@example.com", role="member", actor=Actor.for_user(owner)
    )
    org_id = org.pk
    services.org_delete(org=org, actor=Actor.for_member(_m(owner, org)), confirm_slug="acme")
    assert not Organization.objects.filter(pk=org_id).exists()
    assert not Membership.objects.filter(org_id=org_id).exists()
    assert not Invitation.objects.filter(org_id=org_id).exists()
    event = AuditEvent.objects.get(org_id=org_id, action="org.deleted")
    assert event.details == {"slug": "acme", "name": "Acme"}


def test_an_invitation_from_a_removed_admin_no_longer_admits_anyone(
    owner: User, admin_user: User, org: Organization, django_capture_on_commit_callbacks: Any
) -> None:
    # The admin invites a second address of their own as admin, then is removed.
    _invitation, token = _invite(
        django_capture_on_commit_callbacks,
        org=org,
        email="admin.alt@example.com",
        role="admin",
        by=admin_user,
    )
    services.membership_remove(
        membership=_m(admin_user, org), actor=Actor.for_member(_m(owner, org))
    )
    alt = UserFactory.create(email="admin.alt@example.com")
    with pytest.raises(InvitationError) as refused:
        services.invitation_accept(token=token, user=alt)
    assert refused.value.code == "invitation_invalid"
    assert not Membership.objects.filter(user=alt).exists()


def test_an_invitation_from_a_demoted_admin_cannot_grant_admin(
    owner: User, admin_user: User, org: Organization, django_capture_on_commit_callbacks: Any
) -> None:
    _invitation, token = _invite(
        django_capture_on_commit_callbacks,
        org=org,
        email="dave@example.com",
        role="admin",
        by=admin_user,
    )
    services.membership_change_role(
        membership=_m(admin_user, org), role="member", actor=Actor.for_member(_m(owner, org))
    )
    dave = UserFactory.create(email="dave@example.com")
    with pytest.raises(InvitationError):
        services.invitation_accept(token=token, user=dave)
    # Invitations from an inviter who still holds the power keep working.
    _invitation, token = _invite(
        django_capture_on_commit_callbacks,
        org=org,
        email="erin@example.com",
        role="admin",
        by=owner,
    )
    erin = UserFactory.create(email="erin@example.com")
    assert services.invitation_accept(token=token, user=erin).role == Role.ADMIN


def test_settings_changes_and_deletion_drop_the_orgs_cached_keys(
    owner: User, org: Organization
) -> None:
    from apikeys import keycache
    from apikeys.authentication import resolve_api_key
    from apikeys.keys import key_digest
    from apikeys.services import apikey_create

    _key, secret = apikey_create(
        actor=Actor.system(), org=org, name="k", environment="test", scopes=["usage:read"]
    )
    resolve_api_key(secret)  # warm the cache
    assert keycache.resolve(key_digest(secret)) is not None
    services.org_update_settings(
        org=org,
        name="Acme 2",
        slug="acme-2",
        require_two_factor=False,
        actor=Actor.for_member(_m(owner, org)),
    )
    principal = resolve_api_key(secret)
    assert principal is not None and principal.org_slug == "acme-2"
    services.org_delete(org=org, actor=Actor.for_member(_m(owner, org)), confirm_slug="acme-2")
    assert keycache.resolve(key_digest(secret)) is None


def _invite_by_key(capture: Any, org: Organization, email: str) -> tuple[Any, str]:
    from apikeys.services import apikey_create

    key, _ = apikey_create(
        actor=Actor.system(),
        org=org,
        name="Provisioner",
        environment="test",
        scopes=["members:write"],
    )
    with capture(execute=True):
        invitation = services.member_invite(
            org=org, email=email, role="member", actor=Actor.for_key(key)
        )
    match = TOKEN_RE.search(str(mail.outbox[-1].body))
    assert match is not None
    assert invitation.invited_by_key == key
    return key, match.group(1)


@pytest.mark.parametrize("ending", ["revoked", "expired", "deleted"])
def test_an_invitation_sent_by_a_key_ends_with_the_key(
    ending: str, org: Organization, django_capture_on_commit_callbacks: Any
) -> None:
    from apikeys.models import ApiKey
    from apikeys.services import apikey_delete, apikey_revoke

    key, token = _invite_by_key(django_capture_on_commit_callbacks, org, "frank@example.com")
    if ending == "revoked":
        apikey_revoke(key=key, actor=Actor.system())
    elif ending == "deleted":
        apikey_delete(key=key, actor=Actor.system())
    else:
        ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    frank = UserFactory.create(email="frank@example.com")
    with pytest.raises(InvitationError) as refused:
        services.invitation_accept(token=token, user=frank)
    assert refused.value.code == "invitation_invalid"
    assert "API key" in refused.value.message
    assert not Membership.objects.filter(user=frank).exists()


def test_an_invitation_sent_by_a_key_survives_the_keys_rotation(
    org: Organization, django_capture_on_commit_callbacks: Any
) -> None:
    from apikeys.models import ApiKey
    from apikeys.services import apikey_rotate

    key, token = _invite_by_key(django_capture_on_commit_callbacks, org, "grace@example.com")
    apikey_rotate(
        key=key, grace=timedelta(0), actor=Actor.system()
    )  # the old key is expired at once
    key.refresh_from_db()
    assert not key.is_usable()
    grace = UserFactory.create(email="grace@example.com")
    assert services.invitation_accept(token=token, user=grace).role == "member"
    # ...but not once the successor is revoked too.
    _, token = _invite_by_key(django_capture_on_commit_callbacks, org, "heidi@example.com")
    sent_by = Invitation.objects.get(email="heidi@example.com").invited_by_key
    assert sent_by is not None
    successor, _ = apikey_rotate(key=sent_by, grace=timedelta(0), actor=Actor.system())
    ApiKey.objects.filter(pk=successor.pk).update(revoked_at=timezone.now())
    with pytest.raises(InvitationError):
        services.invitation_accept(token=token, user=UserFactory.create(email="heidi@example.com"))


@pytest.mark.parametrize("retired", ["deleted", "revoked"])
def test_a_rotated_key_deleted_keeps_its_invitations_and_revoked_voids_them(
    retired: str, org: Organization, django_capture_on_commit_callbacks: Any
) -> None:
    """Deleting the old key after a rotation is housekeeping; revoking it says the key is
    not trusted (a leak is met by rotate, then revoke), which voids what it sent."""
    from apikeys.services import apikey_delete, apikey_revoke, apikey_rotate

    key, token = _invite_by_key(django_capture_on_commit_callbacks, org, "judy@example.com")
    apikey_rotate(key=key, grace=timedelta(hours=1), actor=Actor.system())
    key.refresh_from_db()
    if retired == "deleted":
        apikey_delete(key=key, actor=Actor.system())
    else:
        apikey_revoke(key=key, actor=Actor.system())
    judy = UserFactory.create(email="judy@example.com")
    if retired == "deleted":
        assert services.invitation_accept(token=token, user=judy).role == "member"
    else:
        with pytest.raises(InvitationError):
            services.invitation_accept(token=token, user=judy)


def test_invitations_sent_by_a_key_before_it_was_recorded_get_it_from_the_audit_log(
    org: Organization, django_capture_on_commit_callbacks: Any
) -> None:
    from importlib import import_module

    from django.apps import apps

    from apikeys.services import apikey_revoke

    key, token = _invite_by_key(django_capture_on_commit_callbacks, org, "kim@example.com")
    Invitation.objects.filter(email="kim@example.com").update(invited_by_key=None)
    backfill = import_module("orgs.migrations.0004_backfill_invited_by_key").backfill
    backfill(apps, None)
    assert Invitation.objects.get(email="kim@example.com").invited_by_key == key
    apikey_revoke(key=key, actor=Actor.system())
    with pytest.raises(InvitationError):
        services.invitation_accept(token=token, user=UserFactory.create(email="kim@example.com"))


def test_an_invitation_resent_by_a_member_stands_on_the_members_authority(
    owner: User, org: Organization, django_capture_on_commit_callbacks: Any
) -> None:
    from apikeys.services import apikey_revoke

    key, _ = _invite_by_key(django_capture_on_commit_callbacks, org, "ivan@example.com")
    invitation = Invitation.objects.get(email="ivan@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        services.invitation_resend(invitation=invitation, actor=Actor.for_member(_m(owner, org)))
    match = TOKEN_RE.search(str(mail.outbox[-1].body))
    assert match is not None
    apikey_revoke(key=key, actor=Actor.system())
    ivan = UserFactory.create(email="ivan@example.com")
    assert services.invitation_accept(token=match.group(1), user=ivan).role == "member"
