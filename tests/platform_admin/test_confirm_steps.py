"""Console actions ask first (config.confirm, ADR 0081); suspension needs a reason."""

from __future__ import annotations

from django.test import Client

from accounts.models import PlatformRole, User
from apikeys.models import ApiKey
from orgs.actors import Actor
from orgs.models import KycStatus, Organization, OrgStatus
from platform_admin import services
from tests.conftest import signed_in_client
from tests.factories import UserFactory
from tests.platform_admin.conftest import submit


def test_suspension_asks_first_and_requires_a_reason(
    staff_client: Client, org: Organization
) -> None:
    url = f"/platform/organizations/{org.public_id}/suspend/"
    step = staff_client.post(url, {"reason": "Fraud review", "confirm_ask": "1"})
    assert step.status_code == 200
    html = step.content.decode()
    assert "Suspend Acme?" in html and "refuses every key" in html
    assert 'id="confirm-suspend-org"' in html and "Fraud review" in html
    org.refresh_from_db()
    assert org.status == OrgStatus.ACTIVE
    for reason in ("", "   "):
        refused = staff_client.post(url, {"reason": reason})
        assert refused.status_code == 400
        assert b"Give the reason for the suspension." in refused.content
        org.refresh_from_db()
        assert org.status == OrgStatus.ACTIVE
    assert staff_client.post(url, {"reason": "Fraud review"}).status_code == 302
    org.refresh_from_db()
    assert org.status == OrgStatus.SUSPENDED


def test_a_link_cannot_fill_in_the_reason_of_a_confirm_step(
    staff_client: Client, org: Organization
) -> None:
    """Only choices come from a query string: free text typed by someone else never
    appears on the step, ready to be confirmed."""
    url = f"/platform/organizations/{org.public_id}/suspend/"
    step = staff_client.get(url, {"reason": "Planted by a link"})
    assert step.status_code == 200
    assert "Planted by a link" not in step.content.decode()
    assert 'id="confirm-suspend-org"' in step.content.decode()


def test_kyc_decisions_ask_first(staff_client: Client, org: Organization, owner: User) -> None:
    application = submit(org, owner)
    approve = f"/platform/kyc/{application.public_id}/approve/"
    html = staff_client.get(approve).content.decode()
    assert "Approve Acme Corporation Ltd?" in html and 'id="confirm-approve-kyc"' in html
    step = staff_client.post(
        f"/platform/kyc/{application.public_id}/reject/",
        {"reason": "Unreadable scan", "confirm_ask": "1"},
    )
    assert step.status_code == 200 and b'id="confirm-reject-kyc"' in step.content
    application.refresh_from_db()
    assert application.is_pending
    assert staff_client.post(approve).status_code == 302
    org.refresh_from_db()
    assert org.kyc_status == KycStatus.APPROVED
    # Once decided, the step says so and offers no button.
    html = staff_client.get(approve).content.decode()
    assert 'id="confirm-blocked"' in html and 'id="confirm-approve-kyc"' not in html


def test_revoking_a_platform_admin_or_a_system_key_asks_first(
    owner_staff_client: Client, platform_owner: User
) -> None:
    reviewer = UserFactory.create(
        email="reviewer@latchkey.test", platform_role=PlatformRole.PLATFORM_ADMIN
    )
    step = owner_staff_client.post(
        "/platform/admins/revoke/", {"email": reviewer.email, "confirm_ask": "1"}
    )
    assert step.status_code == 200 and b'id="confirm-revoke-role"' in step.content
    reviewer.refresh_from_db()
    assert reviewer.is_platform_staff
    owner_staff_client.post("/platform/admins/revoke/", {"email": reviewer.email})
    reviewer.refresh_from_db()
    assert not reviewer.is_platform_staff

    key, _ = services.system_key_create(
        name="Back office",
        scopes=["platform_organizations:read"],
        actor=Actor.for_user(platform_owner),
    )
    url = f"/platform/system-keys/{key.public_id}/revoke/"
    html = owner_staff_client.get(url).content.decode()
    assert "Revoke the system key “Back office”?" in html and key.display in html
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None
    assert owner_staff_client.post(url).status_code == 302
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None


def test_an_approved_org_without_an_application_shows_a_read_only_summary(
    org: Organization, admin_user: User
) -> None:
    org.kyc_status = KycStatus.APPROVED
    org.save(update_fields=["kyc_status"])
    html = signed_in_client(admin_user).get(f"/o/{org.slug}/kyc/").content.decode()
    assert 'id="kyc-summary"' in html
    assert 'id="submit-kyc"' not in html and 'name="legal_name"' not in html
