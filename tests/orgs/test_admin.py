"""Django's admin is read-only for models whose writes belong to services (ADR 0075): an
organisation suspended or a role changed there would skip the audit event and the
invalidation of cached API-key verifications. Rows are still listed and shown."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.db import models
from django.test import Client, RequestFactory
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import PasskeyDevice, RecoveryCodeDevice, User
from apikeys.models import ApiKey
from orgs.admin import MembershipInline
from orgs.models import AuditEvent, Membership, Organization, OrgStatus, Role
from tests.conftest import verified_client
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

# Registered models that stay (partly) writable in the admin, and why; every other
# registered model must be read-only there.
WRITABLE_IN_THE_ADMIN = {
    # Email and name only; roles, flags and permissions are read-only (ADR 0015).
    User: "change",
    # Deleting a lost device frees a locked-out user (ADR 0015).
    PasskeyDevice: "delete",
    RecoveryCodeDevice: "delete",
    TOTPDevice: "delete",
    # Django's permission groups: no service owns them and nothing of Latchkey reads them.
    Group: "add change delete",
}


@pytest.fixture
def root(db: None) -> User:
    return User.objects.create_superuser("root@latchkey.test")


@pytest.fixture
def root_client(root: User) -> Client:
    return verified_client(root)


@pytest.fixture
def member(org: Organization) -> Membership:
    return MembershipFactory.create(
        org=org, user=UserFactory.create(email="member@acme.test"), role=Role.MEMBER
    )


def _org_change_form(org: Organization, **changes: Any) -> dict[str, Any]:
    """What the admin's change form for `org` posts, with its membership inline."""
    data: dict[str, Any] = {
        "slug": org.slug,
        "name": org.name,
        "plan": org.plan,
        "kyc_status": org.kyc_status,
        "status": org.status,
        "custom_per_minute": "",
        "custom_burst": "",
        "custom_monthly": "",
    }
    memberships = list(org.memberships.order_by("pk"))
    data.update(
        {
            "memberships-TOTAL_FORMS": str(len(memberships)),
            "memberships-INITIAL_FORMS": str(len(memberships)),
            "memberships-MIN_NUM_FORMS": "0",
            "memberships-MAX_NUM_FORMS": "1000",
        }
    )
    for index, membership in enumerate(memberships):
        data.update(
            {
                f"memberships-{index}-id": str(membership.pk),
                f"memberships-{index}-org": str(org.pk),
                f"memberships-{index}-user": str(membership.user_id),
                f"memberships-{index}-role": membership.role,
            }
        )
    data.update(changes)
    return data


def test_suspending_an_organisation_in_the_admin_is_refused(
    root_client: Client, org: Organization, member: Membership
) -> None:
    url = f"/admin/orgs/organization/{org.pk}/change/"
    response = root_client.post(url, _org_change_form(org, status=OrgStatus.SUSPENDED))
    assert response.status_code == 403
    org.refresh_from_db()
    assert org.status == OrgStatus.ACTIVE


def test_a_role_cannot_be_changed_in_the_admin(
    root_client: Client, org: Organization, member: Membership
) -> None:
    through_inline = root_client.post(
        f"/admin/orgs/organization/{org.pk}/change/",
        _org_change_form(org, **{"memberships-0-role": Role.OWNER}),
    )
    assert through_inline.status_code == 403
    directly = root_client.post(
        f"/admin/orgs/membership/{member.pk}/change/",
        {"org": str(org.pk), "user": str(member.user_id), "role": Role.OWNER},
    )
    assert directly.status_code == 403
    member.refresh_from_db()
    assert member.role == Role.MEMBER


def test_organisations_and_memberships_cannot_be_added_or_deleted_in_the_admin(
    root_client: Client, org: Organization, member: Membership
) -> None:
    assert root_client.get("/admin/orgs/organization/add/").status_code == 403
    assert root_client.get("/admin/orgs/membership/add/").status_code == 403
    for url in (
        f"/admin/orgs/membership/{member.pk}/delete/",
        f"/admin/orgs/organization/{org.pk}/delete/",
    ):
        assert root_client.post(url, {"post": "yes"}).status_code == 403
    bulk = root_client.post(
        "/admin/orgs/organization/",
        {"action": "delete_selected", "_selected_action": [str(org.pk)], "post": "yes"},
    )
    assert bulk.status_code in (200, 302)  # the action is not offered: nothing happens
    assert Organization.objects.filter(pk=org.pk).exists()
    assert Membership.objects.filter(pk=member.pk).exists()


def test_organisations_and_memberships_are_still_listed_and_shown(
    root_client: Client, org: Organization, member: Membership
) -> None:
    listing = root_client.get("/admin/orgs/organization/")
    assert listing.status_code == 200 and org.slug in listing.content.decode()
    page = root_client.get(f"/admin/orgs/organization/{org.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert org.name in html and "member@acme.test" in html
    assert 'name="status"' not in html and 'name="memberships-0-role"' not in html
    assert root_client.get("/admin/orgs/membership/").status_code == 200
    assert root_client.get(f"/admin/orgs/membership/{member.pk}/change/").status_code == 200


def test_an_authenticator_app_cannot_be_added_or_edited_in_the_admin(
    root_client: Client, root: User
) -> None:
    other = UserFactory.create(email="victim@example.com")
    added = root_client.post(
        "/admin/otp_totp/totpdevice/add/",
        {
            "user": str(other.pk),
            "name": "mine",
            "confirmed": "on",
            "key": "3132333435363738393031323334353637383930",
            "step": "30",
            "t0": "0",
            "digits": "6",
            "tolerance": "1",
            "drift": "0",
            "throttling_failure_count": "0",
        },
    )
    assert added.status_code == 403
    assert not TOTPDevice.objects.filter(user=other).exists()
    device = TOTPDevice.objects.create(user=other, name="phone", confirmed=False)
    changed = root_client.post(
        f"/admin/otp_totp/totpdevice/{device.pk}/change/",
        {"user": str(other.pk), "name": "phone", "confirmed": "on", "step": "30", "t0": "0"},
    )
    assert changed.status_code == 403
    device.refresh_from_db()
    assert not device.confirmed
    assert root_client.get(f"/admin/otp_totp/totpdevice/{device.pk}/change/").status_code == 200


@pytest.mark.parametrize("model", [Organization, Membership, AuditEvent, ApiKey])
def test_service_owned_models_give_no_write_permission_in_the_admin(
    root: User, model: type[models.Model]
) -> None:
    request = RequestFactory().get("/admin/")
    request.user = root
    model_admin = admin.site._registry[model]
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)
    assert model_admin.has_view_permission(request)


def test_the_membership_inline_gives_no_write_permission(root: User, org: Organization) -> None:
    request = RequestFactory().get("/admin/")
    request.user = root
    inline = MembershipInline(Organization, admin.site)
    assert not inline.has_add_permission(request, org)
    assert not inline.has_change_permission(request, org)
    assert not inline.has_delete_permission(request, org)


def test_every_model_in_the_admin_is_read_only_unless_named_here(root: User) -> None:
    request = RequestFactory().get("/admin/")
    request.user = root
    for model, model_admin in admin.site._registry.items():
        allowed = WRITABLE_IN_THE_ADMIN.get(model, "")
        granted = {
            "add": model_admin.has_add_permission(request),
            "change": model_admin.has_change_permission(request),
            "delete": model_admin.has_delete_permission(request),
        }
        extra = {name for name, yes in granted.items() if yes and name not in allowed.split()}
        assert not extra, f"{model._meta.label} is writable in the admin: {sorted(extra)}"
