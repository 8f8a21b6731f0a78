"""Writes of the KYC flow and the platform console.

Every service is keyword-only and atomic, takes who acts as `actor=` (`orgs.actors.Actor`)
and records an audit event naming it: the staff member (or the system key) for staff
actions, with `org=` the org concerned so the org sees the event on its own log. Errors
are `PlatformError`s carrying a stable `code` and a message fit to show the user; bad
input is an `InvalidFields` (`config.errors`) keyed by field.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from django_countries import countries

from accounts.emails import queue_email
from accounts.models import PlatformRole, User
from config.errors import InvalidFields
from orgs.actors import Actor
from orgs.models import KycStatus, Organization, OrgStatus, Role
from orgs.plans import Plan
from orgs.services import ServiceError, audit_record, invalidate_org_keys
from platform_admin.documents import Upload, check_documents
from platform_admin.models import KycApplication, KycApplicationStatus, KycDocument
from webhooks.events import emit

if TYPE_CHECKING:
    from apikeys.models import ApiKey

logger = logging.getLogger(__name__)

KYC_APPROVED_EMAIL = "platform_admin/email/kyc_approved"
KYC_REJECTED_EMAIL = "platform_admin/email/kyc_rejected"
REASON_MAX_LENGTH = 2000
# PositiveIntegerField holds up to 2**31 - 1 on every supported database.
LIMIT_MAX = 2_000_000_000

FIELD_LIMITS = {
    "legal_name": 200,
    "registration_number": 64,
    "address": 500,
    "director_name": 150,
}


class PlatformError(ServiceError):
    """A refused platform operation (`forbidden`, `kyc_pending`, `kyc_approved`,
    `kyc_not_pending`, `last_owner`, `not_found`, ...)."""


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def _check_staff(actor: Actor, *, allow_system: bool = False) -> None:
    """A staff action needs platform staff, a system key (the API checked its scope), or,
    where `allow_system`, the operator's command line (the system actor)."""
    if actor.api_key is not None:
        if actor.api_key.org_id is not None:
            raise PlatformError("Organisation keys cannot act on the platform.", code="forbidden")
        return
    if actor.is_system and allow_system:
        return
    if actor.user is None or not actor.user.is_platform_staff:
        raise PlatformError("Only platform staff can do this.", code="forbidden")


def _check_owner(actor: Actor, *, allow_system: bool = False) -> None:
    """A platform owner, or, where `allow_system`, the operator's command line."""
    if actor.is_system and allow_system:
        return
    if actor.user is None or not actor.user.is_platform_owner:
        raise PlatformError("Only platform owners can do this.", code="forbidden")


def _lock_org(org: Organization) -> Organization:
    return Organization.objects.select_for_update().get(pk=org.pk)


def org_admin_emails(org: Organization) -> list[str]:
    """Emails of the org's owners and admins: the people told about KYC decisions."""
    return sorted(
        org.memberships.filter(role__in=[Role.OWNER, Role.ADMIN], user__is_active=True)
        .values_list("user__email", flat=True)
        .distinct()
    )


def _notify_decision(application: KycApplication, template: str) -> None:
    org = application.org
    context = {
        "org_name": org.name,
        "org_slug": org.slug,
        "application_id": application.public_id,
        "legal_name": application.legal_name,
        "reason": application.rejection_reason,
        "kyc_path": f"/o/{org.slug}/kyc/",
    }
    for email in org_admin_emails(org):
        queue_email(to=[email], template=template, context=context)


# ---------------------------------------------------------------------------------------
# KYC
# ---------------------------------------------------------------------------------------


def _clean_kyc_fields(data: dict[str, Any]) -> dict[str, str]:
    cleaned: dict[str, str] = {}
    errors: dict[str, list[str]] = {}
    for name, limit in FIELD_LIMITS.items():
        raw = data.get(name)
        value = raw.strip() if isinstance(raw, str) else ""
        if name != "address":
            value = " ".join(value.split())
        if "\x00" in value:
            errors[name] = ["This field contains a null character."]
        elif not value:
            errors[name] = ["This field is required."]
        elif len(value) > limit:
            errors[name] = [f"At most {limit} characters."]
        cleaned[name] = value
    country = data.get("country")
    country = country.strip().upper() if isinstance(country, str) else ""
    if country not in countries:
        errors["country"] = ["Choose a country (ISO 3166-1 alpha-2 code)."]
    cleaned["country"] = country
    if errors:
        raise InvalidFields(errors)
    return cleaned


