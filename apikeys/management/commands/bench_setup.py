"""`manage.py bench_setup`: the benchmark's org and key (used by `make bench`).

Creates (once) the org `bench` with custom limits no benchmark reaches (10^9 per minute,
burst and month: every window is checked and counted as for any limited org; 0 would mean
"unlimited", which the limiter neither checks nor counts), revokes the keys earlier runs
left, issues a fresh test key that may read nothing but `GET me`, and prints its secret
alone on the last line.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from accounts.models import User
from apikeys.models import ApiKey
from apikeys.services import apikey_create, apikey_revoke
from orgs.models import Organization
from orgs.services import org_create
from platform_admin.services import org_set_limits

SLUG = "bench"
# High enough never to refuse a benchmark request, and not 0 ("unlimited", not counted).
LIMIT = 10**9
OWNER = "bench-owner@bench.latchkey.test"


class Command(BaseCommand):
    help = "Create the benchmark org (limits of 10^9, counted) and print a fresh API key."

    def handle(self, *args: Any, **options: Any) -> None:
        org = Organization.objects.filter(slug=SLUG).first()
        if org is None:
            owner = User.objects.filter(email=OWNER).first() or User.objects.create_user(OWNER)
            org = org_create(name="Benchmark", slug=SLUG, owner=owner)
        org_set_limits(org=org, per_minute=LIMIT, burst=LIMIT, monthly=LIMIT, as_system=True)
        for key in ApiKey.objects.filter(org=org, revoked_at__isnull=True):
            apikey_revoke(key=key)
        _, secret = apikey_create(org=org, name="bench", environment="test", scopes=["usage:read"])
        self.stdout.write("Benchmark org `bench` has limits of 10^9 (counted); its key:")
        self.stdout.write(secret)
