"""`manage.py seed_demo` (run by `make run`): demo orgs, keys with a week of usage, audit
events and a KYC application waiting for staff; running it again changes nothing."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import models

from accounts.models import PlatformRole, User
from apikeys import selectors as apikey_selectors
from apikeys.models import ApiKey, KeyUsageHour
from orgs.actors import Actor
from orgs.management.commands import seed_demo
from orgs.models import AuditEvent, KycStatus, Membership, Organization, Role
from platform_admin.models import KycApplication, KycDocument
from platform_admin.selectors import kyc_queue

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 30, 14, 25, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _private_media(settings: Any, tmp_path: Path) -> Path:
    settings.PRIVATE_MEDIA_ROOT = tmp_path / "private"
    return settings.PRIVATE_MEDIA_ROOT


@pytest.fixture(autouse=True)
def _fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The week of usage ends with the hour the command runs in: pin it, so two runs in a
    row cannot straddle an hour."""
    monkeypatch.setattr(seed_demo, "_now", lambda: NOW)


def seed() -> str:
    out = StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def snapshot() -> dict[str, list[tuple[Any, ...]]]:
    """Every row the command may touch, as plain values."""
    tables: dict[str, type[models.Model]] = {
        "users": User,
        "orgs": Organization,
        "memberships": Membership,
        "keys": ApiKey,
        "usage": KeyUsageHour,
        "events": AuditEvent,
        "applications": KycApplication,
        "documents": KycDocument,
    }
    return {
        name: sorted(tuple(str(v) for v in row) for row in model._default_manager.values_list())
        for name, model in tables.items()
    }


def test_seed_demo_is_idempotent() -> None:
    seed()
    first = snapshot()
    output = seed()
    assert snapshot() == first
    assert "Added" not in output and "Created" not in output
    org = Organization.objects.get(slug="demo")
    membership = Membership.objects.get(org=org)
    assert membership.role == Role.OWNER
    assert membership.user.email == "owner@demo.latchkey.test"


def test_the_demo_org_has_keys_with_a_week_of_hourly_usage() -> None:
    seed()
    org = Organization.objects.get(slug="demo")
    keys = {key.name: key for key in ApiKey.objects.filter(org=org)}
    assert set(keys) == {"Production backend", "Analytics export", "Staging", "Old billing sync"}
    assert keys["Old billing sync"].revoked_at is not None
    assert keys["Production backend"].environment == "live"
    current = NOW.replace(minute=0)
    for name in ("Production backend", "Analytics export", "Staging"):
        hours = list(KeyUsageHour.objects.filter(api_key=keys[name]).values_list("hour", flat=True))
        assert len(hours) == 7 * 24, name
        assert min(hours) == current - timedelta(hours=7 * 24 - 1) and max(hours) == current
        assert keys[name].last_used_at is not None
    assert not KeyUsageHour.objects.filter(api_key=keys["Old billing sync"]).exists()
    # The dashboard's own selectors see it: the charts have data.
    window = apikey_selectors.usage_window("24h", now=NOW)
    points = apikey_selectors.usage_series(
        org=org, since=window.since, until=window.until, granularity=window.granularity
    )
    assert sum(point.requests for point in points) > 1000
    assert any(point.count_4xx for point in points)


def test_usage_is_topped_up_for_new_hours_only(monkeypatch: pytest.MonkeyPatch) -> None:
    seed()
    before = {(row.api_key_id, row.hour): row.requests for row in KeyUsageHour.objects.all()}
    monkeypatch.setattr(seed_demo, "_now", lambda: NOW + timedelta(hours=3))
    seed()
    after = {(row.api_key_id, row.hour): row.requests for row in KeyUsageHour.objects.all()}
    # Earlier hours are kept as they were, three new hours per active key are added.
    assert all(after[k] == v for k, v in before.items() if k[1] < NOW.replace(minute=0))
    assert len(after) == len(before) + 3 * 3


def test_the_demo_records_audit_events_and_prints_no_secret() -> None:
    output = seed()
    org = Organization.objects.get(slug="demo")
    actions = list(AuditEvent.objects.filter(org=org).values_list("action", flat=True))
    assert actions.count("api_key.created") == 4 and actions.count("api_key.revoked") == 1
    assert "org.created" in actions
    assert not re.search(r"lk_(live|test)_[0-9A-Za-z]{20,}", output)


def test_a_second_org_waits_in_the_staff_kyc_queue() -> None:
    output = seed()
    globex = Organization.objects.get(slug="globex")
    assert globex.kyc_status == KycStatus.PENDING
    assert Membership.objects.get(org=globex).user.email == "owner@globex.latchkey.test"
    queued = list(kyc_queue())
    assert [application.org for application in queued] == [globex]
    assert queued[0].documents.count() == 1
    assert AuditEvent.objects.filter(org=globex, action="kyc.submitted").count() == 1
    staff = User.objects.get(email="staff@demo.latchkey.test")
    assert staff.platform_role == PlatformRole.PLATFORM_ADMIN
    assert "staff@demo.latchkey.test" in output


def test_a_decided_application_is_left_alone() -> None:
    """Staff may approve the demo application; the next start must not resubmit it."""
    from platform_admin.services import kyc_approve

    seed()
    staff = User.objects.get(email="staff@demo.latchkey.test")
    application = KycApplication.objects.get(org__slug="globex")
    kyc_approve(application=application, actor=Actor.for_user(staff))
    seed()
    assert KycApplication.objects.filter(org__slug="globex").count() == 1
    assert Organization.objects.get(slug="globex").kyc_status == KycStatus.APPROVED
