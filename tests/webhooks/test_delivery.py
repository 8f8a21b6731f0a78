"""Webhook deliveries to a real local receiver: signed per Standard Webhooks, retried on
the webhook schedule, logged per attempt, resendable, and an endpoint failing for three
days is disabled with an email to the org's owners and admins (docs/webhooks.md)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone
from standardwebhooks import Webhook

from accounts.models import User
from apikeys.services import apikey_create
from orgs.actors import Actor
from orgs.models import AuditEvent, Organization
from outbox import services as outbox
from outbox.models import Message
from tests.webhooks.conftest import Receiver
from webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from webhooks.services import delivery_resend, endpoint_create, endpoint_send_test

pytestmark = pytest.mark.django_db

Capture = Callable[..., Any]


def make_endpoint(org: Organization, url: str, **kwargs: Any) -> tuple[WebhookEndpoint, str]:
    return endpoint_create(org=org, url=url, actor=Actor.system(), **kwargs)


def billing_key(org: Organization) -> None:
    apikey_create(
        actor=Actor.system(), org=org, name="Billing", environment="test", scopes=["members:read"]
    )


def create_key(org: Organization, capture: Capture) -> None:
    with capture(execute=True):
        billing_key(org)


def retry_due() -> None:
    """Let the outbox's next attempt come now, and run the delivery run."""
    Message.objects.filter(sent_at__isnull=True).update(next_attempt_at=timezone.now())
    outbox.deliver_due()


def test_delivery_is_signed_and_verifies_with_the_secret_shown_once(
    org: Organization, receiver: Receiver, django_capture_on_commit_callbacks: Capture
) -> None:
    endpoint, secret = make_endpoint(org, receiver.url)
    assert secret.startswith("whsec_")
    create_key(org, django_capture_on_commit_callbacks)

    assert len(receiver.received) == 1
    got = receiver.received[0]
    assert got.path == "/hooks"
    payload = Webhook(secret).verify(got.body, got.headers)
    assert payload["type"] == "api_key.created"
    assert payload["data"]["api_key"]["name"] == "Billing"
    assert set(payload) == {"type", "timestamp", "data"}
    assert got.headers["webhook-id"].startswith("msg_")
    assert got.headers["webhook-signature"].startswith("v1,")
    # A wrong secret does not verify.
    with pytest.raises(Exception, match="signature"):
        Webhook("whsec_" + "A" * 32).verify(got.body, got.headers)

    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert delivery.status == DeliveryStatus.SUCCEEDED
    assert delivery.attempts == 1 and delivery.last_status_code == 200
    assert delivery.last_response == "answer 200"
    attempt = delivery.log.get()
    assert attempt.status_code == 200 and attempt.response_excerpt == "answer 200"


def test_no_secret_is_stored_in_clear_or_carried_by_the_outbox(
    org: Organization, receiver: Receiver, django_capture_on_commit_callbacks: Capture
) -> None:
    endpoint, secret = make_endpoint(org, receiver.url)
    receiver.script = [(500, 0.0)]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        billing_key(org)
    raw = secret.removeprefix("whsec_").encode()
    endpoint.refresh_from_db()
    assert raw not in bytes(endpoint.secret_sealed) and secret.encode() not in bytes(
        endpoint.secret_sealed
    )
    message = Message.objects.get(kind="webhook")
    delivery = WebhookDelivery.objects.get()
    assert outbox.unseal(bytes(message.payload), kind="webhook") == {"delivery_id": delivery.pk}
    assert secret not in json.dumps(delivery.payload)
    assert not AuditEvent.objects.filter(details__icontains=secret.removeprefix("whsec_")).exists()
    for callback in callbacks:
        callback()
    # The failure recorded by the outbox names no secret, no URL.
    message.refresh_from_db()
    assert "HTTP 500" in message.last_error and receiver.url not in message.last_error


