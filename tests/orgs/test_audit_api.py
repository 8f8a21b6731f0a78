"""X-Actor-Id reaches the audit event of every member and organisation change made
through the API, and the dashboard shows it."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.test import Client

from accounts.models import User
from apikeys.scopes import all_scopes
from apikeys.services import apikey_create
from orgs.actors import Actor
from orgs.models import ActorType, AuditEvent, Membership, Organization, Role
from tests.conftest import signed_in_client
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(org: Organization) -> Any:
    key, secret = apikey_create(
        actor=Actor.system(), org=org, name="CRM sync", environment="test", scopes=all_scopes()
    )

    def call(method: str, path: str, body: Any = None, actor: str = "crm-user-42") -> Any:
        headers = {
            "Authorization": f"Bearer {secret}",
            "X-Actor-Id": actor,
            "Idempotency-Key": uuid.uuid4().hex,
        }
        data = json.dumps(body) if body is not None else ""
        return Client().generic(
            method, f"/api/v1/{path}", data, content_type="application/json", headers=headers
        )

    call.key = key  # type: ignore[attr-defined]
    return call


def _latest(org: Organization, action: str) -> AuditEvent:
    return AuditEvent.objects.filter(org=org, action=action).latest("created_at", "id")


def test_member_invite_role_change_and_removal_record_the_x_actor_id(
    api: Any, owner: User, org: Organization
) -> None:
    response = api("POST", "members", {"email": "new@example.com", "role": "member"})
    assert response.status_code == 201, response.content
    invited = _latest(org, "member.invited")
    assert invited.external_actor_id == "crm-user-42"
    assert invited.actor_type == ActorType.API_KEY and invited.actor_id == api.key.public_id

    bob = MembershipFactory.create(
        org=org, user=UserFactory.create(email="bob@acme.test"), role=Role.MEMBER
    )
    response = api("PATCH", f"members/{bob.public_id}", {"role": "admin"}, actor="crm-user-7")
    assert response.status_code == 200, response.content
    assert _latest(org, "member.role_changed").external_actor_id == "crm-user-7"

    carol = MembershipFactory.create(org=org, role=Role.MEMBER)
    response = api("DELETE", f"members/{carol.public_id}", actor="crm-user-9")
    assert response.status_code == 204, response.content
    assert not Membership.objects.filter(pk=carol.pk).exists()
    assert _latest(org, "member.removed").external_actor_id == "crm-user-9"


def test_organization_rename_records_the_x_actor_id(api: Any, org: Organization) -> None:
    response = api("PATCH", "organization", {"name": "Acme Corp"}, actor="admin-console-1")
    assert response.status_code == 200, response.content
    event = _latest(org, "org.settings_changed")
    assert event.external_actor_id == "admin-console-1"
    assert event.details == {"changes": {"name": {"from": "Acme", "to": "Acme Corp"}}}


def test_without_the_header_the_event_has_no_external_actor(api: Any, org: Organization) -> None:
    response = api("POST", "members", {"email": "x@example.com"}, actor="")
    assert response.status_code == 201, response.content
    assert _latest(org, "member.invited").external_actor_id == ""


def test_dashboard_lists_and_filters_api_events_by_x_actor_id(
    api: Any, owner: User, org: Organization
) -> None:
    api("POST", "members", {"email": "a@example.com"}, actor="crm-user-42")
    api("POST", "members", {"email": "b@example.com"}, actor="crm-user-43")
    client = signed_in_client(owner)
    html = client.get("/o/acme/audit/").content.decode()
    assert "crm-user-42" in html and "crm-user-43" in html and "API key" in html
    rows = client.get("/o/acme/audit/", {"actor": "crm-user-43"}).context["rows"]
    assert [row["event"].target_label for row in rows] == ["b@example.com"]
    # The API's audit endpoint reads the same selector, with the same actor matching.
    response = Client().get(
        "/api/v1/audit-events",
        {"actor": "crm-user-43"},
        headers={"Authorization": f"Bearer {_secret_of_new_reader(org)}"},
    )
    assert response.status_code == 200, response.content
    events = response.json()["results"]
    assert [e["actor"]["external_id"] for e in events] == ["crm-user-43"]


def _secret_of_new_reader(org: Organization) -> str:
    _, secret = apikey_create(
        actor=Actor.system(), org=org, name="Reader", environment="test", scopes=["audit_log:read"]
    )
    return secret