@transaction.atomic
def kyc_submit(
    *,
    org: Organization,
    legal_name: str,
    registration_number: str,
    country: str,
    address: str,
    director_name: str,
    documents: Sequence[Upload] = (),
    keep_documents: Sequence[str] = (),
    actor: Actor,
    request: HttpRequest | None = None,
) -> KycApplication:
    """Submit the org's KYC application; the org's KYC status becomes `pending`.

    Invariants: only while the status is `not_submitted` or `rejected` (a pending or
    approved application is read-only: PlatformError `kyc_pending` / `kyc_approved`);
    1 to KYC_MAX_DOCUMENTS documents, each a PDF/PNG/JPEG by content and within the size
    limit; `keep_documents` names documents of the org's latest rejected application to
    carry over. A resubmission is a new application: earlier ones stay as history.
    """
    locked = _lock_org(org)
    latest = KycApplication.objects.filter(org=locked).order_by("-submitted_at", "-id").first()
    # The org's own status decides too: an org approved or under review by other means
    # (platform staff, an import) has no application to look at, and must not be sent
    # back to `pending` (which would block its live keys).
    if locked.kyc_status == KycStatus.PENDING or (
        latest is not None and latest.status == KycApplicationStatus.PENDING
    ):
        raise PlatformError(
            "The KYC application is under review; it cannot be changed now.", code="kyc_pending"
        )
    if locked.kyc_status == KycStatus.APPROVED or (
        latest is not None and latest.status == KycApplicationStatus.APPROVED
    ):
        raise PlatformError(
            "The KYC application is approved; it cannot be changed.", code="kyc_approved"
        )

    fields = _clean_kyc_fields(
        {
            "legal_name": legal_name,
            "registration_number": registration_number,
            "country": country,
            "address": address,
            "director_name": director_name,
        }
    )
    carried: list[KycDocument] = []
    if keep_documents:
        wanted = set(keep_documents)
        if latest is not None:
            carried = [d for d in latest.documents.all() if d.public_id in wanted]
        if len(carried) != len(wanted):
            raise InvalidFields(
                {"documents": ["A document to keep is not part of the last application."]}
            )
    try:
        checked = check_documents(list(documents), already=len(carried))
    except ValidationError as exc:  # the documents' validator (forms use it too)
        raise InvalidFields({"documents": exc.messages}) from None

    now = timezone.now()
    application = KycApplication.objects.create(
        org=locked,
        status=KycApplicationStatus.PENDING,
        submitted_by=actor.user,
        submitted_by_label=actor.label,
        submitted_at=now,
        **fields,
    )
    for old in carried:
        KycDocument.objects.create(
            application=application,
            file=old.file.name,
            filename=old.filename,
            content_type=old.content_type,
            size=old.size,
            sha256=old.sha256,
            uploaded_at=old.uploaded_at,
        )
    stored: list[KycDocument] = []
    try:
        for item in checked:
            document = KycDocument(
                application=application,
                filename=item.filename,
                content_type=item.content_type,
                size=item.size,
                sha256=item.sha256,
                uploaded_at=now,
            )
            document.file.save(item.filename, item.file, save=True)
            stored.append(document)
    except Exception:
        # The rows roll back with the transaction; the files written so far must go too.
        for document in stored:
            document.file.storage.delete(document.file.name)
        raise

    locked.kyc_status = KycStatus.PENDING
    locked.save(update_fields=["kyc_status", "updated_at"])
    org.kyc_status = KycStatus.PENDING
    # Keys' cached view of the org (`me`, the gate on live keys) must not go stale.
    invalidate_org_keys(locked)
    audit_record(
        action="kyc.submitted",
        org=locked,
        request=request,
        actor=actor,
        target=application,
        target_label=application.legal_name,
        details={
            "documents": len(carried) + len(stored),
            "country": application.country,
            "resubmission": latest is not None,
        },
    )
    return application


