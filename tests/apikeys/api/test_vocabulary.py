"""One vocabulary: what an audit event's target is, `me`'s `object`, and the words of
`object` and `actor.type` are the same names (ADR 0080)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from apikeys.serializers import target_type
from orgs.models import Organization, Role
from tests.apikeys.api.conftest import ApiClient
from tests.factories import MembershipFactory
from tests.platform_admin.conftest import pdf_bytes

pytestmark = pytest.mark.django_db


def test_me_names_its_object_like_every_resource(full_client: ApiClient) -> None:
    body = full_client.get("me").json()
    assert body["object"] == "me"
    assert next(iter(body)) == "object"  # first, as in every other resource


def test_audit_targets_are_named_as_the_object_of_their_resource(
    org: Organization, full_client: ApiClient, settings: Any, tmp_path: Path
) -> None:
    settings.PRIVATE_MEDIA_ROOT = tmp_path / "private"
    org.custom_burst = 0  # a burst of requests, not a test of the limiter
    org.save(update_fields=["custom_burst"])
    member = MembershipFactory.create(org=org, role=Role.MEMBER)
    objects: dict[str, str] = {}

    def remember(response: Any, status: int = 200) -> dict[str, Any]:
        assert response.status_code == status, response.content[:300]
        body: dict[str, Any] = response.json()
        objects[body["id"]] = body["object"]
        return body

    remember(full_client.post("api-keys", {"name": "Audited", "scopes": ["usage:read"]}), 201)
    remember(full_client.patch("organization", {"name": "Acme Renamed"}))
    remember(full_client.post("members", {"email": "new@example.com"}), 201)
    remember(full_client.patch(f"members/{member.public_id}", {"role": "admin"}))
    document = {"filename": "cert.pdf", "content_base64": base64.b64encode(pdf_bytes()).decode()}
    kyc = full_client.post(
        "kyc",
        {
            "legal_name": "Acme Ltd",
            "registration_number": "01234567",
            "country": "GB",
            "address": "1 High Street",
            "director_name": "Ada Director",
            "documents": [document],
        },
    )
    assert kyc.status_code == 201, kyc.content[:300]
    application = kyc.json()["application"]
    objects[application["id"]] = application["object"]
    assert set(objects.values()) == {
        "api_key",
        "organization",
        "invitation",
        "member",
        "kyc_application",
    }

    events = full_client.get("audit-events", query={"limit": "100"}).json()["results"]
    named = {e["target"]["id"]: e["target"]["type"] for e in events if e["target"]["id"]}
    for target_id, word in objects.items():
        assert named[target_id] == word, (target_id, named)
    actors = {e["actor"]["type"] for e in events}
    assert actors <= {"user", "api_key", "system"}


def test_stored_model_names_are_shown_in_the_apis_words() -> None:
    # Events recorded before the API spoke one vocabulary keep their stored names.
    assert target_type("apikey") == "api_key"
    assert target_type("kycapplication") == "kyc_application"
    assert target_type("kycdocument") == "kyc_document"
    assert target_type("membership") == "member"
    assert target_type("organization") == "organization"
    assert target_type("") == ""
