from __future__ import annotations

from celery import shared_task

from webhooks import scans


@shared_task(ignore_result=True)
def scan_key_expiry() -> int:
    """Announce keys about to expire and keys that expired (beat, hourly)."""
    return scans.scan_key_expiry()


@shared_task(ignore_result=True)
def scan_quotas() -> int:
    """Announce orgs past 80 % and 100 % of their monthly quota (beat, every 10 minutes)."""
    return scans.scan_quotas()