def _locked_pending(application: KycApplication) -> KycApplication:
    locked = (
        KycApplication.objects.select_for_update(of=("self",))
        .select_related("org")
        .get(pk=application.pk)
    )
    if locked.status != KycApplicationStatus.PENDING:
        raise PlatformError(
            f"This application was already {locked.get_status_display().lower()}.",
            code="kyc_not_pending",
        )
    return locked


def _decide(
    *,
    application: KycApplication,
    status: str,
    reason: str,
    actor: Actor,
    request: HttpRequest | None,
) -> KycApplication:
    _check_staff(actor)
    locked = _locked_pending(application)
    now = timezone.now()
    locked.status = status
    locked.rejection_reason = reason
    locked.reviewed_by = actor.user
    locked.reviewed_by_label = actor.label
    locked.reviewed_at = now
    locked.save(
        update_fields=[
            "status",
            "rejection_reason",
            "reviewed_by",
            "reviewed_by_label",
            "reviewed_at",
        ]
    )
    org = _lock_org(locked.org)
    org.kyc_status = (
        KycStatus.APPROVED if status == KycApplicationStatus.APPROVED else (KycStatus.REJECTED)
    )
    org.save(update_fields=["kyc_status", "updated_at"])
    locked.org = org
    details: dict[str, Any] = {"legal_name": locked.legal_name}
    if reason:
        details["reason"] = reason
    audit_record(
        action="kyc.approved" if status == KycApplicationStatus.APPROVED else "kyc.rejected",
        org=org,
        request=request,
        actor=actor,
        target=locked,
        target_label=locked.legal_name,
        details=details,
    )
    _notify_decision(
        locked,
        KYC_APPROVED_EMAIL if status == KycApplicationStatus.APPROVED else KYC_REJECTED_EMAIL,
    )
    emit(
        org,
        "kyc.approved" if status == KycApplicationStatus.APPROVED else "kyc.rejected",
        {
            "application": {"id": locked.public_id, "legal_name": locked.legal_name},
            "organization": {"id": org.public_id, "name": org.name, "slug": org.slug},
        },
    )
    # Keys' cached view of the org (its KYC status gates live keys) must not go stale.
    invalidate_org_keys(org)
    application.status, application.reviewed_at = locked.status, locked.reviewed_at
    application.rejection_reason = locked.rejection_reason
    return locked


@transaction.atomic
def kyc_approve(
    *,
    application: KycApplication,
    actor: Actor,
    request: HttpRequest | None = None,
) -> KycApplication:
    """Approve a pending application: the org's KYC status becomes `approved` (live keys
    open up) and its owners and admins are emailed. Only pending applications."""
    return _decide(
        application=application,
        status=KycApplicationStatus.APPROVED,
        reason="",
        actor=actor,
        request=request,
    )


def clean_reason(reason: object) -> str:
    value = reason.strip() if isinstance(reason, str) else ""
    if not value:
        raise InvalidFields({"reason": ["Give a reason: the organisation will read it."]})
    if len(value) > REASON_MAX_LENGTH or "\x00" in value:
        raise InvalidFields({"reason": [f"At most {REASON_MAX_LENGTH} characters."]})
    return value


@transaction.atomic
def kyc_reject(
    *,
    application: KycApplication,
    reason: str,
    actor: Actor,
    request: HttpRequest | None = None,
) -> KycApplication:
    """Reject a pending application with a reason (required, shown to the org and put in
    the email to its owners and admins). The org may then correct and resubmit."""
    return _decide(
        application=application,
        status=KycApplicationStatus.REJECTED,
        reason=clean_reason(reason),
        actor=actor,
        request=request,
    )


def kyc_document_record_download(
    *, document: KycDocument, actor: Actor, request: HttpRequest | None = None
) -> None:
    """Staff reading an org's document is an audit event on the org's log."""
    if actor.user is None or not actor.user.is_platform_staff:
        return
    application = document.application
    audit_record(
        action="kyc.document_viewed",
        org=application.org,
        request=request,
        actor=actor,
        target=document,
        target_type="kycdocument",
        target_label=document.filename,
        details={"application_id": application.public_id},
    )


