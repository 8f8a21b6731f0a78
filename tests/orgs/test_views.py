"""Org pages over HTTP: onboarding, home redirects, switcher, overview, members,
invitations, settings."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from orgs import services
from orgs.actors import Actor
from orgs.models import AuditEvent, Invitation, Membership, Organization, Role
from orgs.tenancy import SELECTED_ORG_COOKIE
from tests.conftest import signed_in_client, verified_client
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory

pytestmark = pytest.mark.django_db

TOKEN_RE = re.compile(r"/invitations/([A-Za-z0-9_-]+)/")


def _messages(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


# --- home, onboarding, switcher ---------------------------------------------------------


def test_anonymous_home_is_the_landing_page() -> None:
    response = Client().get("/")
    assert response.status_code == 200
    assert b"Access, handled." in response.content


def test_home_sends_a_user_without_orgs_to_onboarding(user: User) -> None:
    response = signed_in_client(user).get("/")
    assert response.status_code == 302 and response["Location"] == "/onboarding/"


def test_home_returns_to_the_selected_org_while_still_a_member(user: User) -> None:
    first = OrganizationFactory.create(name="Aardvark", slug="aardvark")
    second = OrganizationFactory.create(name="Zebra", slug="zebra")
    MembershipFactory.create(org=first, user=user)
    membership = MembershipFactory.create(org=second, user=user)
    client = signed_in_client(user)
    assert client.get("/")["Location"] == "/o/aardvark/"
    # Visiting an org page selects it.
    assert client.get("/o/zebra/").cookies[SELECTED_ORG_COOKIE].value == "zebra"
    assert client.get("/")["Location"] == "/o/zebra/"
    # No longer a member: back to the first org.
    membership.delete()
    assert client.get("/")["Location"] == "/o/aardvark/"
    # A cookie naming someone else's org is ignored.
    OrganizationFactory.create(name="Secret", slug="secret")
    client.cookies[SELECTED_ORG_COOKIE] = "secret"
    assert client.get("/")["Location"] == "/o/aardvark/"


def test_onboarding_creates_an_org_owned_by_the_user(user: User) -> None:
    client = signed_in_client(user)
    page = client.get("/onboarding/")
    assert page.status_code == 200 and b'name="name"' in page.content
    response = client.post("/orgs/new/", {"name": "Initech Corp", "slug": ""})
    assert response.status_code == 302 and response["Location"] == "/o/initech-corp/"
    org = Organization.objects.get(slug="initech-corp")
    assert Membership.objects.get(org=org, user=user).role == Role.OWNER
    # A second org with the same name gets a free slug suggested.
    client.post("/orgs/new/", {"name": "Initech Corp", "slug": ""})
    assert Organization.objects.filter(slug="initech-corp-2").exists()


def test_onboarding_shows_a_taken_or_bad_slug_as_a_form_error(
    user: User, org: Organization
) -> None:
    client = signed_in_client(user)
    taken = client.post("/orgs/new/", {"name": "Mine", "slug": "acme"})
    assert taken.status_code == 200 and b"already taken" in taken.content
    bad = client.post("/orgs/new/", {"name": "Mine", "slug": "Not a slug!"})
    assert bad.status_code == 200 and b"lower-case letters" in bad.content
    assert not Membership.objects.filter(user=user).exists()


def test_onboarding_needs_sign_in() -> None:
    response = Client().get("/orgs/new/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_switcher_lists_only_the_users_orgs_and_switches(
    owner: User, other_org: Organization
) -> None:
    mine = OrganizationFactory.create(name="Beta", slug="beta")
    MembershipFactory.create(org=mine, user=owner)
    client = signed_in_client(owner)
    page = client.get("/o/acme/")
    html = page.content.decode()
    assert 'value="acme" selected' in html and 'value="beta"' in html
    assert "globex" not in html
    assert client.get("/orgs/switch/?org=beta")["Location"] == "/o/beta/"
    assert client.get("/orgs/switch/?org=../admin")["Location"] == "/"
    assert client.get("/orgs/switch/?org=%2Bnew")["Location"] == "/orgs/new/"


def test_switcher_costs_one_query_and_none_for_anonymous(owner: User) -> None:
    client = signed_in_client(owner)
    client.get("/o/acme/")
    with CaptureQueriesContext(connection) as queries:
        client.get("/o/acme/")
    switcher = [
        q
        for q in queries.captured_queries
        if "orgs_membership" in q["sql"]
        and "ORDER BY" in q["sql"]
        and '"orgs_organization"."name"' in q["sql"]
    ]
    assert len(switcher) == 1
    with CaptureQueriesContext(connection) as anonymous:
        Client().get("/")
    assert not any("orgs_" in q["sql"] for q in anonymous.captured_queries)


# --- overview ------------------------------------------------------------------------


def test_overview_shows_plan_kyc_counts_and_recent_events(
    owner: User, admin_user: User, member_user: User, org: Organization
) -> None:
    Organization.objects.filter(pk=org.pk).update(plan="growth", kyc_status="approved")
    services.member_invite(
        org=org, email="new@example.com", role="member", actor=Actor.for_user(owner)
    )
    response = signed_in_client(member_user).get("/o/acme/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "Acme" in html and "Growth" in html and "KYC approved" in html
    assert response.context["counts"] == {"total": 3, "owners": 1, "admins": 1, "members": 1}
    assert "member.invited" in html
    # Members do not see invitation counts.
    assert "pending invitation" not in html
    assert "1 pending invitation" in signed_in_client(owner).get("/o/acme/").content.decode()


# --- members -----------------------------------------------------------------------------


def test_members_page_lists_email_role_two_factor_and_joined(
    owner: User, member_user: User, org: Organization
) -> None:
    TOTPDevice.objects.create(user=member_user, name="phone", confirmed=True)
    TOTPDevice.objects.create(user=owner, name="unconfirmed", confirmed=False)
    response = signed_in_client(member_user).get("/o/acme/members/")
    assert response.status_code == 200
    rows = {row["membership"].user.email: row for row in response.context["rows"]}
    assert rows["member@acme.test"]["membership"].has_two_factor is True
    assert rows["owner@acme.test"]["membership"].has_two_factor is False
    html = response.content.decode()
    assert "owner@acme.test" in html and "Enabled" in html and "Off" in html
    # Read-only for members: no invite form, no controls, no invitations.
    assert "invite_form" not in response.context
    assert 'name="role"' not in html and "Pending invitations" not in html


def test_admin_sees_controls_only_for_members(
    owner: User, admin_user: User, member_user: User, org: Organization
) -> None:
    response = signed_in_client(admin_user).get("/o/acme/members/")
    rows = {row["membership"].user.email: row for row in response.context["rows"]}
    assert rows["member@acme.test"]["can_manage"] is True
    assert [r for r, _ in rows["member@acme.test"]["role_choices"]] == ["admin", "member"]
    assert rows["owner@acme.test"]["can_manage"] is False
    assert rows["admin@acme.test"]["can_manage"] is False
    assert "Send invitation" in response.content.decode()


def _fill(org: Organization, n: int) -> None:
    users = UserFactory.create_batch(n)
    for i, user in enumerate(users):
        MembershipFactory.create(org=org, user=user, role=[Role.MEMBER, Role.ADMIN][i % 2])
        if i % 3 == 0:
            TOTPDevice.objects.create(user=user, name="app", confirmed=True)
    for i in range(n // 10):
        Invitation.objects.create(
            org=org,
            email=f"pending{i}@example.com",
            token_hash=f"{i:064d}",
            invited_by=users[0],
            sent_at=timezone.now(),
            expires_at=timezone.now() + timedelta(days=1 - i % 3),
        )


def test_members_page_runs_the_same_queries_for_1_and_200_members(
    owner: User, org: Organization
) -> None:
    client = signed_in_client(owner)
    client.get("/o/acme/members/")
    with CaptureQueriesContext(connection) as small:
        assert client.get("/o/acme/members/").status_code == 200
    _fill(org, 199)
    with CaptureQueriesContext(connection) as large:
        response = client.get("/o/acme/members/")
    assert len(response.context["rows"]) == 200
    assert len(large.captured_queries) == len(small.captured_queries)


def test_overview_and_settings_run_constant_queries(owner: User, org: Organization) -> None:
    client = signed_in_client(owner)
    counts = {}
    for label in ("small", "large"):
        if label == "large":
            _fill(org, 120)
        per_page = []
        for url in ("/o/acme/", "/o/acme/settings/"):
            with CaptureQueriesContext(connection) as queries:
                assert client.get(url).status_code == 200
            per_page.append(len(queries.captured_queries))
        counts[label] = per_page
    assert counts["small"] == counts["large"]


def test_invite_by_email_sends_the_link_and_lists_it_as_pending(
    owner: User, org: Organization, django_capture_on_commit_callbacks: Any
) -> None:
    client = signed_in_client(owner)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/o/acme/members/invite/", {"email": "bob@example.com", "role": "admin"}
        )
    assert response.status_code == 302 and response["Location"] == "/o/acme/members/"
    assert mail.outbox[-1].to == ["bob@example.com"]
    assert TOKEN_RE.search(str(mail.outbox[-1].body))
    page = client.get("/o/acme/members/")
    assert "bob@example.com" in page.content.decode()
    assert [i["invitation"].email for i in page.context["invitations"]] == ["bob@example.com"]


def test_invite_errors_are_shown_on_the_form(
    owner: User, admin_user: User, org: Organization
) -> None:
    client = signed_in_client(admin_user)
    bad = client.post("/o/acme/members/invite/", {"email": "not-an-email", "role": "member"})
    assert bad.status_code == 400
    owner_role = client.post("/o/acme/members/invite/", {"email": "x@example.com", "role": "owner"})
    assert owner_role.status_code == 400
    dup = client.post("/o/acme/members/invite/", {"email": "owner@acme.test", "role": "member"})
    assert dup.status_code == 400 and b"already a member" in dup.content
    assert not Invitation.objects.exists()


def test_resend_and_cancel_from_the_members_page(
    owner: User, org: Organization, django_capture_on_commit_callbacks: Any
) -> None:
    invitation = services.member_invite(
        org=org, email="bob@example.com", role="member", actor=Actor.for_user(owner)
    )
    client = signed_in_client(owner)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/o/acme/invitations/{invitation.public_id}/resend/")
    assert mail.outbox[-1].to == ["bob@example.com"]
    response = client.post(f"/o/acme/invitations/{invitation.public_id}/cancel/", follow=True)
    assert "cancelled" in " ".join(_messages(response))
    invitation.refresh_from_db()
    assert invitation.cancelled_at is not None
    assert client.get(f"/o/acme/invitations/{invitation.public_id}/cancel/").status_code == 405


def test_change_role_and_remove_from_the_members_page(
    owner: User, member_user: User, org: Organization
) -> None:
    client = signed_in_client(owner)
    target = Membership.objects.get(user=member_user)
    response = client.post(
        f"/o/acme/members/{target.public_id}/role/", {"role": "admin"}, follow=True
    )
    target.refresh_from_db()
    assert target.role == Role.ADMIN
    assert "member@acme.test is now admin." in _messages(response)
    confirm = client.get(f"/o/acme/members/{target.public_id}/remove/")
    assert confirm.status_code == 200 and b"confirm-remove" in confirm.content
    client.post(f"/o/acme/members/{target.public_id}/remove/")
    assert not Membership.objects.filter(pk=target.pk).exists()


def test_role_refusals_come_back_as_messages(
    owner: User, admin_user: User, org: Organization
) -> None:
    owner_m = Membership.objects.get(user=owner)
    response = signed_in_client(admin_user).post(
        f"/o/acme/members/{owner_m.public_id}/role/", {"role": "member"}, follow=True
    )
    assert response.status_code == 200
    assert "Your role does not allow this change." in _messages(response)
    owner_m.refresh_from_db()
    assert owner_m.role == Role.OWNER


def test_last_owner_cannot_leave_but_a_member_can(
    owner: User, member_user: User, org: Organization
) -> None:
    owner_client = signed_in_client(owner)
    assert b"last owner" in owner_client.get("/o/acme/members/leave/").content
    response = owner_client.post("/o/acme/members/leave/", follow=True)
    assert any("last owner" in m for m in _messages(response))
    assert Membership.objects.filter(user=owner, org=org).exists()
    member_client = signed_in_client(member_user)
    assert member_client.post("/o/acme/members/leave/")["Location"] == "/"
    assert not Membership.objects.filter(user=member_user).exists()
    assert member_client.get("/o/acme/").status_code == 404


# --- the invitation link ---------------------------------------------------------------


@pytest.fixture
def invited(owner: User, org: Organization, django_capture_on_commit_callbacks: Any) -> str:
    with django_capture_on_commit_callbacks(execute=True):
        services.member_invite(
            org=org, email="bob@example.com", role="admin", actor=Actor.for_user(owner)
        )
    match = TOKEN_RE.search(str(mail.outbox[-1].body))
    assert match is not None
    return match.group(1)


def test_anonymous_visitor_is_asked_to_sign_in_as_the_invited_email(invited: str) -> None:
    response = Client().get(f"/invitations/{invited}/")
    assert response.status_code == 200
    assert response["Referrer-Policy"] == "strict-origin"
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    invitation = Invitation.objects.get()
    # Sign-in returns by the invitation's id: the token never travels in `next` (which is
    # stored with the sign-in link), so it is never stored in clear.
    assert (
        f"/login/?next=%2Finvitations%2Fid%2F{invitation.public_id}%2F&amp;email=bob%40example.com"
        in html
    )
    assert invited not in html.replace(f"/invitations/{invited}/", "")
    assert "Acme" in html


def test_after_sign_in_the_invitee_accepts_by_id_and_nobody_else_can(
    invited: str, org: Organization
) -> None:
    invitation = Invitation.objects.get()
    path = f"/invitations/id/{invitation.public_id}/"
    assert Client().get(path)["Location"].startswith("/login/?next=")
    mallory = signed_in_client(UserFactory.create(email="mallory@example.com"))
    assert mallory.get(path).status_code == 404
    assert mallory.post(path).status_code == 404
    assert not Membership.objects.filter(user__email="mallory@example.com").exists()

    bob = UserFactory.create(email="bob@example.com")
    client = signed_in_client(bob)
    page = client.get(path)
    assert page.status_code == 200 and b'id="accept-invitation"' in page.content
    response = client.post(path)
    assert response.status_code == 302 and response["Location"] == "/o/acme/"
    assert Membership.objects.get(user=bob, org=org).role == Role.ADMIN
    assert client.get(path).status_code == 404


def test_the_invited_user_accepts_and_lands_in_the_org(invited: str, org: Organization) -> None:
    bob = UserFactory.create(email="bob@example.com")
    client = signed_in_client(bob)
    page = client.get(f"/invitations/{invited}/")
    assert page.status_code == 200 and b'id="accept-invitation"' in page.content
    assert b"Admin" in page.content
    response = client.post(f"/invitations/{invited}/")
    assert response.status_code == 302 and response["Location"] == "/o/acme/"
    assert Membership.objects.get(user=bob, org=org).role == Role.ADMIN
    assert client.get("/o/acme/").status_code == 200
    # Used once: the link is now a clear "no longer valid" page.
    again = client.get(f"/invitations/{invited}/")
    assert again.status_code == 404 and b"already been used" in again.content
    assert AuditEvent.objects.filter(org=org, action="invitation.accepted", actor_user=bob).exists()


def test_someone_else_signed_in_is_refused(invited: str) -> None:
    mallory = UserFactory.create(email="mallory@example.com")
    client = signed_in_client(mallory)
    page = client.get(f"/invitations/{invited}/")
    assert page.status_code == 403 and b"for someone else" in page.content
    assert b"accept-invitation" not in page.content
    assert client.post(f"/invitations/{invited}/").status_code == 403
    assert not Membership.objects.filter(user=mallory).exists()


def test_unknown_expired_and_cancelled_links_are_a_clear_404(invited: str) -> None:
    bob = UserFactory.create(email="bob@example.com")
    client = signed_in_client(bob)
    unknown = client.get("/invitations/not-a-real-token/")
    assert unknown.status_code == 404 and b"no longer valid" in unknown.content
    Invitation.objects.update(expires_at=timezone.now() - timedelta(minutes=1))
    expired = client.get(f"/invitations/{invited}/")
    assert expired.status_code == 404 and b"expired" in expired.content
    assert client.post(f"/invitations/{invited}/").status_code == 404
    Invitation.objects.update(
        expires_at=timezone.now() + timedelta(days=1), cancelled_at=timezone.now()
    )
    cancelled = client.get(f"/invitations/{invited}/")
    assert cancelled.status_code == 404 and b"cancelled" in cancelled.content
    assert not Membership.objects.filter(user=bob).exists()


def test_invitation_email_has_text_and_html(invited: str) -> None:
    message = mail.outbox[-1]
    assert "owner@acme.test invited you to join Acme" in message.body
    html = str(getattr(message, "alternatives")[0][0])
    assert "<strong>Acme</strong>" in html and f"/invitations/{invited}/" in html


# --- settings -------------------------------------------------------------------------


def test_settings_change_name_and_slug(owner: User, org: Organization) -> None:
    client = signed_in_client(owner)
    page = client.get("/o/acme/settings/")
    assert page.status_code == 200 and b"Danger zone" in page.content
    response = client.post("/o/acme/settings/", {"name": "Acme Ltd", "slug": "acme-ltd"})
    assert response.status_code == 302 and response["Location"] == "/o/acme-ltd/settings/"
    org.refresh_from_db()
    assert (org.name, org.slug) == ("Acme Ltd", "acme-ltd")
    assert client.get("/o/acme/settings/").status_code == 404
    assert client.get("/o/acme-ltd/settings/").status_code == 200


def test_owner_requires_two_factor_only_with_a_factor_of_their_own(
    owner: User, org: Organization
) -> None:
    data = {"name": "Acme", "slug": "acme", "require_two_factor": "on"}
    refused = signed_in_client(owner).post("/o/acme/settings/", data)
    assert refused.status_code == 400 and b"before requiring it" in refused.content
    org.refresh_from_db()
    assert org.require_two_factor is False
    response = verified_client(owner).post("/o/acme/settings/", data)
    assert response.status_code == 302
    org.refresh_from_db()
    assert org.require_two_factor is True


def test_admin_settings_keep_the_two_factor_policy_and_hide_the_danger_zone(
    admin_user: User, org: Organization
) -> None:
    client = signed_in_client(admin_user)
    page = client.get("/o/acme/settings/")
    assert page.status_code == 200 and b"Danger zone" not in page.content
    assert page.context["form"].fields["require_two_factor"].disabled
    client.post("/o/acme/settings/", {"name": "Acme 2", "slug": "acme", "require_two_factor": "on"})
    org.refresh_from_db()
    assert (org.name, org.require_two_factor) == ("Acme 2", False)


def test_settings_errors_rerender_with_the_saved_org(
    owner: User, org: Organization, other_org: Organization
) -> None:
    response = signed_in_client(owner).post("/o/acme/settings/", {"name": "Acme", "slug": "globex"})
    assert response.status_code == 400 and b"already taken" in response.content
    org.refresh_from_db()
    assert org.slug == "acme"


def test_transfer_ownership_from_settings(
    owner: User, member_user: User, org: Organization
) -> None:
    target = Membership.objects.get(user=member_user)
    response = signed_in_client(owner).post(
        "/o/acme/settings/transfer/", {"membership": target.public_id}
    )
    assert response.status_code == 302
    assert Membership.objects.get(user=member_user).role == Role.OWNER
    assert Membership.objects.get(user=owner).role == Role.ADMIN


def test_delete_org_needs_the_slug_typed(owner: User, org: Organization) -> None:
    client = signed_in_client(owner)
    wrong = client.post("/o/acme/settings/delete/", {"confirm_slug": "nope"}, follow=True)
    assert "Type the organisation's slug to confirm." in _messages(wrong)
    assert Organization.objects.filter(slug="acme").exists()
    response = client.post("/o/acme/settings/delete/", {"confirm_slug": "acme"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert not Organization.objects.filter(slug="acme").exists()
    assert client.get("/")["Location"] == "/onboarding/"
