"""Writes for webhook endpoints and deliveries (docs/webhooks.md, ADR 0083).

Every service records its audit event (`webhook_endpoint.created`, ...). A signing secret
exists in clear only in `endpoint_create`'s return value and, briefly, while a delivery
is signed; at rest it is sealed with a key derived from SECRET_KEY.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from orgs.actors import Actor
from orgs.models import Organization
from orgs.services import OrgError, audit_record
from outbox.services import enqueue, seal, unseal
from webhooks.events import EVENT_TYPES, WEBHOOK, emit
from webhooks.models import (
    DeliveryStatus,
    DisabledReason,
    WebhookDelivery,
    WebhookEndpoint,
)
from webhooks.net import UnsafeUrl, check_url

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24
URL_MAX_LENGTH = 2000
DESCRIPTION_MAX_LENGTH = 200
# Associated data of a sealed signing secret: a sealed outbox payload cannot pass for one.
_SEAL_KIND = "webhook-secret"


class WebhookError(OrgError):
    """A refused webhook operation (`unsafe_url`, `invalid_events`, `disabled`, ...)."""


def _new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def endpoint_secret(endpoint: WebhookEndpoint) -> str:
    """The endpoint's signing secret, opened to sign a delivery (never shown again)."""
    return str(unseal(bytes(endpoint.secret_sealed), kind=_SEAL_KIND)["secret"])


def clean_url(url: Any) -> str:
    if not isinstance(url, str) or not url.strip():
        raise WebhookError("Give the endpoint's URL.", code="invalid_url")
    url = url.strip()
    if len(url) > URL_MAX_LENGTH:
        raise WebhookError("The URL is too long.", code="invalid_url")
    try:
        check_url(url)
    except UnsafeUrl as exc:
        raise WebhookError(str(exc), code="unsafe_url") from exc
    return url


def clean_events(events: Any) -> list[str]:
    if events is None:
        return []
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise WebhookError("Events must be a list of event types.", code="invalid_events")
    unknown = sorted(set(events) - set(EVENT_TYPES))
    if unknown:
        raise WebhookError(f"Unknown event type {unknown[0]!r}.", code="invalid_events")
    return sorted(set(events))


def _clean_description(description: Any) -> str:
    if not isinstance(description, str):
        raise WebhookError("The description must be text.", code="invalid_description")
    description = description.strip()
    if len(description) > DESCRIPTION_MAX_LENGTH or "\x00" in description:
        raise WebhookError("The description is too long.", code="invalid_description")
    return description


def _audit(
    action: str,
    endpoint: WebhookEndpoint,
    *,
    request: HttpRequest | None,
    actor: Actor,
    details: dict[str, Any] | None = None,
) -> None:
    audit_record(
        action=action,
        org=endpoint.org,
        request=request,
        actor=actor,
        target=endpoint,
        target_type="webhook_endpoint",
        target_label=endpoint.url[:254],
        details=details or {},
    )


@transaction.atomic
def endpoint_create(
    *,
    org: Organization,
    url: str,
    description: str = "",
    events: list[str] | None = None,
    actor: Actor,
    request: HttpRequest | None = None,
) -> tuple[WebhookEndpoint, str]:
    """Add an endpoint and return it with its signing secret (the only time it is shown).

    Invariants: http or https only; the URL's host resolves to public addresses only
    (unless WEBHOOK_ALLOW_PRIVATE); events are known types (empty means all); an org has
    at most WEBHOOK_MAX_ENDPOINTS endpoints (each event is sent to every one of them)."""
    limit = int(getattr(settings, "WEBHOOK_MAX_ENDPOINTS", 20))
    if WebhookEndpoint.objects.filter(org=org).count() >= limit:
        raise WebhookError(
            f"An organisation has at most {limit} webhook endpoints; delete one first.",
            code="too_many_endpoints",
        )
    secret = _new_secret()
    endpoint = WebhookEndpoint.objects.create(
        org=org,
        url=clean_url(url),
        description=_clean_description(description),
        events=clean_events(events),
        secret_sealed=seal({"secret": secret}, kind=_SEAL_KIND),
    )
    _audit(
        "webhook_endpoint.created",
        endpoint,
        request=request,
        actor=actor,
        details={"url": endpoint.url, "events": endpoint.events},
    )
    return endpoint, secret


