"""Reads of webhook endpoints and deliveries, always within one org."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from orgs.models import Organization
from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint


def endpoint_list(*, org: Organization) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(org=org).select_related("org")


def endpoint_get(*, org: Organization, public_id: str) -> WebhookEndpoint:
    try:
        return WebhookEndpoint.objects.select_related("org").get(org=org, public_id=public_id)
    except WebhookEndpoint.DoesNotExist:
        raise Http404("No such webhook endpoint.") from None


def delivery_list(*, endpoint: WebhookEndpoint) -> QuerySet[WebhookDelivery]:
    return (
        WebhookDelivery.objects.filter(endpoint=endpoint)
        .select_related("endpoint")
        .prefetch_related("log")
    )


def delivery_get(*, endpoint: WebhookEndpoint, public_id: str) -> WebhookDelivery:
    try:
        return WebhookDelivery.objects.select_related("endpoint", "endpoint__org").get(
            endpoint=endpoint, public_id=public_id
        )
    except WebhookDelivery.DoesNotExist:
        raise Http404("No such delivery.") from None


def attempt_list(*, delivery: WebhookDelivery) -> QuerySet[WebhookAttempt]:
    return WebhookAttempt.objects.filter(delivery=delivery)


def delivery_by_pk(*, pk: int) -> WebhookDelivery:
    """A delivery read afresh with its endpoint and attempt log (after a send or resend:
    with eager tasks the attempt may already be made)."""
    return WebhookDelivery.objects.select_related("endpoint").prefetch_related("log").get(pk=pk)
