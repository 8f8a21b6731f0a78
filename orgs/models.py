from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from orgs.ids import new_event_id, new_invitation_id, new_membership_id, new_org_id
from orgs.plans import PLAN_LIMITS, Limits, Plan


class KycStatus(models.TextChoices):
    NOT_SUBMITTED = "not_submitted", "Not submitted"
    PENDING = "pending", "Pending review"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"


class OrgStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    SUSPENDED = "suspended", "Suspended"


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"


# Higher rank includes every power of the lower ones.
ROLE_RANK: dict[str, int] = {Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}


class LeakResponse(models.TextChoices):
    """What a report that one of the org's keys leaked does (docs/secret-scanning.md)."""

    REVOKE = "revoke", "Revoke the key at once"
    FLAG = "flag", "Flag the key as leaked and leave it working"


class Organization(models.Model):
    public_id = models.CharField(max_length=32, unique=True, default=new_org_id, editable=False)
    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=120)
    plan = models.CharField(max_length=20, choices=Plan.choices, default=Plan.STARTER)
    kyc_status = models.CharField(
        max_length=20, choices=KycStatus.choices, default=KycStatus.NOT_SUBMITTED
    )
    status = models.CharField(max_length=20, choices=OrgStatus.choices, default=OrgStatus.ACTIVE)
    require_two_factor = models.BooleanField(default=False)
    leak_response = models.CharField(
        max_length=8, choices=LeakResponse.choices, default=LeakResponse.REVOKE
    )
    # Custom limits set by platform staff; null means "the plan's", 0 means unlimited.
    custom_per_minute = models.PositiveIntegerField(null=True, blank=True)
    custom_burst = models.PositiveIntegerField(null=True, blank=True)
    custom_monthly = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"

    @property
    def is_active(self) -> bool:
        return self.status == OrgStatus.ACTIVE

    @property
    def limits(self) -> Limits:
        """The effective limits: the plan's, overridden field by field by custom ones."""
        base = PLAN_LIMITS[self.plan]
        return Limits(
            per_minute=base.per_minute
            if self.custom_per_minute is None
            else self.custom_per_minute,
            burst=base.burst if self.custom_burst is None else self.custom_burst,
            monthly=base.monthly if self.custom_monthly is None else self.custom_monthly,
        )


class Membership(models.Model):
    public_id = models.CharField(
        max_length=32, unique=True, default=new_membership_id, editable=False
    )
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["org", "user"], name="orgs_membership_unique_pair"),
        ]
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.org_id}:{self.role}"

    def has_role(self, required: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[required]


class ActorType(models.TextChoices):
    USER = "user", "User"
    API_KEY = "api_key", "API key"
    SYSTEM = "system", "System"


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    """Append-only: bulk updates and deletes are refused."""

    def update(self, **kwargs: Any) -> int:
        raise PermissionError("Audit events are append-only.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise PermissionError("Audit events are append-only.")


class AuditEvent(models.Model):
    """Who did what, to what, in which org, from where. Never holds a secret."""

    public_id = models.CharField(max_length=32, unique=True, default=new_event_id, editable=False)
    org = models.ForeignKey(
        Organization,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="audit_events",
    )
    action = models.CharField(max_length=64, db_index=True)
    actor_type = models.CharField(max_length=10, choices=ActorType.choices)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    # The actor's stable public label (email, key id) kept even if the row it names is gone.
    actor_id = models.CharField(max_length=64, blank=True)
    actor_label = models.CharField(max_length=254, blank=True)
    # The integrator's own user id (X-Actor-Id) when an API key acted.
    external_actor_id = models.CharField(max_length=255, blank=True)
    target_type = models.CharField(max_length=40, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_label = models.CharField(max_length=254, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    request_id = models.CharField(max_length=128, blank=True)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(db_index=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["org", "-created_at"], name="orgs_audit_org_time"),
            models.Index(fields=["org", "action", "-created_at"], name="orgs_audit_org_action"),
        ]

    def __str__(self) -> str:
        return f"{self.action} by {self.actor_label or self.actor_type}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise PermissionError("Audit events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise PermissionError("Audit events are append-only.")


class InvitationStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    ACCEPTED = "accepted", "Accepted"
    CANCELLED = "cancelled", "Cancelled"
    EXPIRED = "expired", "Expired"


class Invitation(models.Model):
    """An invitation to join an org by email. Only a hash of its token is stored.

    It is usable once, by the owner of `email`, until `expires_at`; then `accepted_at`
    or `cancelled_at` is set and it never becomes usable again.
    """

    public_id = models.CharField(
        max_length=32, unique=True, default=new_invitation_id, editable=False
    )
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField(max_length=254)
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    # SHA-256 of the token in the emailed link; the token itself is never stored.
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    # The API key that sent (or last re-sent) it: its authority ends with the key, so the
    # invitation cannot be accepted once the key is revoked, expired or deleted.
    invited_by_key = models.ForeignKey(
        "apikeys.ApiKey",
        null=True,
        blank=True,
        on_delete=models.RESTRICT,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # At most one open invitation per address and org.
            models.UniqueConstraint(
                fields=["org", "email"],
                condition=models.Q(accepted_at__isnull=True, cancelled_at__isnull=True),
                name="orgs_invitation_one_open_per_email",
            ),
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.email} to {self.org_id} as {self.role}"

    @property
    def status(self) -> str:
        if self.accepted_at is not None:
            return InvitationStatus.ACCEPTED
        if self.cancelled_at is not None:
            return InvitationStatus.CANCELLED
        if self.expires_at <= timezone.now():
            return InvitationStatus.EXPIRED
        return InvitationStatus.PENDING

    @property
    def is_usable(self) -> bool:
        return self.status == InvitationStatus.PENDING