@transaction.atomic
def endpoint_update(
    *,
    endpoint: WebhookEndpoint,
    url: str | None = None,
    description: str | None = None,
    events: list[str] | None = None,
    actor: Actor,
    request: HttpRequest | None = None,
) -> WebhookEndpoint:
    """Change the URL, description or events (None leaves a field as it is); a new URL is
    checked as at creation."""
    changed: dict[str, Any] = {}
    if url is not None:
        endpoint.url = changed["url"] = clean_url(url)
    if description is not None:
        endpoint.description = _clean_description(description)
        changed["description"] = endpoint.description
    if events is not None:
        endpoint.events = changed["events"] = clean_events(events)
    if changed:
        endpoint.save(update_fields=list(changed))
        _audit(
            "webhook_endpoint.updated",
            endpoint,
            request=request,
            actor=actor,
            details={"changed": sorted(changed)},
        )
    return endpoint


@transaction.atomic
def endpoint_enable(
    *,
    endpoint: WebhookEndpoint,
    actor: Actor,
    request: HttpRequest | None = None,
) -> WebhookEndpoint:
    """Send to the endpoint again; its failure clock starts afresh."""
    if not endpoint.enabled:
        endpoint.enabled = True
        endpoint.disabled_reason = DisabledReason.NONE
        endpoint.failing_since = None
        endpoint.save(update_fields=["enabled", "disabled_reason", "failing_since"])
        _audit(
            "webhook_endpoint.enabled",
            endpoint,
            request=request,
            actor=actor,
        )
    return endpoint


@transaction.atomic
def endpoint_disable(
    *,
    endpoint: WebhookEndpoint,
    reason: str = DisabledReason.MANUAL,
    actor: Actor,
    request: HttpRequest | None = None,
) -> bool:
    """Stop sending to the endpoint (its pending deliveries fail when their turn comes).
    True if this call disabled it, False if it already was."""
    disabled = WebhookEndpoint.objects.filter(pk=endpoint.pk, enabled=True).update(
        enabled=False, disabled_reason=reason
    )
    endpoint.enabled, endpoint.disabled_reason = (
        False,
        (reason if disabled else endpoint.disabled_reason),
    )
    if disabled:
        _audit(
            "webhook_endpoint.disabled",
            endpoint,
            request=request,
            actor=actor,
            details={"reason": reason},
        )
    return bool(disabled)


@transaction.atomic
def endpoint_delete(
    *,
    endpoint: WebhookEndpoint,
    actor: Actor,
    request: HttpRequest | None = None,
) -> None:
    """Delete the endpoint with its deliveries and their log."""
    _audit(
        "webhook_endpoint.deleted",
        endpoint,
        request=request,
        actor=actor,
        details={"url": endpoint.url},
    )
    endpoint.delete()


def _check_enabled(endpoint: WebhookEndpoint) -> None:
    if not endpoint.enabled:
        raise WebhookError("This endpoint is disabled; enable it first.", code="disabled")


@transaction.atomic
def endpoint_send_test(
    *,
    endpoint: WebhookEndpoint,
    actor: Actor,
    request: HttpRequest | None = None,
) -> WebhookDelivery:
    """Queue a `webhook.test` event to this endpoint alone."""
    _check_enabled(endpoint)
    org = endpoint.org
    (delivery,) = emit(
        org,
        "webhook.test",
        {"endpoint": {"id": endpoint.public_id}, "organization": _org_data(org)},
        endpoints=[endpoint],
    )
    _audit(
        "webhook_endpoint.tested",
        endpoint,
        request=request,
        actor=actor,
        details={"delivery": delivery.public_id},
    )
    return delivery


@transaction.atomic
def delivery_resend(
    *,
    delivery: WebhookDelivery,
    actor: Actor,
    request: HttpRequest | None = None,
) -> WebhookDelivery:
    """Send the delivery again now, once (same event id, a fresh signature); its earlier
    attempts stay in the log."""
    _check_enabled(delivery.endpoint)
    # A delivery still on its retry schedule keeps it: a failed resend leaves it pending.
    scheduled = delivery.status == DeliveryStatus.PENDING
    if not scheduled:
        delivery.status = DeliveryStatus.PENDING
        delivery.next_attempt_at = timezone.now()
        delivery.save(update_fields=["status", "next_attempt_at"])
    enqueue(
        kind=WEBHOOK,
        payload={"delivery_id": delivery.pk, "once": True, "scheduled": scheduled},
    )
    _audit(
        "webhook_delivery.resent",
        delivery.endpoint,
        request=request,
        actor=actor,
        details={"delivery": delivery.public_id, "event_type": delivery.event_type},
    )
    return delivery


def _org_data(org: Organization) -> dict[str, str]:
    return {"id": org.public_id, "name": org.name, "slug": org.slug}
