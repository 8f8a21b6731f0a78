"""`manage.py bench_setup`: the benchmark's org and key (used by `make bench`).

Creates (once) the org `bench` with unlimited custom limits (0 per minute, burst and
month), revokes the keys earlier runs left, issues a fresh test key that may read
nothing but `GET me`, and prints its secret alone on the last line.
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
OWNER = "bench-owner@bench.latchkey.test"


class Command(BaseCommand):
    help = "Create the benchmark org (unlimited limits) and print a fresh API key."

    def handle(self, *args: Any, **options: Any) -> None:
        org = Organization.objects.filter(slug=SLUG).first()
        if org is None:
            owner = User.objects.filter(email=OWNER).first() or User.objects.create_user(OWNER)
            org = org_create(name="Benchmark", slug=SLUG, owner=owner)
        org_set_limits(org=org, per_minute=0, burst=0, monthly=0, as_system=True)
        for key in ApiKey.objects.filter(org=org, revoked_at__isnull=True):
            apikey_revoke(key=key)
        _, secret = apikey_create(org=org, name="bench", environment="test", scopes=[])
        self.stdout.write("Benchmark org `bench` has unlimited limits; its key:")
        self.stdout.write(secret)
