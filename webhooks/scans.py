"""Scheduled scans that turn time into events: a key about to expire (7 days and 1 day
before its expiry or grace end), a key that has expired, an org past 80 % of its monthly
quota and one that has used all of it (docs/webhooks.md). Each occurrence is announced once,
however often the scan runs (`EventMark`)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Sum
from django.utils import timezone

from accounts.emails import queue_email
from apikeys.models import ApiKey, KeyUsageHour
from apikeys.selectors import month_start
from orgs.models import Organization
from orgs.selectors import admin_emails
from webhooks.events import emit
from webhooks.models import EventMark

WARN_BEFORE = (timedelta(days=7), timedelta(days=1))
# A key that expired longer ago than this is not announced (a first run on an old database).
EXPIRED_LOOKBACK = timedelta(days=7)
EXPIRING_EMAIL = "webhooks/email/api_key_expiring"
QUOTA_EMAIL = "webhooks/email/quota"
QUOTA_WARNING_PERCENT = 80


def _once(event_type: str, subject: str, occurrence: str) -> bool:
    """Record the occurrence; False if it was already announced."""
    try:
        with transaction.atomic():
            EventMark.objects.create(event_type=event_type, subject=subject, occurrence=occurrence)
    except IntegrityError:
        return False
    return True


def _key_data(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.public_id,
        "name": key.name,
        "environment": key.environment,
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
    }


def _live_keys() -> Any:
    return ApiKey.objects.filter(
        org__isnull=False, revoked_at__isnull=True, deleted_at__isnull=True
    ).select_related("org")


def scan_key_expiry(*, now: datetime | None = None) -> int:
    """Emit `api_key.expiring` and `api_key.expired` for keys whose time has come; returns
    how many events were emitted."""
    now = now or timezone.now()
    emitted = 0
    soon = _live_keys().filter(expires_at__gt=now, expires_at__lte=now + WARN_BEFORE[0])
    for key in soon:
        assert key.expires_at is not None and key.org is not None
        left = key.expires_at - now
        # The nearest threshold passed: a key found 20 hours before expiry gets the 1-day
        # warning only.
        window = min((w for w in WARN_BEFORE if left <= w), default=WARN_BEFORE[0])
        days = int(window / timedelta(days=1))
        if not _once("api_key.expiring", key.public_id, f"{key.expires_at.isoformat()}/{days}d"):
            continue
        with transaction.atomic():
            emit(
                key.org,
                "api_key.expiring",
                {
                    "api_key": _key_data(key),
                    "days": days,
                    "rotation_grace": key.rotated_at is not None,
                },
            )
            context = {
                "org_name": key.org.name,
                "key_name": key.name,
                "key_id": key.public_id,
                "expires_at": key.expires_at.isoformat(),
                "days": days,
                "key_path": f"/o/{key.org.slug}/api-keys/{key.public_id}/",
            }
            for email in admin_emails(org=key.org):
                queue_email(to=[email], template=EXPIRING_EMAIL, context=context)
        emitted += 1
    expired = _live_keys().filter(expires_at__lte=now, expires_at__gt=now - EXPIRED_LOOKBACK)
    for key in expired:
        assert key.expires_at is not None
        if not _once("api_key.expired", key.public_id, key.expires_at.isoformat()):
            continue
        with transaction.atomic():
            emit(key.org, "api_key.expired", {"api_key": _key_data(key)})
        emitted += 1
    return emitted


def scan_quotas(*, now: datetime | None = None) -> int:
    """Emit `quota.warning` (80 % of the monthly quota) and `quota.exhausted` once per org
    and month, from the usage folded so far (run after the fold); returns how many."""
    now = now or timezone.now()
    start = month_start(now)
    month = start.strftime("%Y-%m")
    used_by_org = dict(
        KeyUsageHour.objects.filter(hour__gte=start)
        .values("org")
        .annotate(used=Sum(F("count_2xx") + F("count_4xx") + F("count_5xx")))
        .values_list("org", "used")
    )
    emitted = 0
    for org in Organization.objects.filter(pk__in=list(used_by_org)):
        limit = org.limits.monthly
        used = int(used_by_org[org.pk] or 0)
        if not limit:
            continue  # unlimited
        for event_type, reached in (
            ("quota.warning", used * 100 >= limit * QUOTA_WARNING_PERCENT),
            ("quota.exhausted", used >= limit),
        ):
            if not reached or not _once(event_type, org.public_id, month):
                continue
            with transaction.atomic():
                data = {
                    "organization": {"id": org.public_id, "name": org.name, "slug": org.slug},
                    "month": month,
                    "used": used,
                    "limit": limit,
                }
                emit(org, event_type, data)
                context = {
                    "org_name": org.name,
                    "exhausted": event_type == "quota.exhausted",
                    "used": used,
                    "limit": limit,
                    "month": month,
                    "usage_path": f"/o/{org.slug}/usage/",
                }
                for email in admin_emails(org=org):
                    queue_email(to=[email], template=QUOTA_EMAIL, context=context)
            emitted += 1
    return emitted
