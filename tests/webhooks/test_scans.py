"""`api_key.expiring` (7 days and 1 day before), `api_key.expired`, `quota.warning` and
`quota.exhausted`, once per occurrence however often the scans run; `manage.py
run_scheduled --once` runs them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.core import mail
from django.core.management import call_command
from django.utils import timezone

from accounts.models import User
from apikeys.models import ApiKey, KeyUsageHour
from apikeys.services import apikey_create, apikey_revoke
from orgs.actors import Actor
from orgs.models import Organization
from webhooks.models import WebhookDelivery
from webhooks.scans import scan_key_expiry, scan_quotas
from webhooks.services import endpoint_create

pytestmark = pytest.mark.django_db

Capture = Callable[..., Any]


@pytest.fixture
def endpoint(org: Organization, settings: Any) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = True
    endpoint_create(org=org, url="http://127.0.0.1:9/hooks", actor=Actor.system())


def key_expiring_in(org: Organization, delta: timedelta, name: str = "CI") -> ApiKey:
    key, _ = apikey_create(
        actor=Actor.system(),
        org=org,
        name=name,
        environment="test",
        scopes=["members:read"],
        expires_at=timezone.now() + timedelta(days=30),
    )
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() + delta)
    key.refresh_from_db()
    return key


def sent(event_type: str) -> list[dict[str, Any]]:
    return [d.payload["data"] for d in WebhookDelivery.objects.filter(event_type=event_type)]


def test_expiring_is_sent_at_seven_days_and_at_one_day_once_each(
    org: Organization,
    owner: User,
    admin_user: User,
    member_user: User,
    endpoint: None,
    django_capture_on_commit_callbacks: Capture,
) -> None:
    key = key_expiring_in(org, timedelta(days=6, hours=23))
    with django_capture_on_commit_callbacks(execute=True):
        assert scan_key_expiry() == 1
    assert scan_key_expiry() == 0  # again: nothing new
    (data,) = sent("api_key.expiring")
    assert data["api_key"]["id"] == key.public_id and data["days"] == 7
    emails = [m for m in mail.outbox if "expires in 7 days" in m.subject]
    assert sorted(m.to[0] for m in emails) == ["admin@acme.test", "owner@acme.test"]
    assert f"/o/acme/api-keys/{key.public_id}/" in emails[0].body

    later = timezone.now() + timedelta(days=6)
    assert scan_key_expiry(now=later) == 1
    assert scan_key_expiry(now=later) == 0
    assert sorted(d["days"] for d in sent("api_key.expiring")) == [1, 7]


def test_expired_is_sent_once_and_revoked_keys_are_left_alone(
    org: Organization, endpoint: None
) -> None:
    expired = key_expiring_in(org, -timedelta(minutes=5))
    revoked = key_expiring_in(org, timedelta(days=2), name="Gone")
    apikey_revoke(key=revoked, actor=Actor.system())
    key_expiring_in(org, timedelta(days=30), name="Later")
    assert scan_key_expiry() == 1
    assert scan_key_expiry() == 0
    (data,) = sent("api_key.expired")
    assert data["api_key"]["id"] == expired.public_id
    assert sent("api_key.expiring") == []


def test_run_scheduled_once_runs_the_scan(org: Organization, endpoint: None) -> None:
    key = key_expiring_in(org, timedelta(hours=20))
    out = StringIO()
    call_command("run_scheduled", "--once", stdout=out)
    assert "webhooks-scan-key-expiry: 1" in out.getvalue()
    assert "outbox-deliver-due" in out.getvalue()
    (data,) = sent("api_key.expiring")
    assert data["api_key"]["id"] == key.public_id and data["days"] == 1


def _use(key: ApiKey, hour: datetime, requests: int) -> None:
    KeyUsageHour.objects.update_or_create(
        api_key=key, hour=hour, defaults={"org": key.org, "count_2xx": requests}
    )


def test_quota_warning_at_80_percent_and_exhausted_at_100_once_per_month(
    org: Organization,
    owner: User,
    member_user: User,
    endpoint: None,
    django_capture_on_commit_callbacks: Capture,
) -> None:
    Organization.objects.filter(pk=org.pk).update(custom_monthly=100)
    key, _ = apikey_create(
        actor=Actor.system(), org=org, name="CI", environment="test", scopes=["members:read"]
    )
    now = timezone.now()
    hour = now.replace(minute=0, second=0, microsecond=0)
    _use(key, hour, 79)
    assert scan_quotas(now=now) == 0
    _use(key, hour, 85)
    with django_capture_on_commit_callbacks(execute=True):
        assert scan_quotas(now=now) == 1
    assert scan_quotas(now=now) == 0
    (data,) = sent("quota.warning")
    assert data["used"] == 85 and data["limit"] == 100 and data["month"] == now.strftime("%Y-%m")
    warned = [m for m in mail.outbox if "over 80" in m.subject]
    assert [m.to for m in warned] == [["owner@acme.test"]]
    assert "/o/acme/usage/" in warned[0].body

    _use(key, hour, 100)
    assert scan_quotas(now=now) == 1
    assert scan_quotas(now=now) == 0
    assert sent("quota.exhausted")[0]["used"] == 100
    assert len(sent("quota.warning")) == 1


def test_unlimited_orgs_get_no_quota_events(org: Organization, endpoint: None) -> None:
    Organization.objects.filter(pk=org.pk).update(custom_monthly=0)
    key, _ = apikey_create(
        actor=Actor.system(), org=org, name="CI", environment="test", scopes=["members:read"]
    )
    _use(key, timezone.now().replace(minute=0, second=0, microsecond=0), 10**9)
    assert scan_quotas() == 0