def test_a_500_is_retried_after_about_five_seconds_and_then_succeeds(
    org: Organization, receiver: Receiver, django_capture_on_commit_callbacks: Capture
) -> None:
    endpoint, secret = make_endpoint(org, receiver.url)
    receiver.script = [(500, 0.0)]
    create_key(org, django_capture_on_commit_callbacks)

    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts == 1
    assert delivery.last_status_code == 500
    message = Message.objects.get(kind="webhook")
    wait = message.next_attempt_at - timezone.now()
    assert timedelta(seconds=2) < wait <= timedelta(seconds=5)
    assert delivery.next_attempt_at is not None
    endpoint.refresh_from_db()
    assert endpoint.failing_since is not None

    retry_due()
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SUCCEEDED and delivery.attempts == 2
    assert [a.status_code for a in delivery.log.order_by("at", "id")] == [500, 200]
    # Every attempt carries the same webhook-id, each one a valid signature.
    ids = {r.headers["webhook-id"] for r in receiver.received}
    assert ids == {delivery.event_id}
    for got in receiver.received:
        Webhook(secret).verify(got.body, got.headers)
    endpoint.refresh_from_db()
    assert endpoint.failing_since is None


def test_the_retry_schedule_follows_the_webhook_backoff(
    org: Organization, receiver: Receiver, django_capture_on_commit_callbacks: Capture
) -> None:
    make_endpoint(org, receiver.url)
    receiver.script = [(503, 0.0)] * 10
    create_key(org, django_capture_on_commit_callbacks)
    waits = []
    for _ in range(6):
        message = Message.objects.get(kind="webhook")
        waits.append(message.next_attempt_at - timezone.now())
        retry_due()
    expected = [5, 300, 1800, 7200, 18000, 36000]
    for wait, seconds in zip(waits, expected, strict=True):
        assert seconds - 3 < wait.total_seconds() <= seconds
    delivery = WebhookDelivery.objects.get()
    # The seventh attempt was the last: the delivery failed and the outbox is done with it.
    assert delivery.attempts == 7 and delivery.status == DeliveryStatus.FAILED
    assert delivery.next_attempt_at is None
    assert Message.objects.get(kind="webhook").sent_at is not None


def test_a_timeout_is_logged_and_retried(
    org: Organization,
    receiver: Receiver,
    settings: Any,
    django_capture_on_commit_callbacks: Capture,
) -> None:
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.3
    endpoint, _ = make_endpoint(org, receiver.url)
    receiver.script = [(200, 1.5)]
    create_key(org, django_capture_on_commit_callbacks)

    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert delivery.status == DeliveryStatus.PENDING
    attempt = delivery.log.get()
    assert attempt.status_code is None and attempt.error == "timeout"

    retry_due()
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SUCCEEDED and delivery.attempts == 2


def test_an_endpoint_failing_for_three_days_is_disabled_and_admins_are_emailed(
    org: Organization,
    owner: User,
    admin_user: User,
    member_user: User,
    receiver: Receiver,
    django_capture_on_commit_callbacks: Capture,
) -> None:
    endpoint, _ = make_endpoint(org, receiver.url)
    receiver.script = [(500, 0.0)] * 5
    create_key(org, django_capture_on_commit_callbacks)
    endpoint.refresh_from_db()
    assert endpoint.enabled and endpoint.failing_since is not None
    mail.outbox.clear()

    # Not yet three days: still enabled.
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        failing_since=timezone.now() - timedelta(days=2, hours=23)
    )
    with django_capture_on_commit_callbacks(execute=True):
        retry_due()
    endpoint.refresh_from_db()
    assert endpoint.enabled and not mail.outbox

    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        failing_since=timezone.now() - timedelta(days=3, minutes=1)
    )
    with django_capture_on_commit_callbacks(execute=True):
        retry_due()
    endpoint.refresh_from_db()
    assert not endpoint.enabled and endpoint.disabled_reason == "failing"
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.FAILED
    assert sorted(m.to[0] for m in mail.outbox) == ["admin@acme.test", "owner@acme.test"]
    assert endpoint.public_id in mail.outbox[0].body
    assert f"/o/{org.slug}/webhooks/" in mail.outbox[0].body
    event = AuditEvent.objects.get(action="webhook_endpoint.disabled")
    assert event.details == {"reason": "failing"} and event.actor_type == "system"

    # Nothing more is sent to a disabled endpoint.
    sent = len(receiver.received)
    create_key(org, django_capture_on_commit_callbacks)
    assert len(receiver.received) == sent
    assert WebhookDelivery.objects.count() == 1


