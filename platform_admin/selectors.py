"""Reads for the KYC pages and the platform console.

Org-owned reads take `org=` and answer 404 for another org's object. Console reads span
every org: only views behind the platform base (verified staff) and system-key API
endpoints call them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db.models import Count, Prefetch, Q, QuerySet
from django.http import Http404

from accounts.models import PlatformRole, User
from orgs.models import AuditEvent, Membership, Organization, OrgStatus
from platform_admin.models import KycApplication, KycApplicationStatus, KycDocument

if TYPE_CHECKING:
    from apikeys.models import ApiKey

SEARCH_MAX_LENGTH = 100


def _with_documents(queryset: QuerySet[KycApplication]) -> QuerySet[KycApplication]:
    return queryset.select_related("org", "submitted_by", "reviewed_by").prefetch_related(
        Prefetch("documents", queryset=KycDocument.objects.order_by("uploaded_at", "id"))
    )


# ---------------------------------------------------------------------------------------
# Org side
# ---------------------------------------------------------------------------------------


def kyc_application_list(*, org: Organization) -> list[KycApplication]:
    """The org's applications, newest first, with their documents (the history)."""
    return list(
        _with_documents(KycApplication.objects.filter(org=org)).order_by("-submitted_at", "-id")
    )


def kyc_application_current(*, org: Organization) -> KycApplication | None:
    return (
        _with_documents(KycApplication.objects.filter(org=org))
        .order_by("-submitted_at", "-id")
        .first()
    )


def kyc_document_get(*, org: Organization, public_id: str) -> KycDocument:
    """One of the org's documents; absent and another org's alike raise Http404."""
    try:
        return KycDocument.objects.select_related("application__org").get(
            application__org=org, public_id=public_id
        )
    except KycDocument.DoesNotExist:
        raise Http404("No such document.") from None


# ---------------------------------------------------------------------------------------
# Console (platform staff, system keys)
# ---------------------------------------------------------------------------------------


def kyc_queue() -> QuerySet[KycApplication]:
    """Pending applications, oldest first: the order they should be reviewed in."""
    return (
        KycApplication.objects.filter(status=KycApplicationStatus.PENDING)
        .select_related("org")
        .annotate(document_count=Count("documents"))
        .order_by("submitted_at", "id")
    )


def kyc_recently_reviewed(*, limit: int = 20) -> QuerySet[KycApplication]:
    return (
        KycApplication.objects.exclude(status=KycApplicationStatus.PENDING)
        .select_related("org")
        .order_by("-reviewed_at", "-id")[:limit]
    )


def kyc_application_all(
    *, status: str | None = None, organization: str | None = None
) -> QuerySet[KycApplication]:
    """Every application (optionally of one status, of one org by public id), oldest
    first."""
    queryset = _with_documents(KycApplication.objects.all())
    if status:
        queryset = queryset.filter(status=status)
    if organization:
        queryset = queryset.filter(org__public_id=organization)
    return queryset.order_by("submitted_at", "id")


def kyc_application_get(*, public_id: str) -> KycApplication:
    try:
        return _with_documents(KycApplication.objects.all()).get(public_id=public_id)
    except KycApplication.DoesNotExist:
        raise Http404("No such KYC application.") from None


def kyc_application_document_get(*, application: KycApplication, public_id: str) -> KycDocument:
    try:
        return KycDocument.objects.select_related("application__org").get(
            application=application, public_id=public_id
        )
    except KycDocument.DoesNotExist:
        raise Http404("No such document.") from None


def organization_search(*, query: str = "", status: str = "") -> QuerySet[Organization]:
    """Orgs whose name, slug or public id contains `query`, with their member counts."""
    queryset = Organization.objects.annotate(member_count=Count("memberships"))
    query = query.strip()[:SEARCH_MAX_LENGTH]
    if query:
        queryset = queryset.filter(
            Q(name__icontains=query) | Q(slug__icontains=query) | Q(public_id__iexact=query)
        )
    if status:
        queryset = queryset.filter(status=status)
    return queryset.order_by("name", "id")


def organization_find_with_member_count(*, public_id: str) -> Organization | None:
    """The org with public id `public_id` and its `member_count`, or None."""
    return (
        Organization.objects.annotate(member_count=Count("memberships"))
        .filter(public_id=public_id)
        .first()
    )


def system_key_by_pk(*, pk: int) -> ApiKey:
    """The system key with database id `pk` (an authenticated key's own row)."""
    from apikeys.models import ApiKey

    return ApiKey.objects.get(pk=pk, org__isnull=True)


def organization_get(*, public_id: str) -> Organization:
    try:
        return Organization.objects.get(public_id=public_id)
    except Organization.DoesNotExist:
        raise Http404("No such organisation.") from None


def organization_members(*, org: Organization) -> QuerySet[Membership]:
    return Membership.objects.filter(org=org).select_related("user").order_by("created_at", "id")


def organization_keys(*, org: Organization) -> QuerySet[ApiKey]:
    from apikeys.selectors import apikey_list

    return apikey_list(org=org)


def organization_events(*, org: Organization, limit: int = 20) -> QuerySet[AuditEvent]:
    return (
        AuditEvent.objects.filter(org=org)
        .select_related("actor_user")
        .order_by("-created_at", "-id")[:limit]
    )


def platform_staff_list() -> QuerySet[User]:
    return User.objects.filter(
        platform_role__in=[PlatformRole.PLATFORM_ADMIN, PlatformRole.PLATFORM_OWNER]
    ).order_by("platform_role", "email")


def system_key_list() -> QuerySet[ApiKey]:
    from apikeys.models import ApiKey

    return (
        ApiKey.objects.filter(org__isnull=True, deleted_at__isnull=True)
        .select_related("created_by")
        .order_by("-created_at", "-id")
    )


def system_key_get(*, public_id: str) -> ApiKey:
    from apikeys.models import ApiKey

    try:
        return ApiKey.objects.get(org__isnull=True, deleted_at__isnull=True, public_id=public_id)
    except ApiKey.DoesNotExist:
        raise Http404("No such system key.") from None


@dataclass(frozen=True)
class PlatformCounts:
    kyc_pending: int
    organizations: int
    suspended: int
    kyc_approved: int
    staff: int


def platform_counts() -> PlatformCounts:
    orgs = Organization.objects.aggregate(
        total=Count("id"),
        suspended=Count("id", filter=Q(status=OrgStatus.SUSPENDED)),
        approved=Count("id", filter=Q(kyc_status="approved")),
    )
    return PlatformCounts(
        kyc_pending=KycApplication.objects.filter(status=KycApplicationStatus.PENDING).count(),
        organizations=orgs["total"],
        suspended=orgs["suspended"],
        kyc_approved=orgs["approved"],
        staff=platform_staff_list().count(),
    )
