"""Each wired event produces one delivery per subscribed endpoint, in the transaction of
the change, with ids and names only (docs/webhooks.md)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import transaction

from accounts.models import User
from apikeys.services import apikey_create, apikey_revoke, apikey_rotate
from orgs.actors import Actor
from orgs.models import Membership, Organization
from orgs.services import invitation_accept, member_invite, membership_leave, membership_remove
from platform_admin.services import kyc_approve, kyc_reject
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory
from tests.platform_admin.conftest import submit
from webhooks.events import emit
from webhooks.models import WebhookDelivery
from webhooks.services import endpoint_create, endpoint_disable

pytestmark = pytest.mark.django_db


@pytest.fixture
def endpoint_url(settings: Any) -> str:
    settings.WEBHOOK_ALLOW_PRIVATE = True
    return "http://127.0.0.1:9/hooks"  # never reached: on-commit callbacks do not run


def deliveries(event_type: str) -> list[WebhookDelivery]:
    return list(WebhookDelivery.objects.filter(event_type=event_type))


def only(event_type: str) -> dict[str, Any]:
    (delivery,) = deliveries(event_type)
    payload: dict[str, Any] = delivery.payload
    assert payload["type"] == event_type and "timestamp" in payload
    return payload["data"]


def test_api_key_created_rotated_and_revoked(org: Organization, endpoint_url: str) -> None:
    endpoint_create(org=org, url=endpoint_url, actor=Actor.system())
    key, secret = apikey_create(
        actor=Actor.system(), org=org, name="CI", environment="test", scopes=["members:read"]
    )
    assert only("api_key.created")["api_key"]["id"] == key.public_id
    successor, new_secret = apikey_rotate(key=key, actor=Actor.system())
    data = only("api_key.rotated")
    assert data["api_key"]["id"] == key.public_id
    assert data["successor"]["id"] == successor.public_id
    apikey_revoke(key=successor, actor=Actor.system())
    apikey_revoke(
        key=successor, actor=Actor.system()
    )  # revoking again changes nothing, sends nothing
    assert only("api_key.revoked")["api_key"] == {
        "id": successor.public_id,
        "name": "CI",
        "environment": "test",
        "expires_at": None,
    }
    stored = json.dumps([d.payload for d in WebhookDelivery.objects.all()])
    for value in (secret, new_secret, key.digest, successor.digest):
        assert value not in stored


def test_kyc_approved_and_rejected(org: Organization, staff_user: User, endpoint_url: str) -> None:
    endpoint_create(org=org, url=endpoint_url, actor=Actor.system())
    application = submit(org, None)
    kyc_approve(application=application, actor=Actor.for_user(staff_user))
    data = only("kyc.approved")
    assert data["application"]["id"] == application.public_id
    assert data["organization"]["id"] == org.public_id

    other = OrganizationFactory.create(name="Initech", slug="initech")
    endpoint_create(org=other, url=endpoint_url, actor=Actor.system())
    rejected = submit(other, None)
    kyc_reject(
        application=rejected, reason="The document is unreadable.", actor=Actor.for_user(staff_user)
    )
    assert only("kyc.rejected")["application"]["id"] == rejected.public_id
    assert len(deliveries("kyc.approved")) == 1  # Initech's endpoint heard nothing of Acme


def test_member_joined_and_removed(
    org: Organization, owner: User, admin_user: User, endpoint_url: str
) -> None:
    endpoint_create(org=org, url=endpoint_url, actor=Actor.system())
    invitation = member_invite(
        org=org, email="new@acme.test", role="member", actor=Actor.for_user(owner)
    )
    newcomer = UserFactory.create(email="new@acme.test")
    membership = invitation_accept(user=newcomer, invitation=invitation)
    data = only("member.joined")
    assert data["member"] == {
        "id": membership.public_id,
        "user": {"email": "new@acme.test"},
        "role": "member",
    }
    owner_membership = Membership.objects.get(org=org, user=owner)
    membership_remove(membership=membership, actor=Actor.for_member(owner_membership))
    data = only("member.removed")
    assert data["member"]["id"] == membership.public_id and data["how"] == "removed"

    leaver = MembershipFactory.create(org=org, user=UserFactory.create(email="bye@acme.test"))
    membership_leave(membership=leaver)
    assert len(deliveries("member.removed")) == 2


def test_one_delivery_per_subscribed_enabled_endpoint_and_none_in_another_org(
    org: Organization, other_org: Organization, endpoint_url: str
) -> None:
    first, _ = endpoint_create(org=org, url=endpoint_url, actor=Actor.system())
    second, _ = endpoint_create(
        org=org, url=endpoint_url + "/2", events=["api_key.created"], actor=Actor.system()
    )
    endpoint_create(
        org=org, url=endpoint_url + "/3", events=["member.joined"], actor=Actor.system()
    )
    disabled, _ = endpoint_create(org=org, url=endpoint_url + "/4", actor=Actor.system())
    endpoint_disable(endpoint=disabled, actor=Actor.system())
    endpoint_create(org=other_org, url=endpoint_url, actor=Actor.system())
    apikey_create(
        actor=Actor.system(), org=org, name="CI", environment="test", scopes=["members:read"]
    )
    created = deliveries("api_key.created")
    assert sorted(d.endpoint_id for d in created) == sorted([first.pk, second.pk])
    assert len({d.event_id for d in created}) == 1  # one event, one webhook-id


def test_a_rolled_back_change_sends_nothing(org: Organization, endpoint_url: str) -> None:
    endpoint_create(org=org, url=endpoint_url, actor=Actor.system())
    with pytest.raises(RuntimeError), transaction.atomic():
        apikey_create(
            actor=Actor.system(), org=org, name="CI", environment="test", scopes=["members:read"]
        )
        raise RuntimeError
    assert not WebhookDelivery.objects.exists()


def test_an_unknown_event_type_is_a_programming_error(org: Organization) -> None:
    with pytest.raises(ValueError, match="Unknown webhook event"):
        emit(org, "api_key.renamed", {})


def test_a_leaked_key_is_revoked_announced_and_its_admins_told_once(
    org: Organization,
    endpoint_url: str,
    owner: User,
    django_capture_on_commit_callbacks: Any,
) -> None:
    from django.core import mail

    from apikeys.services import apikey_report_leaked
    from orgs.models import AuditEvent, Role

    admin = MembershipFactory.create(org=org, role=Role.ADMIN).user
    reader = MembershipFactory.create(org=org, role=Role.MEMBER).user
    endpoint_create(org=org, url=endpoint_url, actor=Actor.system())
    key, secret = apikey_create(
        actor=Actor.system(), org=org, name="CI", environment="test", scopes=["members:read"]
    )
    found = "https://gist.example.com/someone/abc"
    with django_capture_on_commit_callbacks(execute=True):
        assert apikey_report_leaked(key=key, source="GitHub secret scanning", url=found)
    key.refresh_from_db()
    assert key.revoked_at is not None
    data = only("api_key.leaked")
    assert data["api_key"]["id"] == key.public_id and data["url"] == found
    assert deliveries("api_key.revoked")
    event = AuditEvent.objects.get(action="api_key.leaked")
    assert event.target_id == key.public_id and event.details["source"] == "GitHub secret scanning"
    leaked_emails = [m for m in mail.outbox if "exposed" in m.subject]
    assert sorted(a for m in leaked_emails for a in m.to) == sorted([owner.email, admin.email])
    assert reader.email not in {a for m in leaked_emails for a in m.to}
    body = leaked_emails[0].body
    assert f"/o/{org.slug}/api-keys/{key.public_id}/" in body
    assert found not in body and secret not in body  # no stranger's link, no secret

    # A second report of the same key changes nothing and sends nothing.
    sent = len(mail.outbox)
    with django_capture_on_commit_callbacks(execute=True):
        assert not apikey_report_leaked(key=key, source="someone else", url=found)
    assert len(deliveries("api_key.leaked")) == 1 and len(mail.outbox) == sent


def test_an_org_that_flags_leaks_keeps_the_key_working_and_says_so(
    org: Organization,
    endpoint_url: str,
    owner: User,
    django_capture_on_commit_callbacks: Any,
) -> None:
    from django.core import mail
    from django.test import Client

    from apikeys.models import KeyStatus
    from apikeys.services import apikey_report_leaked
    from orgs.models import AuditEvent, LeakResponse

    Organization.objects.filter(pk=org.pk).update(leak_response=LeakResponse.FLAG)
    org.refresh_from_db()
    endpoint_create(org=org, url=endpoint_url, actor=Actor.system())
    key, secret = apikey_create(
        actor=Actor.system(), org=org, name="CI", environment="test", scopes=["members:read"]
    )
    me = Client().get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200  # the key is cached as not leaked
    with django_capture_on_commit_callbacks(execute=True):
        assert apikey_report_leaked(key=key, source="report", url="https://paste.example/x")
    key.refresh_from_db()
    assert key.revoked_at is None and key.leaked_at is not None
    assert key.status == KeyStatus.LEAKED
    me = Client().get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200  # still working
    _, reader = apikey_create(
        actor=Actor.system(), org=org, name="A", environment="test", scopes=["api_keys:read"]
    )
    listed = (
        Client()
        .get(
            "/api/v1/api-keys", {"status": "leaked"}, headers={"Authorization": f"Bearer {reader}"}
        )
        .json()
    )
    assert [k["id"] for k in listed["results"]] == [key.public_id]
    assert listed["results"][0]["status"] == "leaked"
    assert only("api_key.leaked")["revoked"] is False
    assert not deliveries("api_key.revoked")
    event = AuditEvent.objects.get(action="api_key.leaked")
    assert event.details["response"] == "flagged"
    email = next(m for m in mail.outbox if "exposed" in m.subject)
    assert "still working" in email.subject and "still works" in email.body
    # Flagged once: a second report does nothing; a revoked key cannot be reported.
    with django_capture_on_commit_callbacks(execute=True):
        assert not apikey_report_leaked(key=key, source="report")
    other, _ = apikey_create(
        actor=Actor.system(), org=org, name="Old", environment="test", scopes=["members:read"]
    )
    apikey_revoke(key=other, actor=Actor.system())
    assert not apikey_report_leaked(key=other, source="report")
    assert AuditEvent.objects.filter(action="api_key.leaked").count() == 1


def test_only_an_owner_changes_what_a_leak_report_does(org: Organization, owner: User) -> None:
    from orgs.models import LeakResponse, Role
    from orgs.services import OrgError, org_update_settings

    admin = MembershipFactory.create(org=org, role=Role.ADMIN)
    with pytest.raises(OrgError) as caught:
        org_update_settings(
            org=org,
            name=org.name,
            slug=org.slug,
            require_two_factor=org.require_two_factor,
            leak_response=LeakResponse.FLAG,
            actor=Actor.for_member(admin),
        )
    assert caught.value.code == "forbidden"
    owner_membership = Membership.objects.get(org=org, user=owner)
    org_update_settings(
        org=org,
        name=org.name,
        slug=org.slug,
        require_two_factor=org.require_two_factor,
        leak_response=LeakResponse.FLAG,
        actor=Actor.for_member(owner_membership),
    )
    org.refresh_from_db()
    assert org.leak_response == LeakResponse.FLAG
