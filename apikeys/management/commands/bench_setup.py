"""`manage.py bench_setup`: the benchmark's org and key (used by `make bench`).

Creates (once) the org `bench` with custom limits no benchmark reaches (10^9 per minute,
burst and month: every window is checked and counted as for any limited org; 0 would mean
"unlimited", which the limiter neither checks nor counts), revokes the keys earlier runs
left, issues a fresh test key that may read nothing but `GET me`, and prints its secret
alone on the last line.

With `--tenants N` it also makes the many-tenant shape: N/2 orgs `bench-t-000…` on the
Growth plan with their plan's limits (per key 600 a minute, burst 50; 2,000,000 a month
per org) and two fresh keys each, whose secrets it writes to `--keys-file`, one a line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand

from accounts.models import User
from apikeys.cache import invalidate_org
from apikeys.models import ApiKey
from apikeys.services import apikey_create, apikey_revoke
from orgs.actors import Actor
from orgs.models import Organization
from orgs.plans import Plan
from orgs.services import org_create
from platform_admin.services import org_set_limits

SLUG = "bench"
# High enough never to refuse a benchmark request, and not 0 ("unlimited", not counted).
LIMIT = 10**9
OWNER = "bench-owner@bench.latchkey.test"


class Command(BaseCommand):
    help = "Create the benchmark org (limits of 10^9, counted) and print a fresh API key."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--tenants", type=int, default=0, help="keys of Growth orgs")
        parser.add_argument("--keys-file", default="", help="where their secrets go")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["tenants"]:
            self._tenants(options["tenants"], options["keys_file"])
        org = Organization.objects.filter(slug=SLUG).first()
        if org is None:
            owner = User.objects.filter(email=OWNER).first() or User.objects.create_user(OWNER)
            org = org_create(name="Benchmark", slug=SLUG, owner=owner)
        system = Actor.system()
        org_set_limits(org=org, per_minute=LIMIT, burst=LIMIT, monthly=LIMIT, actor=system)
        for key in ApiKey.objects.filter(org=org, revoked_at__isnull=True):
            apikey_revoke(key=key, actor=system)
        _, secret = apikey_create(
            org=org, name="bench", environment="test", scopes=["usage:read"], actor=system
        )
        self.stdout.write("Benchmark org `bench` has limits of 10^9 (counted); its key:")
        self.stdout.write(secret)

    def _tenants(self, keys: int, path: str) -> None:
        secrets = []
        for index in range(max(1, keys // 2)):
            slug = f"bench-t-{index:03d}"
            org = Organization.objects.filter(slug=slug).first()
            if org is None:
                owner = User.objects.filter(email=OWNER).first() or User.objects.create_user(OWNER)
                org = org_create(name=f"Tenant {index}", slug=slug, owner=owner)
            # The plan's own limits: the benchmark tool sets the plan directly.
            Organization.objects.filter(pk=org.pk).update(
                plan=Plan.GROWTH, custom_per_minute=None, custom_burst=None, custom_monthly=None
            )
            invalidate_org(org.pk)
            for key in ApiKey.objects.filter(org=org, revoked_at__isnull=True):
                apikey_revoke(key=key, actor=Actor.system())
            for n in range(2):
                _, secret = apikey_create(
                    org=org,
                    name=f"tenant key {n}",
                    environment="test",
                    scopes=["usage:read"],
                    actor=Actor.system(),
                )
                secrets.append(secret)
        Path(path).write_text("\n".join(secrets[:keys]) + "\n")
        Path(path).chmod(0o600)
        self.stdout.write(f"{len(secrets[:keys])} keys of {keys // 2} Growth orgs in {path}")
