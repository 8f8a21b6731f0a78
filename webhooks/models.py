"""Webhook endpoints of an org, and the deliveries sent to them (docs/webhooks.md, ADR 0083)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from orgs.ids import new_public_id
from orgs.models import Organization


def new_endpoint_id() -> str:
    return new_public_id("whe")


def new_delivery_id() -> str:
    return new_public_id("whd")


def new_message_id() -> str:
    return new_public_id("msg")


class DisabledReason(models.TextChoices):
    NONE = "", "Enabled"
    MANUAL = "manual", "Disabled by a person or a key"
    FAILING = "failing", "Failed for 3 days"


class WebhookEndpoint(models.Model):
    """A URL of the org's that receives the events it asked for.

    `secret_sealed` is the signing secret sealed with a key derived from SECRET_KEY (the
    outbox's AES-GCM seal): it must be recoverable to sign, so it cannot be a hash.
    """

    org = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    public_id = models.CharField(max_length=40, unique=True, default=new_endpoint_id)
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    # Event types wanted; empty means every event.
    events = models.JSONField(default=list, blank=True)
    secret_sealed = models.BinaryField()
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(
        max_length=16, choices=DisabledReason.choices, blank=True, default=DisabledReason.NONE
    )
    # The first failed attempt since the last success; None while it answers.
    failing_since = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.public_id

    def wants(self, event_type: str) -> bool:
        return not self.events or event_type in self.events


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class WebhookDelivery(models.Model):
    """One event for one endpoint. `payload` holds ids and names, never a secret."""

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    public_id = models.CharField(max_length=40, unique=True, default=new_delivery_id)
    # The Standard Webhooks `webhook-id`: the same for every attempt and resend.
    event_id = models.CharField(max_length=40, default=new_message_id)
    event_type = models.CharField(max_length=64)
    payload = models.JSONField(default=dict)
    status = models.CharField(
        max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_duration_ms = models.PositiveIntegerField(null=True, blank=True)
    last_response = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.public_id} ({self.event_type})"


class WebhookAttempt(models.Model):
    """One try to send a delivery: the answer's status (or the error), how long, and the
    first 500 characters of the answer."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="log")
    at = models.DateTimeField(default=timezone.now)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    response_excerpt = models.CharField(max_length=500, blank=True)
    # A resend is tried once and does not count towards the retry schedule.
    resend = models.BooleanField(default=False)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"attempt on {self.delivery_id} at {self.at.isoformat()}"


class EventMark(models.Model):
    """An occurrence already announced (a key's 7-day warning for one expiry date...), so a
    scan that runs again sends each event once (docs/webhooks.md)."""

    event_type = models.CharField(max_length=64)
    subject = models.CharField(max_length=40)
    occurrence = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["event_type", "subject", "occurrence"], name="webhooks_event_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.subject} {self.occurrence}"
