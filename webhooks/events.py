"""Events an org's webhook endpoints can receive, and `emit` (docs/webhooks.md).

Kept apart from `webhooks.services` so the services that cause events (`apikeys`, `orgs`,
`platform_admin`) import this module alone: it needs nothing of theirs.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from orgs.models import Organization
from outbox.services import enqueue
from webhooks.models import WebhookDelivery, WebhookEndpoint, new_message_id

WEBHOOK = "webhook"

EVENT_TYPES = (
    "api_key.created",
    "api_key.rotated",
    "api_key.revoked",
    "api_key.expiring",
    "api_key.expired",
    "api_key.leaked",
    "quota.warning",
    "quota.exhausted",
    "kyc.approved",
    "kyc.rejected",
    "member.joined",
    "member.removed",
    "webhook.test",
)


def emit(
    org: Organization | None,
    event_type: str,
    data: dict[str, Any],
    *,
    endpoints: list[WebhookEndpoint] | None = None,
) -> list[WebhookDelivery]:
    """Queue `event_type` for every enabled endpoint of `org` that wants it.

    Invariants: runs in the caller's transaction (a rolled-back change sends nothing);
    one delivery per endpoint, all with the same event id; `data` holds ids and names,
    never a secret; the outbox message carries only the delivery's id.
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"Unknown webhook event {event_type!r}.")
    if org is None:
        return []
    if endpoints is None:
        enabled = WebhookEndpoint.objects.filter(org=org, enabled=True)
        endpoints = [e for e in enabled if e.wants(event_type)]
    if not endpoints:
        return []
    now = timezone.now()
    event_id = new_message_id()
    payload = {"type": event_type, "timestamp": now.isoformat(), "data": data}
    deliveries = []
    for endpoint in endpoints:
        delivery = WebhookDelivery.objects.create(
            endpoint=endpoint,
            event_id=event_id,
            event_type=event_type,
            payload=payload,
            next_attempt_at=now,
            created_at=now,
        )
        enqueue(kind=WEBHOOK, payload={"delivery_id": delivery.pk})
        deliveries.append(delivery)
    return deliveries
