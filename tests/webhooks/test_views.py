"""The webhooks pages: members read, owners and admins manage; the secret is shown once;
disable and delete ask first."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from standardwebhooks import Webhook

from orgs.actors import Actor
from orgs.models import Organization
from tests.webhooks.conftest import Receiver
from webhooks.models import DeliveryStatus, WebhookEndpoint
from webhooks.services import endpoint_create

pytestmark = pytest.mark.django_db

Capture = Callable[..., Any]


def test_an_owner_adds_an_endpoint_and_sees_the_secret_once(
    owner_client: Client, org: Organization, receiver: Receiver
) -> None:
    response = owner_client.post(
        "/o/acme/webhooks/new/",
        {"url": receiver.url, "description": "Ops", "events": ["member.joined"]},
    )
    assert response.status_code == 200
    html = response.content.decode()
    endpoint = WebhookEndpoint.objects.get(org=org)
    assert endpoint.events == ["member.joined"]
    secret = html.split('id="webhook-secret">')[1].split("<")[0]
    assert secret.startswith("whsec_")
    for page in ("/o/acme/webhooks/", f"/o/acme/webhooks/{endpoint.public_id}/"):
        shown = owner_client.get(page)
        assert shown.status_code == 200 and secret not in shown.content.decode()


def test_a_private_url_is_refused_in_the_form(
    owner_client: Client, org: Organization, settings: Any
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = False
    response = owner_client.post("/o/acme/webhooks/new/", {"url": "http://10.0.0.1/x"})
    assert response.status_code == 400 and b"private" in response.content
    assert not WebhookEndpoint.objects.exists()


def test_members_read_but_do_not_manage(
    member_client: Client, org: Organization, receiver: Receiver
) -> None:
    endpoint, _ = endpoint_create(org=org, url=receiver.url, actor=Actor.system())
    assert member_client.get("/o/acme/webhooks/").status_code == 200
    detail = member_client.get(f"/o/acme/webhooks/{endpoint.public_id}/")
    assert detail.status_code == 200 and b'id="send-test"' not in detail.content
    assert member_client.get("/o/acme/webhooks/new/").status_code == 403
    assert member_client.post(f"/o/acme/webhooks/{endpoint.public_id}/test/").status_code == 403
    assert member_client.post(f"/o/acme/webhooks/{endpoint.public_id}/delete/").status_code == 403
    assert WebhookEndpoint.objects.filter(pk=endpoint.pk).exists()


def test_another_orgs_endpoint_is_a_404(
    owner_client: Client, other_org: Organization, receiver: Receiver
) -> None:
    theirs, _ = endpoint_create(org=other_org, url=receiver.url, actor=Actor.system())
    assert owner_client.get(f"/o/acme/webhooks/{theirs.public_id}/").status_code == 404
    assert owner_client.post(f"/o/acme/webhooks/{theirs.public_id}/test/").status_code == 404


def test_test_resend_disable_enable_and_delete_from_the_detail_page(
    owner_client: Client,
    org: Organization,
    receiver: Receiver,
    django_capture_on_commit_callbacks: Capture,
) -> None:
    endpoint, secret = endpoint_create(org=org, url=receiver.url, actor=Actor.system())
    base = f"/o/acme/webhooks/{endpoint.public_id}/"
    with django_capture_on_commit_callbacks(execute=True):
        assert owner_client.post(base + "test/").status_code == 302
    Webhook(secret).verify(receiver.received[0].body, receiver.received[0].headers)
    delivery = endpoint.deliveries.get()
    assert delivery.status == DeliveryStatus.SUCCEEDED
    page = owner_client.get(base).content.decode()
    assert delivery.event_id in page and "HTTP 200" in page

    with django_capture_on_commit_callbacks(execute=True):
        owner_client.post(base + f"deliveries/{delivery.public_id}/resend/")
    assert len(receiver.received) == 2

    ask = owner_client.get(base + "disable/")
    assert ask.status_code == 200 and b'id="confirm-disable"' in ask.content
    endpoint.refresh_from_db()
    assert endpoint.enabled  # asking changes nothing
    assert owner_client.post(base + "disable/").status_code == 302
    endpoint.refresh_from_db()
    assert not endpoint.enabled
    owner_client.post(base + "enable/")
    endpoint.refresh_from_db()
    assert endpoint.enabled

    assert b'id="confirm-delete"' in owner_client.get(base + "delete/").content
    assert owner_client.post(base + "delete/").status_code == 302
    assert not WebhookEndpoint.objects.exists()


def test_the_settings_page_leads_to_the_webhooks(owner_client: Client, org: Organization) -> None:
    response = owner_client.get("/o/acme/settings/")
    assert response.status_code == 200
    assert b'href="/o/acme/webhooks/" id="webhooks-link"' in response.content
