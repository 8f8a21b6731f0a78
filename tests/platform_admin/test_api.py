"""The KYC endpoint (org keys) and the platform endpoints (system keys)."""

from __future__ import annotations

import base64
import json
import tempfile
from collections.abc import Callable
from typing import Any

import pytest
from django.core import mail

from accounts.models import User
from apikeys import idempotency
from apikeys.services import apikey_create, apikey_revoke
from orgs.actors import Actor
from orgs.models import AuditEvent, KycStatus, Organization, OrgStatus
from platform_admin import services
from platform_admin.models import KycApplication
from tests.apikeys.api.conftest import ApiClient
from tests.platform_admin.conftest import pdf_bytes, png_bytes, submit, upload

KYC_BODY = {
    "legal_name": "Acme Corporation Ltd",
    "registration_number": "RC-123456",
    "country": "GB",
    "address": "1 High Street, London",
    "director_name": "Wile E. Coyote",
}


def b64(content: bytes) -> str:
    return base64.b64encode(content).decode()


@pytest.fixture
def org_api(org: Organization) -> Callable[..., ApiClient]:
    def make(*scopes: str) -> ApiClient:
        _, secret = apikey_create(
            actor=Actor.system(), org=org, name="integration", environment="test", scopes=scopes
        )
        return ApiClient(secret)

    return make


@pytest.fixture
def system_api(platform_owner: User) -> Callable[..., ApiClient]:
    def make(*scopes: str) -> ApiClient:
        _, secret = services.system_key_create(
            name="back office", scopes=list(scopes), actor=Actor.for_user(platform_owner)
        )
        return ApiClient(secret)

    return make


def error_code(response: Any) -> str:
    return str(response.json()["error"]["code"])


# --- GET, POST kyc ---------------------------------------------------------------------------


def test_get_kyc_before_and_after_a_submission(
    org_api: Callable[..., ApiClient], org: Organization, admin_user: User
) -> None:
    api = org_api("kyc:read")
    response = api.get("kyc")
    assert response.status_code == 200
    assert response.json() == {"object": "kyc", "status": "not_submitted", "application": None}

    application = submit(org, admin_user)
    body = api.get("kyc").json()
    assert body["status"] == "pending"
    assert body["application"]["id"] == application.public_id
    assert body["application"]["submitted_by"] == admin_user.email
    [document] = body["application"]["documents"]
    assert document["id"].startswith("doc_") and document["content_type"] == "application/pdf"
    assert set(document) == {
        "object", "id", "filename", "content_type", "size", "sha256", "uploaded_at"
    }  # fmt: skip
    assert "PDF" not in json.dumps(body)  # metadata only, never bytes


