"""KYC documents reach only the org's owners and admins and verified platform staff, as
private downloads."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import User
from orgs.models import AuditEvent, Organization, Role
from platform_admin.models import KycDocument
from tests.conftest import signed_in_client
from tests.factories import MembershipFactory, UserFactory
from tests.platform_admin.conftest import pdf_bytes, submit, upload

CONTENT = pdf_bytes("Director passport")


@pytest.fixture
def document(org: Organization, admin_user: User) -> KycDocument:
    application = submit(org, admin_user, documents=[upload("passport scan.pdf", CONTENT)])
    return application.documents.get()


def org_url(document: KycDocument) -> str:
    return f"/o/{document.application.org.slug}/kyc/documents/{document.public_id}/"


def staff_url(document: KycDocument) -> str:
    return f"/platform/kyc/{document.application.public_id}/documents/{document.public_id}/"


def body(response: object) -> bytes:
    return b"".join(response.streaming_content)  # type: ignore[attr-defined]


def assert_private_download(response: object) -> None:
    assert response.status_code == 200  # type: ignore[attr-defined]
    assert body(response) == CONTENT
    headers = response.headers  # type: ignore[attr-defined]
    assert headers["Content-Type"] == "application/pdf"
    assert headers["Content-Disposition"].startswith("attachment;")
    assert 'filename="passport scan.pdf"' in headers["Content-Disposition"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "no-store" in headers["Cache-Control"] and "private" in headers["Cache-Control"]


def test_the_orgs_owner_and_admins_can_download(
    document: KycDocument, owner_client: Client, admin_client_: Client
) -> None:
    assert_private_download(owner_client.get(org_url(document)))
    assert_private_download(admin_client_.get(org_url(document)))


def test_a_member_cannot_download(document: KycDocument, member_client: Client) -> None:
    response = member_client.get(org_url(document))
    assert response.status_code == 403
    assert CONTENT not in response.content


def test_another_orgs_admin_cannot_download(document: KycDocument, other_org: Organization) -> None:
    outsider = MembershipFactory.create(org=other_org, role=Role.ADMIN).user
    client = signed_in_client(outsider)
    # Through their own org's URL (the object is not theirs) and through the owner's.
    own = f"/o/{other_org.slug}/kyc/documents/{document.public_id}/"
    assert client.get(own).status_code == 404
    assert client.get(org_url(document)).status_code == 404
    assert client.get(staff_url(document)).status_code == 404


def test_anonymous_cannot_download(document: KycDocument, client: Client) -> None:
    for url in (org_url(document), staff_url(document)):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/login/")


def test_staff_without_a_verified_second_factor_cannot_download(
    document: KycDocument, staff_user: User
) -> None:
    client = signed_in_client(staff_user)  # signed in, no second factor this session
    response = client.get(staff_url(document))
    assert response.status_code == 302
    assert response["Location"].startswith("/account/security/")
    assert not AuditEvent.objects.filter(action="kyc.document_viewed").exists()


def test_a_signed_in_user_who_is_not_staff_gets_404_from_the_console(
    document: KycDocument,
) -> None:
    client = signed_in_client(UserFactory.create(email="curious@example.com"))
    assert client.get(staff_url(document)).status_code == 404


def test_verified_staff_download_and_the_org_sees_it_on_its_log(
    document: KycDocument, staff_client: Client, staff_user: User, org: Organization
) -> None:
    assert_private_download(staff_client.get(staff_url(document)))
    event = AuditEvent.objects.get(action="kyc.document_viewed")
    assert event.org == org and event.actor_user == staff_user
    assert event.target_id == document.public_id


def test_a_document_is_only_reachable_through_its_own_application(
    document: KycDocument, staff_client: Client, other_org: Organization
) -> None:
    other = submit(other_org, None)
    wrong = f"/platform/kyc/{other.public_id}/documents/{document.public_id}/"
    assert staff_client.get(wrong).status_code == 404


def test_private_storage_has_no_url(document: KycDocument) -> None:
    with pytest.raises(ValueError):
        document.file.url
