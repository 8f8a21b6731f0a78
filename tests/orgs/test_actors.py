"""The one `Actor` value (ADR 0088): its constructors, what the audit log records of it,
how a request resolves to one, and that a person is judged by their own membership."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest
from django.test import RequestFactory

from accounts.models import User
from orgs import services
from orgs.actors import Actor
from orgs.models import ActorType, AuditEvent, Membership, Organization, Role
from orgs.services import MembershipError, audit_record
from tests.factories import ApiKeyFactory, MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db


def _request(user: Any, membership: Membership | None = None) -> HttpRequest:
    request = RequestFactory().post("/o/acme/members/", REMOTE_ADDR="203.0.113.9")
    request.user = user
    if membership is not None:
        request.membership = membership  # type: ignore[attr-defined]
    return request


def test_each_kind_has_its_label_and_audit_id(owner: User, org: Organization) -> None:
    key = ApiKeyFactory.create(org=org)
    person = Actor.for_user(owner)
    by_key = Actor.for_key(key, external_actor_id="crm-user-7")
    system = Actor.system()
    assert (person.kind, person.label, person.audit_id) == (ActorType.USER, owner.email, "")
    assert (by_key.kind, by_key.label, by_key.audit_id) == (
        ActorType.API_KEY,
        key.display,
        key.public_id,
    )
    assert by_key.external_actor_id == "crm-user-7" and by_key.user is None
    assert (system.kind, system.label, system.audit_id) == (ActorType.SYSTEM, "system", "")
    assert system.is_system and not person.is_system and not by_key.is_system
    assert Actor.system() == system


def test_platform_staff_are_people(staff_user: User) -> None:
    actor = Actor.for_user(staff_user)
    assert actor.kind == ActorType.USER and actor.label == staff_user.email


def test_a_member_actor_carries_the_membership(owner: User, org: Organization) -> None:
    membership = Membership.objects.get(org=org, user=owner)
    actor = Actor.for_member(membership)
    assert actor.user == owner and actor.membership == membership
    assert actor.kind == ActorType.USER


def test_an_actor_is_immutable_and_its_fields_agree_with_its_kind(
    owner: User, member_user: User, org: Organization
) -> None:
    actor = Actor.for_user(owner)
    with pytest.raises(dataclasses.FrozenInstanceError):
        actor.user = member_user  # type: ignore[misc]
    key = ApiKeyFactory.create(org=org)
    with pytest.raises(ValueError):
        Actor(ActorType.USER)
    with pytest.raises(ValueError):
        Actor(ActorType.API_KEY, user=owner)
    with pytest.raises(ValueError):
        Actor(ActorType.USER, user=owner, api_key=key)
    with pytest.raises(ValueError):
        Actor(ActorType.SYSTEM, external_actor_id="crm-user-7")
    with pytest.raises(ValueError):
        # Someone else's membership never passes for the actor's own.
        Actor.for_user(owner, membership=Membership.objects.get(org=org, user=member_user))


def test_a_request_resolves_to_its_signed_in_person_else_the_system(
    owner: User, member_user: User, org: Organization
) -> None:
    own = Membership.objects.get(org=org, user=owner)
    theirs = Membership.objects.get(org=org, user=member_user)
    assert Actor.for_request(None) == Actor.system()
    assert Actor.for_request(_request(AnonymousUser())) == Actor.system()
    # A key's request has no person: `request.user` is not a User.
    assert Actor.for_request(_request(object())) == Actor.system()
    signed_in = Actor.for_request(_request(owner))
    assert signed_in == Actor.for_user(owner) and signed_in.membership is None
    on_org_page = Actor.for_request(_request(owner, own))
    assert on_org_page.membership == own
    # A membership that is not the signed-in user's is not carried.
    assert Actor.for_request(_request(owner, theirs)).membership is None


def test_the_audit_log_records_the_actor_given_else_the_requests_person(
    owner: User, org: Organization
) -> None:
    key = ApiKeyFactory.create(org=org)
    request = _request(owner)
    by_key = audit_record(
        action="test.by_key",
        org=org,
        request=request,
        actor=Actor.for_key(key, external_actor_id="crm-user-7"),
    )
    assert (by_key.actor_type, by_key.actor_user, by_key.actor_id) == (
        ActorType.API_KEY,
        None,
        key.public_id,
    )
    assert (by_key.actor_label, by_key.external_actor_id) == (key.display, "crm-user-7")
    implied = audit_record(action="test.implied", org=org, request=request)
    assert (implied.actor_type, implied.actor_user, implied.actor_label) == (
        ActorType.USER,
        owner,
        owner.email,
    )
    system = audit_record(action="test.system", org=org)
    assert (system.actor_type, system.actor_label, system.actor_id) == (
        ActorType.SYSTEM,
        "system",
        "",
    )
    assert AuditEvent.objects.filter(org=org, action__startswith="test.").count() == 3


def test_a_person_without_a_carried_membership_is_judged_by_their_own(
    owner: User, member_user: User, org: Organization, other_org: Organization
) -> None:
    target = MembershipFactory.create(org=org, role=Role.MEMBER)
    outsider = UserFactory.create()
    MembershipFactory.create(org=other_org, user=outsider, role=Role.OWNER)
    # Not a member here: refused, never an admin's powers as a key would have.
    with pytest.raises(MembershipError) as refused:
        services.membership_remove(membership=target, actor=Actor.for_user(outsider))
    assert refused.value.code == "forbidden"
    with pytest.raises(MembershipError):
        services.membership_remove(membership=target, actor=Actor.for_user(member_user))
    services.membership_change_role(membership=target, role="admin", actor=Actor.for_user(owner))
    target.refresh_from_db()
    assert target.role == Role.ADMIN


def test_a_key_acts_only_in_its_own_org(org: Organization, other_org: Organization) -> None:
    """A key acts with an admin's powers in its own org, and with none in another."""
    target = MembershipFactory.create(org=org, role=Role.MEMBER)
    foreign = Actor.for_key(ApiKeyFactory.create(org=other_org))
    with pytest.raises(MembershipError) as refused:
        services.membership_change_role(membership=target, role="admin", actor=foreign)
    assert refused.value.code == "forbidden"
    own = Actor.for_key(ApiKeyFactory.create(org=org))
    services.membership_change_role(membership=target, role="admin", actor=own)
    target.refresh_from_db()
    assert target.role == Role.ADMIN


def test_a_dashboard_action_needs_a_signed_in_person(owner: User) -> None:
    """Views take `Actor.signed_in`: an anonymous request never borrows the system's
    powers (403), where `for_request` would fall back to the system for the audit log."""
    from django.core.exceptions import PermissionDenied

    assert Actor.signed_in(_request(owner)) == Actor.for_user(owner)
    for anonymous in (AnonymousUser(), object()):
        with pytest.raises(PermissionDenied):
            Actor.signed_in(_request(anonymous))


def test_platform_roles_are_given_from_the_command_line_only(staff_user: User, owner: User) -> None:
    from accounts.models import PlatformRole
    from accounts.services import AccountError, user_set_platform_role

    for actor in (Actor.for_user(staff_user), Actor.for_user(owner)):
        with pytest.raises(AccountError):
            user_set_platform_role(email=owner.email, role=PlatformRole.PLATFORM_OWNER, actor=actor)
    user = user_set_platform_role(
        email=owner.email, role=PlatformRole.PLATFORM_ADMIN, actor=Actor.system()
    )
    assert user.platform_role == PlatformRole.PLATFORM_ADMIN