# ---------------------------------------------------------------------------------------
# Organisations
# ---------------------------------------------------------------------------------------


@transaction.atomic
def org_set_plan(
    *,
    org: Organization,
    plan: str,
    actor: Actor,
    request: HttpRequest | None = None,
) -> Organization:
    """Move the org to `plan`; its keys see the new limits on their next request."""
    _check_staff(actor)
    if plan not in Plan.values:
        raise InvalidFields({"plan": [f"Choose one of: {', '.join(Plan.values)}."]})
    locked = _lock_org(org)
    previous = locked.plan
    if previous != plan:
        locked.plan = plan
        locked.save(update_fields=["plan", "updated_at"])
        audit_record(
            action="org.plan_changed",
            org=locked,
            request=request,
            actor=actor,
            target=locked,
            details={"from": previous, "to": plan},
        )
        invalidate_org_keys(locked)
    org.plan = locked.plan
    return locked


@transaction.atomic
def platform_org_create(
    *,
    name: str,
    slug: str,
    owner_email: str,
    plan: str = Plan.STARTER,
    actor: Actor,
    request: HttpRequest | None = None,
) -> Organization:
    """Create an org for a customer, with `owner_email` as its first owner (their account
    is created if needed; they sign in with a magic link to that address).

    `orgs.services.org_create` records `org.created`; this records `platform.org_created`
    naming the staff member or system key that did it.
    """
    from accounts.models import normalize_email
    from orgs.services import org_create

    _check_staff(actor)
    email = normalize_email(owner_email)
    owner = User.objects.filter(email=email).first()
    if owner is None:
        owner = User.objects.create_user(email)
    org = org_create(name=name, slug=slug, owner=owner, plan=plan, request=request)
    audit_record(
        action="platform.org_created",
        org=org,
        request=request,
        actor=actor,
        target=org,
        details={"slug": org.slug, "plan": org.plan, "owner": owner.email},
    )
    return org


