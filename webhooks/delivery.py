"""Sending a webhook delivery: the outbox handler of kind `webhook` (ADR 0083).

The outbox message carries only the delivery's id. A failed attempt raises, so the
outbox retries the message on the Standard Webhooks schedule registered in `apps.py`;
the last scheduled attempt (and a resend, which is tried once) marks the delivery failed
instead. An endpoint that has failed without a success for `DISABLE_AFTER` is disabled
and the org's owners and admins are told by email.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from standardwebhooks import Webhook

from accounts.emails import queue_email
from orgs.actors import Actor
from orgs.models import Role
from webhooks.events import WEBHOOK
from webhooks.models import (
    DeliveryStatus,
    DisabledReason,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from webhooks.net import Answer, post
from webhooks.services import endpoint_disable, endpoint_secret

__all__ = ["BACKOFF", "MAX_ATTEMPTS", "WEBHOOK", "DeliveryFailed", "send_delivery"]

logger = logging.getLogger("webhooks")

# Waits after the 1st, 2nd, ... failed attempt (docs/webhooks.md): 7 attempts over about 18 hours.
BACKOFF = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
)
MAX_ATTEMPTS = len(BACKOFF) + 1
DISABLE_AFTER = timedelta(days=3)
DISABLED_EMAIL = "webhooks/email/endpoint_disabled"


class DeliveryFailed(Exception):
    """The endpoint did not take the delivery; the outbox tries again later."""


def _timeout() -> float:
    return float(getattr(settings, "WEBHOOK_TIMEOUT_SECONDS", 10))


def send_delivery(payload: dict[str, Any]) -> None:
    delivery = (
        WebhookDelivery.objects.select_related("endpoint", "endpoint__org")
        .filter(pk=payload["delivery_id"])
        .first()
    )
    if delivery is None:
        return  # its endpoint was deleted
    once = bool(payload.get("once"))
    endpoint = delivery.endpoint
    if delivery.status != DeliveryStatus.PENDING:
        return  # already sent (a duplicate message) or given up
    if not endpoint.enabled:
        _finish(delivery, DeliveryStatus.FAILED)
        return

    now = timezone.now()
    body = json.dumps(delivery.payload, separators=(",", ":"))
    signature = Webhook(endpoint_secret(endpoint)).sign(
        msg_id=delivery.event_id, timestamp=now, data=body
    )
    answer = post(
        endpoint.url,
        body=body.encode(),
        headers={
            "Content-Type": "application/json",
            "User-Agent": "Latchkey-Webhooks/1",
            "webhook-id": delivery.event_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        },
        timeout=_timeout(),
    )
    _record(delivery, answer, resend=once)
    if answer.ok:
        _finish(delivery, DeliveryStatus.SUCCEEDED)
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=None)
        return

    still_enabled = _note_failure(endpoint)
    if once:
        # A resend is tried once; a delivery it found on its retry schedule stays there.
        if not payload.get("scheduled") or not still_enabled:
            _finish(delivery, DeliveryStatus.FAILED)
        return
    scheduled = delivery.log.filter(resend=False).count()
    if not still_enabled or scheduled >= MAX_ATTEMPTS:
        _finish(delivery, DeliveryStatus.FAILED)
        return
    delivery.next_attempt_at = timezone.now() + BACKOFF[min(scheduled, len(BACKOFF)) - 1]
    delivery.save(update_fields=["next_attempt_at"])
    reason = f"HTTP {answer.status_code}" if answer.status_code else answer.error.split(":")[0]
    raise DeliveryFailed(f"Webhook delivery {delivery.public_id} not taken ({reason}).")


def _record(delivery: WebhookDelivery, answer: Answer, *, resend: bool) -> None:
    WebhookAttempt.objects.create(
        delivery=delivery,
        status_code=answer.status_code,
        error=answer.error[:300],
        duration_ms=answer.duration_ms,
        response_excerpt=answer.excerpt[:500],
        resend=resend,
    )
    delivery.attempts += 1
    delivery.last_status_code = answer.status_code
    delivery.last_duration_ms = answer.duration_ms
    delivery.last_response = (answer.excerpt or answer.error)[:500]
    delivery.save(
        update_fields=["attempts", "last_status_code", "last_duration_ms", "last_response"]
    )


def _finish(delivery: WebhookDelivery, status: str) -> None:
    delivery.status = status
    delivery.next_attempt_at = None
    delivery.save(update_fields=["status", "next_attempt_at"])


def _note_failure(endpoint: WebhookEndpoint) -> bool:
    """Start or check the endpoint's failure clock; False once it has been disabled."""
    now = timezone.now()
    WebhookEndpoint.objects.filter(pk=endpoint.pk, failing_since__isnull=True).update(
        failing_since=now
    )
    endpoint.refresh_from_db(fields=["failing_since", "enabled"])
    if not endpoint.enabled:
        return False
    if endpoint.failing_since is None or now - endpoint.failing_since < DISABLE_AFTER:
        return True
    with transaction.atomic():
        if endpoint_disable(endpoint=endpoint, reason=DisabledReason.FAILING, actor=Actor.system()):
            logger.warning("Webhook endpoint %s disabled after 3 days of failures", endpoint)
            org = endpoint.org
            context = {
                "org_name": org.name,
                "endpoint_id": endpoint.public_id,
                "endpoint_url": endpoint.url,
                "failing_since": endpoint.failing_since.isoformat(),
                "webhooks_path": f"/o/{org.slug}/webhooks/",
            }
            emails = (
                org.memberships.filter(role__in=[Role.OWNER, Role.ADMIN], user__is_active=True)
                .values_list("user__email", flat=True)
                .distinct()
            )
            for email in sorted(emails):
                queue_email(to=[email], template=DISABLED_EMAIL, context=context)
    return False
