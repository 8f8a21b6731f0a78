"""The `webhook-endpoints` API: scope `webhooks` (read to look, write to change), the
signing secret in the create response only, another org's endpoints a 404."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from standardwebhooks import Webhook

from orgs.actors import Actor
from orgs.models import AuditEvent, Organization
from tests.apikeys.api.conftest import ApiClient, assert_error
from tests.webhooks.conftest import Receiver
from webhooks.models import WebhookEndpoint

pytestmark = pytest.mark.django_db

Clients = Callable[..., ApiClient]
Capture = Callable[..., Any]


def test_create_shows_the_secret_once_and_never_again(
    api_client_with_scopes: Clients, receiver: Receiver
) -> None:
    client = api_client_with_scopes("webhooks:write")
    response = client.post(
        "webhook-endpoints",
        {"url": receiver.url, "description": "Billing", "events": ["api_key.created"]},
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["object"] == "webhook_endpoint" and body["id"].startswith("whe_")
    assert body["secret"].startswith("whsec_")
    assert body["events"] == ["api_key.created"] and body["enabled"] is True
    secret = body["secret"]

    got = client.get(f"webhook-endpoints/{body['id']}")
    assert got.status_code == 200 and "secret" not in got.json()
    listed = client.get("webhook-endpoints")
    assert listed.status_code == 200
    assert [e["id"] for e in listed.json()["results"]] == [body["id"]]
    assert secret not in listed.content.decode() and secret not in got.content.decode()
    event = AuditEvent.objects.get(action="webhook_endpoint.created")
    assert secret.removeprefix("whsec_") not in str(event.details)


def test_read_scope_lists_but_cannot_change(
    api_client_with_scopes: Clients, org: Organization, receiver: Receiver
) -> None:
    from webhooks.services import endpoint_create

    endpoint, _ = endpoint_create(org=org, url=receiver.url, actor=Actor.system())
    reader = api_client_with_scopes("webhooks:read")
    assert reader.get("webhook-endpoints").status_code == 200
    assert reader.get(f"webhook-endpoints/{endpoint.public_id}/deliveries").status_code == 200
    for method, path, body in [
        ("post", "webhook-endpoints", {"url": receiver.url}),
        ("patch", f"webhook-endpoints/{endpoint.public_id}", {"description": "x"}),
        ("delete", f"webhook-endpoints/{endpoint.public_id}", None),
        ("post", f"webhook-endpoints/{endpoint.public_id}/disable", {}),
        ("post", f"webhook-endpoints/{endpoint.public_id}/test", {}),
    ]:
        response = reader.request(method, path, body)
        error = assert_error(response, 403, "insufficient_scope")
        assert error["required_scope"] == "webhooks:write"
    no_scope = api_client_with_scopes("members:read")
    assert_error(no_scope.get("webhook-endpoints"), 403, "insufficient_scope")


def test_another_orgs_endpoint_is_not_found(
    api_client_with_scopes: Clients, other_org: Organization, receiver: Receiver
) -> None:
    from webhooks.services import endpoint_create

    theirs, _ = endpoint_create(org=other_org, url=receiver.url, actor=Actor.system())
    client = api_client_with_scopes("webhooks:write")
    assert_error(client.get(f"webhook-endpoints/{theirs.public_id}"), 404, "not_found")
    assert_error(client.delete(f"webhook-endpoints/{theirs.public_id}"), 404, "not_found")
    assert client.get("webhook-endpoints").json()["results"] == []
    assert WebhookEndpoint.objects.filter(pk=theirs.pk).exists()


def test_a_private_url_is_a_validation_error(
    api_client_with_scopes: Clients, settings: Any
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = False
    client = api_client_with_scopes("webhooks:write")
    response = client.post("webhook-endpoints", {"url": "http://127.0.0.1/hooks"})
    error = assert_error(response, 400, "validation_error")
    assert error["reason"] == "unsafe_url"
    response = client.post("webhook-endpoints", {"url": "https://x.example", "events": ["nope"]})
    assert_error(response, 400, "validation_error")
    response = client.post("webhook-endpoints", {"url": "https://x.example", "secret": "mine"})
    assert_error(response, 400, "validation_error")


def test_update_disable_enable_test_resend_and_delete(
    org: Organization,
    api_client_with_scopes: Clients,
    receiver: Receiver,
    django_capture_on_commit_callbacks: Capture,
) -> None:
    # More requests than the plan's burst allows, in one test.
    Organization.objects.filter(pk=org.pk).update(custom_burst=0, custom_per_minute=0)
    client = api_client_with_scopes("webhooks:write")
    created = client.post("webhook-endpoints", {"url": receiver.url}).json()
    endpoint_id, secret = created["id"], created["secret"]

    patched = client.patch(
        f"webhook-endpoints/{endpoint_id}", {"description": "Audit sink", "events": []}
    )
    assert patched.status_code == 200 and patched.json()["description"] == "Audit sink"

    disabled = client.post(f"webhook-endpoints/{endpoint_id}/disable", {})
    assert disabled.json()["enabled"] is False and disabled.json()["disabled_reason"] == "manual"
    assert_error(client.post(f"webhook-endpoints/{endpoint_id}/test", {}), 409, "conflict")
    enabled = client.post(f"webhook-endpoints/{endpoint_id}/enable", {})
    assert enabled.json()["enabled"] is True and enabled.json()["disabled_reason"] == ""

    with django_capture_on_commit_callbacks(execute=True):
        tested = client.post(f"webhook-endpoints/{endpoint_id}/test", {})
    assert tested.status_code == 202
    assert tested.json()["event_type"] == "webhook.test"
    Webhook(secret).verify(receiver.received[0].body, receiver.received[0].headers)

    listed = client.get(f"webhook-endpoints/{endpoint_id}/deliveries").json()["results"]
    assert len(listed) == 1 and listed[0]["status"] == "succeeded"
    assert listed[0]["log"][0]["status_code"] == 200
    delivery_id = listed[0]["id"]
    with django_capture_on_commit_callbacks(execute=True):
        resent = client.post(f"webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/resend", {})
    assert resent.status_code == 202 and resent.json()["id"] == delivery_id
    assert len(receiver.received) == 2
    again = client.get(f"webhook-endpoints/{endpoint_id}/deliveries").json()["results"]
    assert again[0]["attempts"] == 2 and len(again[0]["log"]) == 2
    assert again[0]["log"][0]["resend"] is True

    assert client.delete(f"webhook-endpoints/{endpoint_id}").status_code == 204
    assert_error(client.get(f"webhook-endpoints/{endpoint_id}"), 404, "not_found")
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {
        "webhook_endpoint.created",
        "webhook_endpoint.updated",
        "webhook_endpoint.disabled",
        "webhook_endpoint.enabled",
        "webhook_endpoint.tested",
        "webhook_delivery.resent",
        "webhook_endpoint.deleted",
    } <= actions
