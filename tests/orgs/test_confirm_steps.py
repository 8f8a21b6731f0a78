"""Member and ownership actions ask first (config.confirm, ADR 0081): a GET or an ask POST
shows the confirm step and changes nothing; the confirm POST performs."""

from __future__ import annotations

from django.test import Client

from accounts.models import User
from orgs.models import Membership, Organization, Role
from tests.conftest import signed_in_client
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory


def _membership(user: User, org: Organization) -> Membership:
    return Membership.objects.get(user=user, org=org)


def test_make_owner_shows_what_happens_and_to_whom_before_it_happens(
    owner_client: Client, org: Organization, member_user: User
) -> None:
    target = _membership(member_user, org)
    url = f"/o/{org.slug}/members/{target.public_id}/role/"
    # The members table's button asks first.
    step = owner_client.post(url, {"role": "owner", "confirm_ask": "1"})
    html = step.content.decode()
    assert step.status_code == 200
    assert "Make member@acme.test an owner?" in html
    assert "deleting the organisation" in html and 'id="confirm-role"' in html
    assert '<input type="hidden" name="role" value="owner"' in html
    # A link (GET) shows the same step.
    assert 'id="confirm-role"' in owner_client.get(url, {"role": "owner"}).content.decode()
    target.refresh_from_db()
    assert target.role == Role.MEMBER
    # Confirming performs.
    done = owner_client.post(url, {"role": "owner"})
    assert done.status_code == 302
    target.refresh_from_db()
    assert target.role == Role.OWNER


def test_the_role_step_explains_a_change_the_actor_cannot_make(
    admin_client_: Client, org: Organization, owner: User, admin_user: User
) -> None:
    owner_membership = _membership(owner, org)
    html = admin_client_.get(
        f"/o/{org.slug}/members/{owner_membership.public_id}/role/", {"role": "member"}
    ).content.decode()
    assert 'id="confirm-blocked"' in html and 'id="confirm-role"' not in html
    mine = _membership(admin_user, org)
    html = admin_client_.get(
        f"/o/{org.slug}/members/{mine.public_id}/role/", {"role": "member"}
    ).content.decode()
    assert "cannot change your own role" in html


def test_transfer_ownership_asks_first_and_a_foreign_member_is_a_404(
    owner_client: Client, org: Organization, owner: User, member_user: User
) -> None:
    target = _membership(member_user, org)
    url = f"/o/{org.slug}/settings/transfer/"
    step = owner_client.post(url, {"membership": target.public_id, "confirm_ask": "1"})
    html = step.content.decode()
    assert step.status_code == 200
    assert "Transfer ownership of Acme to member@acme.test?" in html
    assert "You become an admin" in html
    target.refresh_from_db()
    assert target.role == Role.MEMBER
    stranger = MembershipFactory.create(
        org=OrganizationFactory.create(slug="globex"), user=UserFactory.create()
    )
    assert owner_client.get(url, {"membership": stranger.public_id}).status_code == 404
    assert owner_client.post(url, {"membership": stranger.public_id}).status_code == 404
    assert owner_client.post(url, {"membership": target.public_id}).status_code == 302
    target.refresh_from_db()
    assert target.role == Role.OWNER and _membership(owner, org).role == Role.ADMIN


def test_transfer_without_a_member_is_refused_with_an_error_summary(
    owner_client: Client, org: Organization, owner: User
) -> None:
    response = owner_client.post(f"/o/{org.slug}/settings/transfer/", {"membership": ""})
    assert response.status_code == 400
    assert b"error-summary" in response.content
    assert _membership(owner, org).role == Role.OWNER


def test_the_last_owner_is_told_before_leaving(owner_client: Client, org: Organization) -> None:
    html = owner_client.get(f"/o/{org.slug}/members/leave/").content.decode()
    assert "You are the last owner" in html and 'id="confirm-leave"' not in html


def test_welcome_and_key_list_end_a_name_with_one_full_stop(owner: User) -> None:
    org = OrganizationFactory.create(name="Demo Inc.", slug="demo")
    MembershipFactory.create(org=org, user=owner, role=Role.OWNER)
    html = signed_in_client(owner).get("/o/demo/api-keys/").content.decode()
    assert "on behalf of Demo Inc. A key" in html and "Demo Inc.." not in html


def test_a_member_is_offered_to_view_members_not_to_manage_them(
    member_client: Client, owner_client: Client, org: Organization
) -> None:
    assert "View members →" in member_client.get(f"/o/{org.slug}/").content.decode()
    assert "Manage members" not in member_client.get(f"/o/{org.slug}/").content.decode()
    assert "Manage members →" in owner_client.get(f"/o/{org.slug}/").content.decode()
