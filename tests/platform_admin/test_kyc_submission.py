"""The org side of KYC: /o/<slug>/kyc/ and the kyc_submit state machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from accounts.models import User
from config.errors import InvalidFields
from orgs.actors import Actor
from orgs.models import AuditEvent, KycStatus, Organization
from platform_admin import services
from platform_admin.models import KycApplication, KycDocument
from platform_admin.services import PlatformError
from tests.platform_admin.conftest import KYC_DATA, pdf_bytes, png_bytes, submit, upload

URL = "/o/acme/kyc/"


def post_kyc(client: Client, *files: Any, **overrides: Any) -> Any:
    data: dict[str, Any] = {**KYC_DATA, **overrides}
    data["documents"] = list(files) if files else [upload("incorporation.pdf", pdf_bytes())]
    return client.post(URL, data)


# --- the page ------------------------------------------------------------------------------


def test_an_admin_submits_kyc_and_the_org_becomes_pending(
    admin_client_: Client, org: Organization, admin_user: User, _private_media: Path
) -> None:
    page = admin_client_.get(URL)
    assert page.status_code == 200
    html = page.content.decode()
    for name in ("legal_name", "registration_number", "country", "address", "director_name"):
        assert f'name="{name}"' in html
    assert 'type="file" name="documents"' in html and "multiple" in html
    assert 'data-status="not_submitted"' in html

    response = post_kyc(
        admin_client_,
        upload("incorporation.pdf", pdf_bytes()),
        upload("bill.png", png_bytes(), "image/png"),
    )
    assert response.status_code == 302

    org.refresh_from_db()
    assert org.kyc_status == KycStatus.PENDING
    application = KycApplication.objects.get(org=org)
    assert application.status == "pending"
    assert application.public_id.startswith("kyc_")
    assert application.legal_name == KYC_DATA["legal_name"]
    assert application.country == "GB"
    assert application.submitted_by == admin_user
    documents = list(application.documents.all())
    assert {d.content_type for d in documents} == {"application/pdf", "image/png"}
    # Stored privately under a random name, never the user's.
    for document in documents:
        path = Path(document.file.path)
        assert path.is_relative_to(_private_media)
        assert document.filename not in path.name
    event = AuditEvent.objects.get(action="kyc.submitted")
    assert event.org == org and event.actor_user == admin_user
    assert event.target_id == application.public_id

    pending = admin_client_.get(URL).content.decode()
    assert 'data-status="pending"' in pending
    assert "under review" in pending
    assert 'name="legal_name"' not in pending  # read-only while pending


def test_members_see_the_status_but_cannot_submit(member_client: Client, org: Organization) -> None:
    page = member_client.get(URL)
    assert page.status_code == 200
    assert 'data-status="not_submitted"' in page.content.decode()
    assert 'name="legal_name"' not in page.content.decode()
    assert post_kyc(member_client).status_code == 403
    assert not KycApplication.objects.exists()


def test_another_orgs_admin_gets_404(other_org: Organization, org: Organization) -> None:
    from tests.conftest import signed_in_client
    from tests.factories import MembershipFactory

    outsider = MembershipFactory.create(org=other_org, role="admin").user
    client = signed_in_client(outsider)
    assert client.get(URL).status_code == 404
    assert post_kyc(client).status_code == 404


def test_anonymous_is_sent_to_sign_in(client: Client, org: Organization) -> None:
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_a_text_file_named_pdf_is_refused_on_the_page(
    admin_client_: Client, org: Organization
) -> None:
    response = post_kyc(
        admin_client_, upload("passport.pdf", b"I am plain text", "application/pdf")
    )
    assert response.status_code == 400
    assert "not a PDF, PNG or JPEG" in response.content.decode()
    org.refresh_from_db()
    assert org.kyc_status == KycStatus.NOT_SUBMITTED
    assert not KycApplication.objects.exists()


def test_an_oversize_document_is_refused_on_the_page(
    admin_client_: Client, org: Organization, settings: Any
) -> None:
    settings.KYC_DOCUMENT_MAX_BYTES = 2048
    response = post_kyc(admin_client_, upload("big.pdf", b"%PDF-1.4\n" + b"x" * 4096))
    assert response.status_code == 400
    assert "larger than" in response.content.decode()
    assert not KycApplication.objects.exists()


def test_too_many_documents_and_no_document_are_refused(
    admin_client_: Client, org: Organization, settings: Any
) -> None:
    settings.KYC_MAX_DOCUMENTS = 2
    files = [upload(f"d{i}.pdf", pdf_bytes()) for i in range(3)]
    assert post_kyc(admin_client_, *files).status_code == 400
    response = admin_client_.post(URL, dict(KYC_DATA))
    assert response.status_code == 400
    assert "Attach at least one document" in response.content.decode()
    assert not KycApplication.objects.exists()


def test_fields_are_validated(admin_client_: Client, org: Organization) -> None:
    response = post_kyc(admin_client_, country="XX", legal_name="   ")
    assert response.status_code == 400
    assert not KycApplication.objects.exists()


def test_the_country_list_is_a_real_iso_list(admin_client_: Client, org: Organization) -> None:
    html = admin_client_.get(URL).content.decode()
    assert '<option value="DE">Germany</option>' in html
    assert '<option value="CI">Côte d&#x27;Ivoire</option>' in html
    assert html.count("<option value=") >= 249


# --- the state machine ---------------------------------------------------------------------


def test_state_machine_not_submitted_pending_rejected_pending_approved(
    org: Organization, admin_user: User, staff_user: User
) -> None:
    assert org.kyc_status == KycStatus.NOT_SUBMITTED
    first = submit(org, admin_user)
    assert org.kyc_status == KycStatus.PENDING

    # Pending is read-only.
    with pytest.raises(PlatformError) as info:
        submit(org, admin_user)
    assert info.value.code == "kyc_pending"

    services.kyc_reject(
        application=first, actor=Actor.for_user(staff_user), reason="Blurry certificate."
    )
    org.refresh_from_db()
    assert org.kyc_status == KycStatus.REJECTED

    second = submit(org, admin_user, legal_name="Acme Corporation Limited")
    org.refresh_from_db()
    assert org.kyc_status == KycStatus.PENDING
    assert second.pk != first.pk
    first.refresh_from_db()
    assert first.status == "rejected" and first.rejection_reason == "Blurry certificate."

    services.kyc_approve(application=second, actor=Actor.for_user(staff_user))
    org.refresh_from_db()
    assert org.kyc_status == KycStatus.APPROVED

    # Approved is read-only, and a decision cannot be taken twice.
    with pytest.raises(PlatformError) as info:
        submit(org, admin_user)
    assert info.value.code == "kyc_approved"
    with pytest.raises(PlatformError) as info:
        services.kyc_reject(
            application=second, actor=Actor.for_user(staff_user), reason="Changed my mind"
        )
    assert info.value.code == "kyc_not_pending"
    with pytest.raises(PlatformError):
        services.kyc_approve(application=first, actor=Actor.for_user(staff_user))
    assert KycApplication.objects.filter(org=org).count() == 2


def test_an_approved_application_is_read_only_on_the_page(
    admin_client_: Client, org: Organization, admin_user: User, staff_user: User
) -> None:
    services.kyc_approve(application=submit(org, admin_user), actor=Actor.for_user(staff_user))
    page = admin_client_.get(URL).content.decode()
    assert 'data-status="approved"' in page
    assert 'name="legal_name"' not in page
    response = post_kyc(admin_client_)
    assert response.status_code == 302
    assert KycApplication.objects.filter(org=org).count() == 1


def test_a_rejected_application_is_corrected_and_resubmitted_keeping_documents(
    admin_client_: Client, org: Organization, admin_user: User, staff_user: User
) -> None:
    first = submit(org, admin_user, registration_number="WRONG")
    services.kyc_reject(
        application=first, actor=Actor.for_user(staff_user), reason="Registration number wrong."
    )
    page = admin_client_.get(URL).content.decode()
    assert 'data-status="rejected"' in page
    assert "Registration number wrong." in page
    assert 'value="Acme Corporation Ltd"' in page  # prefilled from the rejected one
    kept = first.documents.get()
    assert f'value="{kept.public_id}"' in page

    response = admin_client_.post(
        URL, {**KYC_DATA, "registration_number": "RC-654321", "keep_documents": [kept.public_id]}
    )
    assert response.status_code == 302
    second = KycApplication.objects.filter(org=org).exclude(pk=first.pk).get()
    assert second.registration_number == "RC-654321"
    carried = second.documents.get()
    assert carried.file.name == kept.file.name and carried.pk != kept.pk
    assert first.documents.count() == 1  # history intact

    history = admin_client_.get(URL).content.decode()
    assert "Earlier applications" in history and first.public_id in history


def test_documents_to_keep_must_come_from_the_orgs_last_application(
    org: Organization, other_org: Organization, admin_user: User, staff_user: User
) -> None:
    foreign = submit(other_org, None)
    services.kyc_reject(application=foreign, actor=Actor.for_user(staff_user), reason="No.")
    mine = submit(org, admin_user)
    services.kyc_reject(application=mine, actor=Actor.for_user(staff_user), reason="No.")
    with pytest.raises(InvalidFields):
        submit(
            org,
            admin_user,
            documents=[],
            keep_documents=[foreign.documents.get().public_id],
        )
    assert KycDocument.objects.filter(application__org=org).count() == 1


def test_a_failed_submission_leaves_no_file_behind(
    org: Organization, admin_user: User, _private_media: Path
) -> None:
    with pytest.raises(InvalidFields):
        submit(
            org,
            admin_user,
            documents=[upload("a.pdf", pdf_bytes()), upload("b.pdf", b"not a pdf")],
        )
    assert not _private_media.exists() or not any(_private_media.rglob("*.*"))
