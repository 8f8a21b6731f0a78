"""Demo data for `make run`: idempotent, safe to run on every start.

What a first run creates, through the services (so the audit log tells it too):

- the demo org `demo` (KYC approved) and its owner, who signs in by magic link;
- a few API keys in it, one of them revoked, with a week of hourly usage so the usage
  charts, the keys list and the least-privilege view have something to show;
- a second org, `globex`, whose KYC application waits in the staff queue, and a platform
  admin to review it.

Running it again creates nothing that exists (matched by email, slug and key name) and
changes nothing already there; it only adds usage for hours of the last week that have
none yet, so the charts stay filled on later starts. No key secret is printed or kept.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from accounts.models import PlatformRole, User
from accounts.services import user_set_platform_role
from apikeys.models import ApiKey, Environment, KeyUsageHour
from apikeys.services import apikey_create, apikey_revoke
from orgs.actors import Actor
from orgs.models import KycStatus, Membership, Organization, Role
from orgs.plans import Plan
from orgs.services import org_create
from platform_admin.documents import one_page_pdf
from platform_admin.services import kyc_submit

DEMO_OWNER_EMAIL = "owner@demo.latchkey.test"
DEMO_ORG_SLUG = "demo"
DEMO_ORG_NAME = "Demo Inc."

DEMO_STAFF_EMAIL = "staff@demo.latchkey.test"
SECOND_OWNER_EMAIL = "owner@globex.latchkey.test"
SECOND_ORG_SLUG = "globex"
SECOND_ORG_NAME = "Globex Corporation"

USAGE_HOURS = 7 * 24
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class DemoKey:
    name: str
    environment: str
    scopes: list[str]
    # Requests in a busy weekday hour; quieter at night and at weekends.
    peak_per_hour: int = 0
    error_rate: float = 0.02
    ip: str = ""
    versions: tuple[str, ...] = ()
    # How the successful requests split over the scopes they needed.
    scope_mix: dict[str, float] = field(default_factory=dict)
    revoked: bool = False
    allowed_ips: tuple[str, ...] = ()
    allowed_ips_mode: str = "enforce"
    # Requests from outside a report-only allowlist, as a share of the requests.
    ip_reported_rate: float = 0.0


DEMO_KEYS = (
    DemoKey(
        name="Production backend",
        environment=Environment.LIVE,
        scopes=["organization:read", "members:write", "api_keys:read", "usage:read"],
        peak_per_hour=240,
        error_rate=0.015,
        ip="203.0.113.24",
        versions=("latchkey-node/3.2.0", "latchkey-node/3.3.0"),
        scope_mix={"members:read": 0.55, "members:write": 0.2, "organization:read": 0.25},
        allowed_ips=("203.0.113.0/24", "2001:db8:4a::/48"),
    ),
    DemoKey(
        name="Analytics export",
        environment=Environment.LIVE,
        scopes=["usage:read", "audit_log:read"],
        peak_per_hour=60,
        error_rate=0.01,
        ip="198.51.100.17",
        versions=("latchkey-python/1.8.1",),
        scope_mix={"usage:read": 0.8, "audit_log:read": 0.2},
        allowed_ips=("198.51.100.16/28",),
        allowed_ips_mode="report",
        ip_reported_rate=0.04,
    ),
    DemoKey(
        name="Staging",
        environment=Environment.TEST,
        scopes=["organization:write", "members:write", "api_keys:write", "kyc:read"],
        peak_per_hour=35,
        error_rate=0.08,
        ip="192.0.2.45",
        versions=("latchkey-node/3.3.0-beta.2",),
        scope_mix={"members:write": 0.4, "api_keys:write": 0.3, "organization:read": 0.3},
    ),
    DemoKey(
        name="Old billing sync",
        environment=Environment.TEST,
        scopes=["organization:read"],
        revoked=True,
    ),
)


def _now() -> datetime:
    return timezone.now()


def _user(email: str) -> User:
    user = User.objects.filter(email=email).first()
    return user if user is not None else User.objects.create_user(email)


def _hourly_requests(spec: DemoKey, hour: datetime) -> int:
    """A plausible, repeatable count: busy in European working hours, quiet at night
    and at weekends, with some noise."""
    rng = random.Random(f"{spec.name}:{hour:%Y-%m-%dT%H}")
    daytime = max(0.0, math.sin(math.pi * (hour.hour - 6) / 14)) if 6 <= hour.hour <= 20 else 0
    weekday = 0.45 if hour.weekday() >= 5 else 1.0
    level = (0.12 + 0.88 * daytime) * weekday * rng.uniform(0.8, 1.2)
    return max(0, round(spec.peak_per_hour * level))


def _usage_row(spec: DemoKey, key: ApiKey, hour: datetime, now: datetime) -> KeyUsageHour:
    rng = random.Random(f"{spec.name}:{hour:%Y-%m-%dT%H}:status")
    requests = _hourly_requests(spec, hour)
    if hour + HOUR > now:  # the hour under way: only its minutes so far
        requests = round(requests * (now - hour) / HOUR)
    count_5xx = round(requests * rng.uniform(0, 0.003))
    if spec.environment == Environment.LIVE and (now - hour) // HOUR == 60:
        count_5xx = round(requests * 0.06)  # one bad hour, two and a half days ago
    count_4xx = round(requests * spec.error_rate * rng.uniform(0.5, 1.5))
    count_2xx = max(0, requests - count_4xx - count_5xx)
    # The client's upgrade happened three days ago.
    version = spec.versions[-1] if (now - hour) < timedelta(days=3) else spec.versions[0]
    scopes = {
        scope: round((count_2xx + count_4xx) * share)
        for scope, share in spec.scope_mix.items()
        if round((count_2xx + count_4xx) * share)
    }
    last = hour + timedelta(minutes=rng.randrange(40, 60), seconds=rng.randrange(60))
    ip_reported = round((count_2xx + count_4xx) * spec.ip_reported_rate)
    return KeyUsageHour(
        ip_reported=ip_reported,
        api_key=key,
        org_id=key.org_id,
        hour=hour,
        count_2xx=count_2xx,
        count_4xx=count_4xx,
        count_5xx=count_5xx,
        client_versions=[version] if requests else [],
        scopes=scopes,
        last_used_at=min(last, now) if requests else None,
        last_used_ip=spec.ip if requests else None,
    )


class Command(BaseCommand):
    help = (
        "Create the demo organisations, owners, API keys with a week of usage, and a KYC "
        "application waiting for review (idempotent)."
    )

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        now = _now()
        owner = _user(DEMO_OWNER_EMAIL)
        org = self._demo_org(owner)
        for spec in DEMO_KEYS:
            key = self._demo_key(org, owner, spec, now)
            if not spec.revoked:
                self._usage(spec, key, now)
        self._second_org(now)
        staff = _user(DEMO_STAFF_EMAIL)
        if staff.platform_role == PlatformRole.NONE:
            user_set_platform_role(
                email=staff.email, role=PlatformRole.PLATFORM_ADMIN, actor=Actor.system()
            )
        self.stdout.write(
            f"Platform staff for the KYC queue: {staff.email} (sign in, then set up a second "
            "factor to open /platform/)."
        )

    def _demo_org(self, owner: User) -> Organization:
        org = Organization.objects.filter(slug=DEMO_ORG_SLUG).first()
        if org is None:
            org = org_create(
                name=DEMO_ORG_NAME,
                slug=DEMO_ORG_SLUG,
                owner=owner,
                kyc_status=KycStatus.APPROVED,
            )
            self.stdout.write(f"Created demo org '{org.slug}' owned by {owner.email}.")
            return org
        # Already there: make sure the demo owner still owns it, change nothing else.
        membership = Membership.objects.filter(org=org, user=owner).first()
        if membership is None:
            Membership.objects.create(org=org, user=owner, role=Role.OWNER)
        elif membership.role != Role.OWNER:
            membership.role = Role.OWNER
            membership.save(update_fields=["role"])
        self.stdout.write(f"Kept demo org '{org.slug}' owned by {owner.email}.")
        return org

    def _demo_key(self, org: Organization, owner: User, spec: DemoKey, now: datetime) -> ApiKey:
        """The demo key named `spec.name`, created (and revoked) the first time only. Its
        secret is dropped at once: a demo user who wants one rotates the key."""
        existing = ApiKey.objects.filter(org=org, name=spec.name).order_by("created_at").first()
        if existing is not None:
            return existing
        if spec.environment == Environment.LIVE and org.kyc_status != KycStatus.APPROVED:
            spec = replace(spec, environment=Environment.TEST)
        key, _secret = apikey_create(
            org=org,
            name=spec.name,
            environment=spec.environment,
            scopes=spec.scopes,
            allowed_ips=list(spec.allowed_ips),
            allowed_ips_mode=spec.allowed_ips_mode,
            actor=Actor.for_user(owner),
        )
        # Made "a week ago", so that its week of usage comes after its creation.
        created = now - timedelta(days=8)
        ApiKey.objects.filter(pk=key.pk).update(created_at=created)
        key.created_at = created
        if spec.revoked:
            key = apikey_revoke(key=key, actor=Actor.for_user(owner))
        self.stdout.write(f"Created demo key '{spec.name}' ({key.display}).")
        return key

    def _usage(self, spec: DemoKey, key: ApiKey, now: datetime) -> None:
        """Hourly usage for each hour of the last week that has none yet."""
        current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        since = max(current - (USAGE_HOURS - 1) * HOUR, key.created_at)
        hours = [current - i * HOUR for i in range(USAGE_HOURS) if current - i * HOUR >= since]
        have = set(
            KeyUsageHour.objects.filter(api_key=key, hour__gte=since).values_list("hour", flat=True)
        )
        rows = [_usage_row(spec, key, hour, now) for hour in sorted(hours) if hour not in have]
        if not rows:
            return
        KeyUsageHour.objects.bulk_create(rows, ignore_conflicts=True)
        last = max((row.last_used_at for row in rows if row.last_used_at), default=None)
        if last is not None and (key.last_used_at is None or key.last_used_at < last):
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=last, last_used_ip=spec.ip)
        self.stdout.write(f"Added {len(rows)} hours of usage to '{spec.name}'.")

    def _second_org(self, now: datetime) -> None:
        """A second org whose KYC application waits in the staff queue; left as it is once
        it exists (staff may have decided on it since)."""
        if Organization.objects.filter(slug=SECOND_ORG_SLUG).exists():
            self.stdout.write(f"Kept org '{SECOND_ORG_SLUG}'.")
            return
        owner = _user(SECOND_OWNER_EMAIL)
        org = org_create(name=SECOND_ORG_NAME, slug=SECOND_ORG_SLUG, owner=owner, plan=Plan.GROWTH)
        document = SimpleUploadedFile(
            "certificate-of-incorporation.pdf",
            one_page_pdf("Globex Corporation Ltd - Certificate of incorporation"),
            content_type="application/pdf",
        )
        kyc_submit(
            org=org,
            legal_name="Globex Corporation Ltd",
            registration_number="GB-08412377",
            country="GB",
            address="42 Cypress Creek Road\nLondon EC2A 4NE",
            director_name="Hank Scorpio",
            documents=[document],
            actor=Actor.for_user(owner),
        )
        self.stdout.write(
            f"Created org '{org.slug}' owned by {owner.email}, its KYC application waiting "
            "for review."
        )
