from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.db.models import Q
from django_countries import countries

from orgs.ids import new_public_id
from orgs.models import Organization
from platform_admin.storage import private_storage


def new_kyc_id() -> str:
    return new_public_id("kyc")


def new_document_id() -> str:
    return new_public_id("doc")


def kyc_document_path(instance: KycDocument, filename: str) -> str:
    """A random path: the user's file name never reaches the file system."""
    extension = filename.rpartition(".")[2].lower() if "." in filename else "bin"
    org_id = instance.application.org.public_id
    return f"kyc/{org_id}/{secrets.token_hex(16)}.{extension}"


class KycApplicationStatus(models.TextChoices):
    PENDING = "pending", "Pending review"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"


class KycApplication(models.Model):
    """One submission of an org's KYC data. A resubmission after a rejection is a new row,
    so the history of what was submitted and decided stays intact.

    At most one application per org is pending or approved at any time.
    """

    public_id = models.CharField(max_length=32, unique=True, default=new_kyc_id, editable=False)
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="kyc_applications")
    legal_name = models.CharField(max_length=200)
    registration_number = models.CharField(max_length=64)
    country = models.CharField(max_length=2, choices=countries)
    address = models.TextField(max_length=500)
    director_name = models.CharField(max_length=150)
    status = models.CharField(
        max_length=10,
        choices=KycApplicationStatus.choices,
        default=KycApplicationStatus.PENDING,
    )
    rejection_reason = models.TextField(blank=True)
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    # Who submitted, kept even if the user or key is gone: an email or a key's display form.
    submitted_by_label = models.CharField(max_length=254, blank=True)
    submitted_at = models.DateTimeField()
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    reviewed_by_label = models.CharField(max_length=254, blank=True)
    reviewed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-submitted_at", "-id"]
        indexes = [
            models.Index(fields=["status", "submitted_at"], name="platform_kyc_status_time"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["org"],
                condition=Q(status__in=["pending", "approved"]),
                name="platform_kyc_one_open_per_org",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.public_id} ({self.legal_name})"

    @property
    def country_name(self) -> str:
        return countries.name(self.country) or self.country

    @property
    def is_pending(self) -> bool:
        return self.status == KycApplicationStatus.PENDING


class KycDocument(models.Model):
    """A document attached to an application, stored privately (never under a public URL).

    `content_type` was detected from the file's first bytes; `filename` is the sanitised
    name offered on download. A resubmission may carry a document over: the new row points
    at the same stored file, which is never deleted while a row names it.
    """

    public_id = models.CharField(
        max_length=32, unique=True, default=new_document_id, editable=False
    )
    application = models.ForeignKey(
        KycApplication, on_delete=models.CASCADE, related_name="documents"
    )
    file = models.FileField(storage=private_storage, upload_to=kyc_document_path, max_length=255)
    filename = models.CharField(max_length=128)
    content_type = models.CharField(max_length=40)
    size = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    uploaded_at = models.DateTimeField()

    class Meta:
        ordering = ["uploaded_at", "id"]

    def __str__(self) -> str:
        return f"{self.filename} ({self.public_id})"
