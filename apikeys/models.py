from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from orgs.ids import new_public_id
from orgs.models import Organization


def new_key_id() -> str:
    return new_public_id("key")


class Environment(models.TextChoices):
    LIVE = "live", "Live"
    TEST = "test", "Test"
    SYS = "sys", "System"


class KeyStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    EXPIRING = "expiring", "Expiring"
    # Reported leaked in an org whose setting is "flag only": it still works.
    LEAKED = "leaked", "Leaked"
    EXPIRED = "expired", "Expired"
    REVOKED = "revoked", "Revoked"


class IpMode(models.TextChoices):
    """What a key's IP allowlist does with a request from elsewhere (docs/product.md)."""

    ENFORCE = "enforce", "Enforce"
    REPORT = "report", "Report only"


class ApiKey(models.Model):
    """An API key. The secret is never stored: only its HMAC digest and a display form.

    `org` is null exactly for system keys (environment `sys`). A rotated key keeps working
    until `expires_at` (set by the rotation, `rotated_at` records when); its successor
    points back through `predecessor`. `deleted_at` hides a key from every list; its audit
    events remain.
    """

    public_id = models.CharField(max_length=32, unique=True, default=new_key_id, editable=False)
    org = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100)
    environment = models.CharField(max_length=4, choices=Environment.choices)
    scopes = models.JSONField(default=list, blank=True)
    # The operator's own facts about the key (tenant ids, plan names): a JSON object of at
    # most META_MAX_BYTES, set at creation, returned by `me` and the key page.
    meta = models.JSONField(default=dict, blank=True)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    display = models.CharField(max_length=80, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    # Set when the key was created through the API by another key.
    created_by_key = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    predecessor = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="successors"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    rotated_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True)
    # Where the key may be used from: CIDR ranges (IPv4 and IPv6, normalised by
    # `apikeys.networks.clean_allowed_ips`); empty means anywhere. In "report only" mode a
    # request from elsewhere is admitted and recorded instead of refused.
    allowed_ips = models.JSONField(default=list, blank=True)
    allowed_ips_mode = models.CharField(
        max_length=8, choices=IpMode.choices, default=IpMode.ENFORCE
    )
    # When the key was first reported leaked (revoked then, or only flagged: see
    # `Organization.leak_response`).
    leaked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["org", "-created_at"], name="apikeys_key_org_created"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=(Q(org__isnull=True) & Q(environment="sys"))
                | (Q(org__isnull=False) & Q(environment__in=["live", "test"])),
                name="apikeys_key_env_matches_owner",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.display})"

    @property
    def is_system(self) -> bool:
        return self.org_id is None

    def status_at(self, now: datetime) -> KeyStatus:
        if self.revoked_at is not None:
            return KeyStatus.REVOKED
        if self.expires_at is not None and self.expires_at <= now:
            return KeyStatus.EXPIRED
        if self.leaked_at is not None:
            return KeyStatus.LEAKED
        if self.rotated_at is not None:
            return KeyStatus.EXPIRING
        return KeyStatus.ACTIVE

    @property
    def status(self) -> KeyStatus:
        return self.status_at(timezone.now())

    def is_usable(self, now: datetime | None = None) -> bool:
        """Neither revoked, deleted nor expired (a rotated key is usable inside its grace).

        The org's own state (suspension) is checked by the caller, which holds the org.
        """
        now = now or timezone.now()
        return self.deleted_at is None and self.status_at(now) in (
            KeyStatus.ACTIVE,
            KeyStatus.EXPIRING,
            KeyStatus.LEAKED,
        )


# --- API guards: idempotency records and usage (docs/api.md) --------------------------


class IdempotencyRecord(models.Model):
    """One idempotency key of one API key: a claim while its request runs, then the outcome.

    Only a SHA-256 of the idempotency key is stored; the response body is AES-GCM
    encrypted under a key derived from the presenting API key's secret and the
    idempotency key (see `apikeys.idempotency`). Kept 24 hours, then purged.
    """

    class State(models.TextChoices):
        IN_PROGRESS = "in_progress", "In progress"
        COMPLETED = "completed", "Completed"

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="+")
    key_hash = models.CharField(max_length=64)
    fingerprint = models.CharField(max_length=64)
    state = models.CharField(max_length=12, choices=State.choices)
    claim_token = models.CharField(max_length=32, blank=True)
    claim_expires_at = models.DateTimeField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    content_type = models.CharField(max_length=100, blank=True)
    response_body = models.BinaryField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["api_key", "key_hash"], name="apikeys_idempotency_unique_key"
            ),
        ]

    def __str__(self) -> str:
        return f"idempotency {self.key_hash[:12]} of key {self.api_key_id} ({self.state})"


class KeyUsageHour(models.Model):
    """Requests of one key in one hour (UTC), folded in from the live counters."""

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="usage_hours")
    org = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    hour = models.DateTimeField()
    count_2xx = models.BigIntegerField(default=0)
    count_4xx = models.BigIntegerField(default=0)
    count_5xx = models.BigIntegerField(default=0)
    client_versions = models.JSONField(default=list, blank=True)
    # Requests per scope they needed ({"payments:read": 12}), whichever door they came in.
    scopes = models.JSONField(default=dict, blank=True)
    # Requests from outside the key's IP allowlist admitted because it was in "report
    # only" mode: the refusals an enforced list would have made.
    ip_reported = models.BigIntegerField(default=0)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["hour", "api_key_id"]
        constraints = [
            models.UniqueConstraint(fields=["api_key", "hour"], name="apikeys_usage_key_hour"),
        ]
        indexes = [models.Index(fields=["org", "hour"], name="apikeys_usage_org_hour")]

    def __str__(self) -> str:
        return f"usage of key {self.api_key_id} at {self.hour:%Y-%m-%d %H}:00"

    @property
    def requests(self) -> int:
        return self.count_2xx + self.count_4xx + self.count_5xx


class UsageFoldBatch(models.Model):
    """A batch of Redis usage counters written to the database (makes folding exactly-once)."""

    batch_id = models.CharField(max_length=32, unique=True)
    folded_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return self.batch_id


class PendingInvalidation(models.Model):
    """A verification-cache invalidation that could not reach Redis (ADR 0078).

    Written in the database when Redis is unreachable at a revoke, rotation, deletion or
    org change (inside the change's own transaction when there is one), and deleted once
    applied. Every process applies what is pending before it trusts the cache again after
    an outage, and at its start, so a revocation outlives restarts of every process.
    """

    kind = models.CharField(max_length=8)  # "key" (ident: digest) or "org" (ident: org id)
    ident = models.CharField(max_length=128)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return f"pending {self.kind} invalidation {self.ident[:12]}"