def _clean_limit(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= LIMIT_MAX:
        raise InvalidFields({name: [f"Use a whole number from 0 to {LIMIT_MAX}, or none."]})
    return value


@transaction.atomic
def org_set_limits(
    *,
    org: Organization,
    per_minute: int | None,
    burst: int | None,
    monthly: int | None,
    actor: Actor,
    request: HttpRequest | None = None,
) -> Organization:
    """Set all three custom limits: None means "the plan's", 0 means unlimited.

    Platform staff, a system key, or the operator's command line (`actor=Actor.system()`,
    the `set_org_limits` command)."""
    _check_staff(actor, allow_system=True)
    values = {
        "custom_per_minute": _clean_limit("per_minute", per_minute),
        "custom_burst": _clean_limit("burst", burst),
        "custom_monthly": _clean_limit("monthly", monthly),
    }
    locked = _lock_org(org)
    before = {name: getattr(locked, name) for name in values}
    if before != values:
        for name, value in values.items():
            setattr(locked, name, value)
        locked.save(update_fields=[*values, "updated_at"])
        audit_record(
            action="org.limits_changed",
            org=locked,
            request=request,
            actor=actor,
            target=locked,
            details={
                "from": {k.removeprefix("custom_"): v for k, v in before.items()},
                "to": {k.removeprefix("custom_"): v for k, v in values.items()},
            },
        )
        invalidate_org_keys(locked)
    for name, value in values.items():
        setattr(org, name, value)
    return locked


def _set_status(
    *,
    org: Organization,
    status: str,
    reason: str,
    actor: Actor,
    request: HttpRequest | None,
) -> Organization:
    _check_staff(actor)
    if len(reason) > REASON_MAX_LENGTH:
        raise InvalidFields({"reason": [f"At most {REASON_MAX_LENGTH} characters."]})
    locked = _lock_org(org)
    if locked.status != status:
        locked.status = status
        locked.save(update_fields=["status", "updated_at"])
        details = {"reason": reason} if reason else {}
        audit_record(
            action="org.suspended" if status == OrgStatus.SUSPENDED else "org.reactivated",
            org=locked,
            request=request,
            actor=actor,
            target=locked,
            details=details,
        )
        invalidate_org_keys(locked)
    org.status = locked.status
    return locked


@transaction.atomic
def org_suspend(
    *,
    org: Organization,
    actor: Actor,
    reason: str = "",
    request: HttpRequest | None = None,
) -> Organization:
    """Suspend the org: the API refuses every one of its keys (403 `org_suspended`) from
    the next request on, in every worker. Nobody is signed out of anything."""
    return _set_status(
        org=org,
        status=OrgStatus.SUSPENDED,
        reason=reason.strip(),
        actor=actor,
        request=request,
    )


@transaction.atomic
def org_reactivate(
    *,
    org: Organization,
    actor: Actor,
    request: HttpRequest | None = None,
) -> Organization:
    """Lift a suspension: the org's keys that are otherwise valid work again."""
    return _set_status(
        org=org,
        status=OrgStatus.ACTIVE,
        reason="",
        actor=actor,
        request=request,
    )


# ---------------------------------------------------------------------------------------
# Platform roles and system keys (platform owners only)
# ---------------------------------------------------------------------------------------


@transaction.atomic
def platform_role_set(
    *,
    user: User,
    role: str,
    actor: Actor,
    request: HttpRequest | None = None,
) -> User:
    """Give `user` the platform role `role` (`platform_admin`, `platform_owner`, `none`).

    Invariants: only a platform owner acts (or the operator's command line,
    `Actor.system()`);
    the last platform owner is never demoted (`last_owner`); sessions are left alone.
    """
    if role not in PlatformRole.values:
        raise PlatformError("Unknown platform role.", code="invalid_role")
    _check_owner(actor, allow_system=True)
    # Lock every owner row so two concurrent demotions cannot both see "another remains".
    owners = list(
        User.objects.select_for_update()
        .filter(platform_role=PlatformRole.PLATFORM_OWNER)
        .values_list("pk", flat=True)
    )
    target = User.objects.select_for_update().get(pk=user.pk)
    previous = target.platform_role
    if previous == role:
        return target
    if previous == PlatformRole.PLATFORM_OWNER and owners == [target.pk]:
        raise PlatformError(
            "This is the last platform owner; make someone else an owner first.",
            code="last_owner",
        )
    target.platform_role = role
    target.save(update_fields=["platform_role"])
    user.platform_role = role
    audit_record(
        action="platform.role_revoked" if role == PlatformRole.NONE else "platform.role_granted",
        request=request,
        actor=actor,
        target=target,
        target_type="user",
        target_id=str(target.pk),
        target_label=target.email,
        details={"role": role, "previous_role": previous},
    )
    return target


@transaction.atomic
def system_key_create(
    *,
    name: str,
    scopes: Sequence[str],
    actor: Actor,
    expires_at: datetime | None = None,
    request: HttpRequest | None = None,
) -> tuple[ApiKey, str]:
    """Issue a system key (`lk_sys_…`) with platform scopes; returns the secret, once.
    Platform owners only."""
    from apikeys.services import system_apikey_create

    _check_owner(actor)
    key, secret = system_apikey_create(
        name=name,
        scopes=list(scopes),
        actor=actor,
        expires_at=expires_at,
        request=request,
    )
    audit_record(
        action="system_key.created",
        request=request,
        actor=actor,
        target=key,
        target_label=key.name,
        details={"name": key.name, "scopes": list(key.scopes), "display": key.display},
    )
    return key, secret


@transaction.atomic
def system_key_revoke(*, key: ApiKey, actor: Actor, request: HttpRequest | None = None) -> ApiKey:
    """Revoke a system key at once (platform owners only). Organisation keys are not this
    service's business."""
    from apikeys.services import apikey_revoke

    _check_owner(actor)
    if key.org_id is not None:
        raise PlatformError("That is not a system key.", code="not_found")
    was_revoked = key.revoked_at is not None
    revoked = apikey_revoke(key=key, actor=actor, request=request)
    if not was_revoked:
        audit_record(
            action="system_key.revoked",
            request=request,
            actor=actor,
            target=revoked,
            target_label=revoked.name,
            details={"name": revoked.name, "display": revoked.display},
        )
    return revoked
