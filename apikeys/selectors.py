"""Reads of API keys. Org-owned reads take `org=`; another org's key is a 404."""

from __future__ import annotations

from django.db.models import Count, Q, QuerySet
from django.http import Http404
from django.utils import timezone

from apikeys.models import ApiKey, Environment
from orgs.models import AuditEvent, Organization

HISTORY_LIMIT = 50


def apikey_list(*, org: Organization) -> QuerySet[ApiKey]:
    """The org's keys that are not deleted, newest first, with their creators."""
    return (
        ApiKey.objects.filter(org=org, deleted_at__isnull=True)
        .select_related("created_by")
        .order_by("-created_at", "-id")
    )


def apikey_get(*, org: Organization, public_id: str) -> ApiKey:
    """One of the org's (not deleted) keys; absent and another org's alike raise Http404."""
    try:
        return ApiKey.objects.select_related("created_by", "predecessor").get(
            org=org, public_id=public_id, deleted_at__isnull=True
        )
    except ApiKey.DoesNotExist:
        raise Http404("No such API key.") from None


def apikey_get_by_digest(digest: str) -> ApiKey | None:
    """The key with this HMAC digest (deleted and revoked ones included), with its org."""
    return ApiKey.objects.select_related("org").filter(digest=digest).first()


def apikey_successor(*, org: Organization, key: ApiKey) -> ApiKey | None:
    """The key that replaced `key` in a rotation, if any and not deleted."""
    return (
        ApiKey.objects.filter(org=org, predecessor=key, deleted_at__isnull=True)
        .order_by("-created_at")
        .first()
    )


def apikey_history(*, org: Organization, key: ApiKey) -> list[AuditEvent]:
    """Audit events about `key`, newest first: those targeting it, and the rotation that
    created it (recorded on its predecessor)."""
    condition = Q(target_type="apikey", target_id=key.public_id)
    if key.predecessor_id is not None:
        condition |= Q(action="api_key.rotated", details__successor_id=key.public_id)
    return list(
        AuditEvent.objects.filter(Q(org=org) & condition)
        .select_related("actor_user")
        .order_by("-created_at", "-id")[:HISTORY_LIMIT]
    )


def apikey_counts(*, org: Organization) -> dict[str, int]:
    """The org's usable keys (not deleted, revoked or expired; a rotated key inside its
    grace period counts), in total and per environment: one query."""
    usable = ApiKey.objects.filter(org=org, deleted_at__isnull=True, revoked_at__isnull=True)
    usable = usable.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()))
    counts = usable.aggregate(
        active=Count("id"),
        live=Count("id", filter=Q(environment=Environment.LIVE)),
        test=Count("id", filter=Q(environment=Environment.TEST)),
    )
    return {name: int(value or 0) for name, value in counts.items()}
