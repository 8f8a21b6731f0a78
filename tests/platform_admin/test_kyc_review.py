"""Staff review of KYC applications in the console: queue, detail, approve, reject."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.core import mail
from django.test import Client
from django.utils import timezone

from accounts.models import User
from orgs.actors import Actor
from orgs.models import AuditEvent, KycStatus, Organization, Role
from platform_admin.models import KycApplication
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory
from tests.platform_admin.conftest import submit


def test_the_queue_lists_pending_applications_oldest_first_with_age(
    staff_client: Client, org: Organization, other_org: Organization, staff_user: User
) -> None:
    newer = submit(org, None)
    older = submit(other_org, None)
    KycApplication.objects.filter(pk=older.pk).update(
        submitted_at=timezone.now() - timedelta(days=3)
    )
    decided_org = OrganizationFactory.create(name="Initech", slug="initech")
    from platform_admin.services import kyc_approve

    kyc_approve(application=submit(decided_org, None), actor=Actor.for_user(staff_user))

    response = staff_client.get("/platform/kyc/")
    assert response.status_code == 200
    html = response.content.decode()
    queue = html.split('class="kyc-queue"')[1].split("</table>")[0]
    assert queue.index(older.public_id) < queue.index(newer.public_id)
    assert "Globex" in queue and "Acme" in queue and "Initech" not in queue
    assert "3\xa0days" in queue
    assert f"/platform/kyc/{older.public_id}/" in queue
    assert "Initech" in html.split("Recently decided")[1]


def test_the_detail_shows_data_documents_and_decision_controls(
    staff_client: Client, org: Organization, admin_user: User
) -> None:
    application = submit(org, admin_user)
    html = staff_client.get(f"/platform/kyc/{application.public_id}/").content.decode()
    assert application.legal_name in html and "RC-123456" in html and "United Kingdom" in html
    document = application.documents.get()
    assert f"/platform/kyc/{application.public_id}/documents/{document.public_id}/" in html
    assert 'id="approve-kyc"' in html and 'id="reject-kyc"' in html
    assert '<textarea name="reason"' in html


def test_approval_opens_kyc_emails_owners_and_admins_and_is_audited(
    staff_client: Client,
    staff_user: User,
    org: Organization,
    owner: User,
    admin_user: User,
    member_user: User,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    application = submit(org, admin_user)
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(f"/platform/kyc/{application.public_id}/approve/")
    assert response.status_code == 302
    application.refresh_from_db()
    org.refresh_from_db()
    assert application.status == "approved"
    assert application.reviewed_by == staff_user and application.reviewed_at is not None
    assert org.kyc_status == KycStatus.APPROVED

    recipients = sorted(address for message in mail.outbox for address in message.to)
    assert recipients == sorted([owner.email, admin_user.email])
    assert member_user.email not in recipients
    assert all("approved" in message.subject for message in mail.outbox)
    assert "Live API keys are now available" in mail.outbox[0].body

    event = AuditEvent.objects.get(action="kyc.approved")
    assert event.actor_user == staff_user and event.org == org
    assert event.target_id == application.public_id


def test_rejection_needs_a_reason(
    staff_client: Client, org: Organization, admin_user: User
) -> None:
    application = submit(org, admin_user)
    response = staff_client.post(f"/platform/kyc/{application.public_id}/reject/", {"reason": "  "})
    assert response.status_code == 400
    application.refresh_from_db()
    assert application.status == "pending"
    assert not AuditEvent.objects.filter(action="kyc.rejected").exists()


def test_rejection_emails_the_reason_and_is_audited(
    staff_client: Client,
    staff_user: User,
    org: Organization,
    owner: User,
    admin_user: User,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    application = submit(org, admin_user)
    reason = "The certificate of incorporation is illegible; upload a clearer scan."
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            f"/platform/kyc/{application.public_id}/reject/", {"reason": reason}
        )
    assert response.status_code == 302
    org.refresh_from_db()
    assert org.kyc_status == KycStatus.REJECTED
    application.refresh_from_db()
    assert application.rejection_reason == reason

    assert sorted(m.to[0] for m in mail.outbox) == sorted([owner.email, admin_user.email])
    for message in mail.outbox:
        assert reason in message.body
        assert reason in message.alternatives[0][0]  # type: ignore[attr-defined]
        assert "/o/acme/kyc/" in message.body

    event = AuditEvent.objects.get(action="kyc.rejected")
    assert event.actor_user == staff_user and event.org == org
    assert event.details["reason"] == reason


def test_an_application_is_decided_only_once(
    staff_client: Client, org: Organization, admin_user: User
) -> None:
    application = submit(org, admin_user)
    staff_client.post(f"/platform/kyc/{application.public_id}/approve/")
    response = staff_client.post(
        f"/platform/kyc/{application.public_id}/reject/", {"reason": "late"}, follow=True
    )
    assert "already approved" in response.content.decode()
    application.refresh_from_db()
    assert application.status == "approved"
    assert (
        AuditEvent.objects.filter(action__startswith="kyc.")
        .filter(action__in=["kyc.approved", "kyc.rejected"])
        .count()
        == 1
    )


def test_the_org_sees_staff_decisions_on_its_own_log(
    staff_client: Client, org: Organization, other_org: Organization, admin_user: User
) -> None:
    application = submit(org, admin_user)
    staff_client.post(f"/platform/kyc/{application.public_id}/reject/", {"reason": "No."})
    assert AuditEvent.objects.filter(org=org, action="kyc.rejected").count() == 1
    assert not AuditEvent.objects.filter(org=other_org).exists()


def test_unknown_application_is_404(staff_client: Client, db: None) -> None:
    assert staff_client.get("/platform/kyc/kyc_doesnotexist/").status_code == 404
    assert staff_client.post("/platform/kyc/kyc_doesnotexist/approve/").status_code == 404


def test_queue_and_detail_run_a_constant_number_of_queries(
    staff_client: Client, django_assert_max_num_queries: Any, db: None
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def make(n: int) -> KycApplication:
        last = None
        for i in range(n):
            org = OrganizationFactory.create()
            user = UserFactory.create()
            MembershipFactory.create(org=org, user=user, role=Role.OWNER)
            last = submit(org, user)
        assert last is not None
        return last

    make(2)
    with CaptureQueriesContext(connection) as small:
        staff_client.get("/platform/kyc/")
        staff_client.get("/platform/")
    last = make(12)
    with CaptureQueriesContext(connection) as large:
        staff_client.get("/platform/kyc/")
        staff_client.get("/platform/")
    assert len(small) == len(large)
    with CaptureQueriesContext(connection) as detail:
        assert staff_client.get(f"/platform/kyc/{last.public_id}/").status_code == 200
    assert len(detail) < 20