def test_a_failed_delivery_can_be_resent_and_is_tried_once(
    org: Organization, receiver: Receiver, django_capture_on_commit_callbacks: Capture
) -> None:
    _, secret = make_endpoint(org, receiver.url)
    receiver.script = [(500, 0.0)] * 7
    create_key(org, django_capture_on_commit_callbacks)
    for _ in range(6):
        retry_due()
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.FAILED

    receiver.script = [(500, 0.0)]
    with django_capture_on_commit_callbacks(execute=True):
        delivery_resend(delivery=delivery, actor=Actor.system())
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED and delivery.attempts == 8
    assert not Message.objects.filter(sent_at__isnull=True).exists()  # no retry of a resend

    with django_capture_on_commit_callbacks(execute=True):
        delivery_resend(delivery=delivery, actor=Actor.system())
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SUCCEEDED and delivery.attempts == 9
    Webhook(secret).verify(receiver.received[-1].body, receiver.received[-1].headers)
    assert AuditEvent.objects.filter(action="webhook_delivery.resent").count() == 2


def test_a_test_event_goes_to_that_endpoint_only(
    org: Organization, receiver: Receiver, django_capture_on_commit_callbacks: Capture
) -> None:
    endpoint, secret = make_endpoint(org, receiver.url)
    other, _ = make_endpoint(org, receiver.url + "/other")
    with django_capture_on_commit_callbacks(execute=True):
        delivery = endpoint_send_test(endpoint=endpoint, actor=Actor.system())
    assert len(receiver.received) == 1
    payload = Webhook(secret).verify(receiver.received[0].body, receiver.received[0].headers)
    assert payload["type"] == "webhook.test"
    assert payload["data"]["endpoint"] == {"id": endpoint.public_id}
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SUCCEEDED
    assert not other.deliveries.exists()


def test_an_endpoint_receives_only_the_events_it_asked_for(
    org: Organization, receiver: Receiver, django_capture_on_commit_callbacks: Capture
) -> None:
    wants_revoked, _ = make_endpoint(org, receiver.url, events=["api_key.revoked"])
    wants_all, _ = make_endpoint(org, receiver.url)
    create_key(org, django_capture_on_commit_callbacks)
    assert not wants_revoked.deliveries.exists()
    assert wants_all.deliveries.get().event_type == "api_key.created"


def test_a_failed_resend_of_a_delivery_on_its_schedule_leaves_the_schedule_running(
    org: Organization, receiver: Receiver, django_capture_on_commit_callbacks: Capture
) -> None:
    make_endpoint(org, receiver.url)
    receiver.script = [(500, 0.0), (500, 0.0)]
    create_key(org, django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.PENDING
    with django_capture_on_commit_callbacks(execute=True):
        delivery_resend(delivery=delivery, actor=Actor.system())
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts == 2
    retry_due()  # the scheduled retry still comes, and succeeds
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SUCCEEDED and delivery.attempts == 3


def test_a_receiver_answering_a_byte_at_a_time_is_cut_off_at_the_deadline(
    settings: Any,
) -> None:
    """The timeout bounds the whole attempt, not each read: a receiver that keeps every
    read short but never finishes cannot hold the sender."""
    import socket
    import threading
    import time

    from webhooks.net import post

    settings.WEBHOOK_ALLOW_PRIVATE = True
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    drip = b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"a" * 200 + b"\r\n\r\n"
    sent: list[int] = []

    def serve() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        count = 0
        try:
            for byte in drip:  # about 20 s in all, a byte every 0.1 s
                conn.sendall(bytes([byte]))
                count += 1
                time.sleep(0.1)
        except OSError:
            pass  # the sender hung up
        finally:
            sent.append(count)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    answer = post(f"http://127.0.0.1:{port}/hooks", body=b"{}", headers={}, timeout=0.5)
    thread.join(timeout=30)
    listener.close()
    assert answer.status_code is None and answer.error == "timeout"
    assert sent and sent[0] < len(drip)  # cut off long before the receiver was done