def test_post_kyc_with_json_and_base64_documents(
    org_api: Callable[..., ApiClient], org: Organization
) -> None:
    api = org_api("kyc:write")
    response = api.post(
        "kyc",
        {
            **KYC_BODY,
            "documents": [
                {"filename": "cert.pdf", "content_base64": b64(pdf_bytes())},
                {"filename": "bill.png", "content_base64": b64(png_bytes())},
            ],
        },
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "pending"
    assert len(body["application"]["documents"]) == 2
    org.refresh_from_db()
    assert org.kyc_status == KycStatus.PENDING
    event = AuditEvent.objects.get(action="kyc.submitted")
    assert event.actor_type == "api_key" and event.org == org

    again = api.post(
        "kyc",
        {**KYC_BODY, "documents": [{"filename": "x.pdf", "content_base64": b64(pdf_bytes())}]},
    )
    assert again.status_code == 409
    assert again.json()["error"]["reason"] == "kyc_pending"


def test_post_kyc_with_multipart(org_api: Callable[..., ApiClient], org: Organization) -> None:
    api = org_api("kyc:write")
    response = api.multipart(
        "kyc", {**KYC_BODY, "documents": [upload("scan.jpg", b"\xff\xd8\xff\xe0" + b"0" * 50)]}
    )
    assert response.status_code == 201, response.json()
    [document] = response.json()["application"]["documents"]
    assert document["content_type"] == "image/jpeg"


def test_post_kyc_with_multipart_documents_of_the_documented_size_is_idempotent(
    org_api: Callable[..., ApiClient], org: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several MB of documents (10 MB each are allowed): the idempotency fingerprint is
    taken as a stream, and the same upload under the same key is replayed. The body's
    temporary file is closed (and so deleted) once the request is handled."""
    spools: list[Any] = []

    class WatchedSpool(tempfile.SpooledTemporaryFile):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            spools.append(self)

    monkeypatch.setattr(idempotency.tempfile, "SpooledTemporaryFile", WatchedSpool)
    api = org_api("kyc:write")
    big = b"\xff\xd8\xff\xe0" + b"0" * (3 * 1024 * 1024)
    data = {
        **KYC_BODY,
        "documents": [upload("a.jpg", big, "image/jpeg"), upload("b.jpg", big, "image/jpeg")],
    }
    headers = {**api.headers, "Idempotency-Key": "kyc-upload-1"}
    first = api.client.post("/api/v1/kyc", data, headers=headers)
    assert first.status_code == 201, first.content[:500]
    assert [d["size"] for d in first.json()["application"]["documents"]] == [len(big)] * 2
    assert len(spools) == 1 and spools[0].closed
    data["documents"] = [upload("a.jpg", big, "image/jpeg"), upload("b.jpg", big, "image/jpeg")]
    again = api.client.post("/api/v1/kyc", data, headers=headers)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    data["documents"] = [upload("c.jpg", big, "image/jpeg")]
    other = api.client.post("/api/v1/kyc", data, headers=headers)
    assert other.status_code == 422
    assert error_code(other) == "idempotency_key_reused"


@pytest.mark.parametrize("status", [KycStatus.APPROVED, KycStatus.PENDING])
def test_post_kyc_is_409_for_an_org_approved_or_pending_without_an_application(
    status: str, org_api: Callable[..., ApiClient], org: Organization
) -> None:
    Organization.objects.filter(pk=org.pk).update(kyc_status=status)
    api = org_api("kyc:write")
    response = api.post(
        "kyc",
        {**KYC_BODY, "documents": [{"filename": "c.pdf", "content_base64": b64(pdf_bytes())}]},
    )
    assert response.status_code == 409 and error_code(response) == "conflict"
    org.refresh_from_db()
    assert org.kyc_status == status
    assert not KycApplication.objects.filter(org=org).exists()


def test_me_shows_the_kyc_status_at_once_after_a_submission(
    org_api: Callable[..., ApiClient], org: Organization
) -> None:
    api = org_api("kyc:write")
    for _ in range(3):  # warm the key's cached view of the org
        assert api.get("me").json()["organization"]["kyc_status"] == "not_submitted"
    submitted = api.post(
        "kyc",
        {**KYC_BODY, "documents": [{"filename": "c.pdf", "content_base64": b64(pdf_bytes())}]},
    )
    assert submitted.status_code == 201
    assert api.get("me").json()["organization"]["kyc_status"] == "pending"


def test_post_kyc_refuses_a_text_file_named_pdf_and_bad_fields(
    org_api: Callable[..., ApiClient], org: Organization
) -> None:
    api = org_api("kyc:write")
    fake = [{"filename": "passport.pdf", "content_base64": b64(b"hello, not a pdf")}]
    response = api.post("kyc", {**KYC_BODY, "documents": fake})
    assert response.status_code == 400
    assert error_code(response) == "validation_error"
    assert "not a PDF, PNG or JPEG" in response.json()["error"]["message"]

    no_docs = api.post("kyc", KYC_BODY)
    assert no_docs.status_code == 400
    bad_country = api.post(
        "kyc",
        {
            **KYC_BODY,
            "country": "ZZ",
            "documents": [{"filename": "c.pdf", "content_base64": b64(pdf_bytes())}],
        },
    )
    assert bad_country.status_code == 400
    assert bad_country.json()["error"]["param"] == "country"
    bad_base64 = api.post(
        "kyc", {**KYC_BODY, "documents": [{"filename": "c.pdf", "content_base64": "%%%"}]}
    )
    assert bad_base64.status_code == 400
    unknown = api.post("kyc", {**KYC_BODY, "nickname": "x"})
    assert unknown.status_code == 400
    assert not KycApplication.objects.exists()


def test_kyc_scopes_are_enforced(org_api: Callable[..., ApiClient], org: Organization) -> None:
    reader = org_api("kyc:read")
    response = reader.post("kyc", KYC_BODY)
    assert response.status_code == 403
    assert response.json()["error"]["required_scope"] == "kyc:write"
    other = org_api("members:read")
    assert error_code(other.get("kyc")) == "insufficient_scope"


def test_kyc_is_the_keys_own_org_only(
    org_api: Callable[..., ApiClient], org: Organization, other_org: Organization
) -> None:
    submit(other_org, None, legal_name="Globex Inc")
    body = org_api("kyc:read").get("kyc").json()
    assert body["status"] == "not_submitted" and body["application"] is None


def test_system_keys_are_refused_on_the_org_kyc_endpoint(
    system_api: Callable[..., ApiClient], org: Organization
) -> None:
    api = system_api("platform_kyc:write", "platform_organizations:write")
    response = api.get("kyc")
    assert response.status_code == 403
    assert error_code(response) == "insufficient_scope"
    assert api.get("organization").status_code == 403


def test_a_suspended_orgs_keys_are_refused(
    org_api: Callable[..., ApiClient], org: Organization, staff_user: User
) -> None:
    api = org_api("kyc:read")
    assert api.get("kyc").status_code == 200
    services.org_suspend(org=org, actor=Actor.for_user(staff_user))
    response = api.get("kyc")
    assert response.status_code == 403
    assert error_code(response) == "org_suspended"
    services.org_reactivate(org=org, actor=Actor.for_user(staff_user))
    assert api.get("kyc").status_code == 200


# --- platform endpoints ---------------------------------------------------------------------


PLATFORM_READS = ["platform/organizations", "platform/kyc-applications"]


@pytest.mark.parametrize("path", PLATFORM_READS)
def test_org_keys_are_refused_on_platform_endpoints(
    org_api: Callable[..., ApiClient], path: str
) -> None:
    from apikeys.scopes import all_scopes

    response = org_api(*all_scopes()).get(path)
    assert response.status_code == 403
    assert error_code(response) == "insufficient_scope"


def test_platform_scopes_are_enforced(system_api: Callable[..., ApiClient]) -> None:
    kyc_only = system_api("platform_kyc:read")
    assert kyc_only.get("platform/kyc-applications").status_code == 200
    response = kyc_only.get("platform/organizations")
    assert response.status_code == 403
    assert response.json()["error"]["required_scope"] == "platform_organizations:read"
    assert error_code(kyc_only.post("platform/kyc-applications/kyc_x/approve")) == (
        "insufficient_scope"
    )


def test_a_revoked_system_key_is_refused(platform_owner: User) -> None:
    key, secret = services.system_key_create(
        name="old", scopes=["platform_kyc:read"], actor=Actor.for_user(platform_owner)
    )
    apikey_revoke(key=key, actor=Actor.for_user(platform_owner))
    response = ApiClient(secret).get("platform/kyc-applications")
    assert response.status_code == 401
    assert error_code(response) == "api_key_revoked"


def test_list_and_get_organisations(
    system_api: Callable[..., ApiClient], org: Organization, other_org: Organization, owner: User
) -> None:
    api = system_api("platform_organizations:read")
    body = api.get("platform/organizations").json()
    assert {o["id"] for o in body["results"]} == {org.public_id, other_org.public_id}
    assert set(body) == {"next", "previous", "results"}
    found = api.get("platform/organizations", query={"q": "glob"}).json()["results"]
    assert [o["slug"] for o in found] == ["globex"]
    detail = api.get(f"platform/organizations/{org.public_id}").json()
    assert detail["slug"] == "acme" and detail["member_count"] == 1
    assert detail["limits"] == {"per_minute": 60, "burst": 10, "monthly": 100000}
    assert api.get("platform/organizations/org_doesnotexist").status_code == 404


def test_create_an_organisation(system_api: Callable[..., ApiClient], db: None) -> None:
    api = system_api("platform_organizations:write")
    response = api.post(
        "platform/organizations",
        {
            "name": "Initech",
            "slug": "initech",
            "owner_email": "Bill@Initech.test",
            "plan": "growth",
        },
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["slug"] == "initech" and body["plan"] == "growth" and body["member_count"] == 1
    org = Organization.objects.get(slug="initech")
    assert org.memberships.get().user.email == "bill@initech.test"
    event = AuditEvent.objects.get(action="platform.org_created")
    assert event.actor_type == "api_key" and event.org == org
    taken = api.post(
        "platform/organizations",
        {"name": "Again", "slug": "initech", "owner_email": "x@initech.test"},
    )
    assert taken.status_code == 409


def test_patch_plan_limits_and_suspension(
    system_api: Callable[..., ApiClient], org: Organization, org_api: Callable[..., ApiClient]
) -> None:
    api = system_api("platform_organizations:write")
    org_key = org_api("kyc:read")
    url = f"platform/organizations/{org.public_id}"

    response = api.patch(url, {"plan": "enterprise", "custom_limits": {"burst": 500}})
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["plan"] == "enterprise"
    assert body["custom_limits"] == {"per_minute": None, "burst": 500, "monthly": None}
    assert body["limits"] == {"per_minute": 6000, "burst": 500, "monthly": 50000000}

    response = api.patch(url, {"status": "suspended", "suspension_reason": "Fraud review"})
    assert response.json()["status"] == "suspended"
    assert error_code(org_key.get("kyc")) == "org_suspended"
    assert api.patch(url, {"status": "active"}).json()["status"] == "active"
    assert org_key.get("kyc").status_code == 200

    actions = set(AuditEvent.objects.filter(org=org).values_list("action", flat=True))
    assert {"org.plan_changed", "org.limits_changed", "org.suspended", "org.reactivated"} <= (
        actions
    )
    suspended = AuditEvent.objects.get(action="org.suspended")
    assert suspended.actor_type == "api_key" and suspended.details == {"reason": "Fraud review"}

    assert api.patch(url, {"plan": "platinum"}).status_code == 400
    assert api.patch(url, {"custom_limits": {"burst": -1}}).status_code == 400
    org.refresh_from_db()
    assert org.status == OrgStatus.ACTIVE and org.custom_burst == 500


def test_list_approve_and_reject_kyc_applications(
    system_api: Callable[..., ApiClient],
    org: Organization,
    other_org: Organization,
    owner: User,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    api = system_api("platform_kyc:write")
    first = submit(org, owner)
    second = submit(other_org, None, legal_name="Globex Inc")
    listing = api.get("platform/kyc-applications", query={"status": "pending"}).json()["results"]
    assert [a["id"] for a in listing] == [first.public_id, second.public_id]
    assert listing[0]["organization"]["id"] == org.public_id
    assert listing[0]["documents"][0]["filename"] == "incorporation.pdf"

    with django_capture_on_commit_callbacks(execute=True):
        approved = api.post(f"platform/kyc-applications/{first.public_id}/approve")
    assert approved.status_code == 200, approved.json()
    assert approved.json()["status"] == "approved"
    org.refresh_from_db()
    assert org.kyc_status == KycStatus.APPROVED
    assert [m.to for m in mail.outbox] == [[owner.email]]

    missing_reason = api.post(f"platform/kyc-applications/{second.public_id}/reject", {})
    assert missing_reason.status_code == 400
    rejected = api.post(
        f"platform/kyc-applications/{second.public_id}/reject", {"reason": "Unreadable scan"}
    )
    assert rejected.json()["status"] == "rejected"
    assert rejected.json()["rejection_reason"] == "Unreadable scan"

    twice = api.post(f"platform/kyc-applications/{first.public_id}/approve")
    assert twice.status_code == 409 and twice.json()["error"]["reason"] == "kyc_not_pending"
    assert api.post("platform/kyc-applications/kyc_nothere/approve").status_code == 404
    event = AuditEvent.objects.get(action="kyc.approved")
    assert event.actor_type == "api_key" and event.org == org


def test_several_bad_fields_are_one_service_error_listing_every_field(
    org: Organization, owner: User
) -> None:
    """The KYC service refuses every bad field at once with one `InvalidFields` (a
    `ServiceError`); the API lists each field in `errors`, the first as `param`."""
    from config.errors import InvalidFields, ServiceError

    bad = {**KYC_BODY, "country": "ZZ", "director_name": "", "legal_name": "x" * 500}
    with pytest.raises(InvalidFields) as refused:
        services.kyc_submit(
            org=org,
            documents=[upload("c.pdf", pdf_bytes())],
            actor=Actor.for_user(owner),
            legal_name=bad["legal_name"],
            registration_number=bad["registration_number"],
            country=bad["country"],
            address=bad["address"],
            director_name=bad["director_name"],
        )
    assert isinstance(refused.value, ServiceError)
    assert set(refused.value.fields) == {"country", "director_name", "legal_name"}

    # The API's one mapping lists every field, the first as `param`.
    from django.test import RequestFactory

    from apikeys.exceptions import error_response_for

    response = error_response_for(refused.value, RequestFactory().post("/api/v1/kyc"))
    assert response.status_code == 400
    error = response.data["error"]
    assert error["code"] == "validation_error"
    assert {item["param"] for item in error["errors"]} == set(refused.value.fields)
    assert error["param"] == error["errors"][0]["param"]
    assert not KycApplication.objects.exists()
